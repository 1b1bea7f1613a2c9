"""Jobs and runs for people: rich tables fitted to a width, and the plain lines of ``status``. Prints nothing.

Every table is built from the dicts of ``crawlsched.render`` (``job_dict``,
``run_dict``, ``status_dict``), never from the objects, so a person sees what a
script reads. rich is imported only by the functions that build tables.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping

from crawlsched import timing
from crawlsched.model import JobStatus, RunStatus

if TYPE_CHECKING:
    from rich.table import Table


STATUS_STYLE = {  # a job's status (JobStatus) or a run's (RunStatus) -> its rich style
    JobStatus.ACTIVE: "blue",
    JobStatus.SUCCESS: "green",
    JobStatus.FAILED: "red",
    JobStatus.RETRYING: "yellow",
    JobStatus.RUNNING: "cyan",
    JobStatus.PAUSED: "dim",
    JobStatus.FINISHED: "dim",
    RunStatus.INTERRUPTED: "red",
    RunStatus.SKIPPED: "dim",
    RunStatus.MISSED: "magenta",
}


# --- tables for people ---------------------------------------------------------------
#
# Every table is laid out for the width it is printed at (crawlsched.layout): the
# columns a person needs (a job's name, its status, when it fires next and last ran)
# never go; the others shrink or go in the order of each table's STEPS (README,
# "Tables for people"). Times are relative to ``now`` (passed in, never read here),
# with the absolute time beside them where there is room.


def _zone_note(tz: str, machine_tz: str) -> str:
    return "" if tz == machine_tz else f" {tz}"


def _absolute(iso: str | None, tz: str, machine_tz: str) -> str:
    """``2026-12-01 09:05:00``, plus the zone's abbreviation (``WIB``) when it is not the machine's."""
    from crawlsched import layout
    from crawlsched.model import zone

    instant = layout.parse_iso(iso)
    if instant is None:
        return "-"
    local = instant.astimezone(zone(tz))
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    return text if tz == machine_tz else f"{text} {local.strftime('%Z')}"


def _relative(iso: str | None, now: datetime) -> str:
    from crawlsched import layout

    return layout.relative(layout.parse_iso(iso), now)


def _took(run: Mapping[str, Any]) -> str:
    from crawlsched import layout

    start, end = layout.parse_iso(run.get("started_at_iso")), layout.parse_iso(run.get("finished_at_iso"))
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds:.1f}s" if seconds < 60 else layout.relative(end, start).removeprefix("in ")


def status_text(job: Mapping[str, Any], now: datetime) -> str:
    """``failed``, or for a job waiting for its retry ``retrying 2/4 in 4m`` (SPEC §5);
    a retry past its time reads ``due now`` (under a minute late) or ``due 5m ago``."""
    if job["status"] == JobStatus.RETRYING and job.get("next_retry_iso"):
        when = _relative(job["next_retry_iso"], now)
        if not when.startswith("in "):  # due: the daemon is starting it, or is not running
            when = "due now" if when == "now" or when.endswith("s ago") else f"due {when}"
        return f"retrying {job['attempt']}/{job['max_retries'] + 1} {when}"
    return job["status"]


def _gap(plain: bool) -> int:
    from crawlsched import layout

    return 2 if plain else layout.GAP


def _status_column(key: str, header: str, **kw: Any) -> Any:
    from crawlsched.layout import Column

    return Column(key, header, style=STATUS_STYLE, **kw)


def jobs_table(jobs: list[Mapping[str, Any]], *, now: datetime, width: int = 200, plain: bool = False,
               machine_tz: str | None = None) -> Table:
    """The seed's job card as columns, one row per job dict, fitted to ``width``.

    Kept at any width: the name (or the id, when the name is the id), the status, and
    next and last run as relative times. Given up first, in this order: the message
    cut to 48, period, retries, the message cut to 32, last run's absolute time, the id beside the
    name, the message (cut to 16, then gone), next run's absolute time, schedule; then
    a name longer than its id gives way to the id, and a retrying status to the word
    `retrying`. Still too wide (a very long id): the status and times are cut, the name last.
    """
    from crawlsched import layout
    from crawlsched.layout import Column, Step

    local = machine_tz or timing.machine_timezone()
    columns = [
        Column("name", "name", required=True, short=("name_only", "name_or_id")),
        _status_column("status", "status", required=True, short=("status_word",)),
        Column("next", "next", required=True),
        Column("next_at", "next run"),
        Column("last", "last", required=True),
        Column("last_at", "last run"),
        Column("schedule", "schedule"),
        Column("period", "period"),
        Column("retries", "retries"),
        Column("message", "last message"),
    ]
    rows = []
    for job in jobs:
        tz = job["timezone"]
        rows.append({
            "name": job["name"] if job["id"] == job["name"] else f"{job['name']} ({job['id']})",
            "name_only": job["name"],
            "name_or_id": job["id"] if len(job["id"]) < len(job["name"]) else job["name"],
            "status": status_text(job, now),
            "status:style": job["status"],
            "status_word": job["status"],  # `retrying` without its attempt and time
            "next": _relative(job["next_run_iso"], now),
            "next_at": _absolute(job["next_run_iso"], tz, local),
            "last": _relative(job["last_run_iso"], now),
            "last_at": _absolute(job["last_run_iso"], tz, local),
            "schedule": job["schedule"] + _zone_note(tz, local),
            "period": period(job),
            "retries": retries(job),
            "message": " ".join((job["last_message"] or "").split()),
        })
    steps = [Step("shrink", "message", 48), Step("drop", "period"), Step("drop", "retries"), Step("shrink", "message", 32),
             Step("drop", "last_at"),
             Step("short", "name"), Step("shrink", "message", 16), Step("drop", "message"), Step("drop", "next_at"),
             Step("drop", "schedule"), Step("short", "name"), Step("short", "status")]
    fitted = layout.fit(columns, rows, width, steps, gap=_gap(plain))
    caption = None if jobs else "no jobs yet: add one with `crawlsched add NAME --at HH:MM --url URL`"
    return layout.build(fitted, rows, plain=plain, caption=caption)


def runs_table(runs: list[Mapping[str, Any]], *, now: datetime, width: int = 200, plain: bool = False,
               show_job: bool = True, zones: Mapping[str, str] | None = None, machine_tz: str | None = None) -> Table:
    """History rows, newest first, fitted to ``width``.

    Kept: the job (in a table of several jobs), when (relative), attempt, status.
    Given up first: scheduled for, the message (cut to 40), took, started (absolute),
    the message (cut to 20, then gone), trigger. ``zones`` maps job ids to their zone
    (times of a removed job are UTC).
    """
    from crawlsched import layout
    from crawlsched.layout import Column, Step

    local = machine_tz or timing.machine_timezone()
    columns = ([Column("job", "job", required=True)] if show_job else []) + [
        Column("when", "when", required=True),
        Column("started", "started"),
        Column("attempt", "attempt", required=True),
        Column("trigger", "trigger"),
        _status_column("status", "status", required=True),
        Column("took", "took", justify="right"),
        Column("scheduled", "scheduled for"),
        Column("message", "message"),
    ]
    rows = []
    for run in runs:
        tz = (zones or {}).get(run["job_id"], "UTC")
        began = run["started_at_iso"] or run["scheduled_for_iso"]
        rows.append({
            "job": run["job_id"],
            "when": _relative(began, now),
            "started": _absolute(run["started_at_iso"], tz, local),
            "attempt": f"{run['attempt']}/{run['max_attempts']}" if run["attempt"] else "-",
            "trigger": run.get("trigger") or "",
            "status": run["status"],
            "status:style": run["status"],
            "took": _took(run),
            "scheduled": _absolute(run["scheduled_for_iso"], tz, local),
            "message": " ".join((run["message"] or "").split()),
        })
    steps = [Step("drop", "scheduled"), Step("shrink", "message", 40), Step("drop", "took"), Step("drop", "started"),
             Step("shrink", "message", 20), Step("drop", "message"), Step("drop", "trigger")]
    fitted = layout.fit(columns, rows, width, steps, gap=_gap(plain))
    return layout.build(fitted, rows, plain=plain)


def job_details(job: Mapping[str, Any], *, now: datetime, width: int = 200, plain: bool = False,
                machine_tz: str | None = None) -> Table:
    """``show``: one job's fields as a two-column grid; every value on one line, cut to ``width``."""
    from rich.table import Table

    from crawlsched import layout

    local = machine_tz or timing.machine_timezone()
    tz = job["timezone"]

    def when(key: str) -> str:
        iso = job.get(key + "_iso")
        return "-" if not iso else f"{_relative(iso, now)} · {_absolute(iso, tz, local)}"

    rows: list[tuple[str, str]] = [
        ("name", job["name"]),
        ("id", job["id"]),
        ("status", job["status"]),
    ]
    if job["status"] == "retrying" and job.get("next_retry_iso"):
        rows.append(("next retry", f"attempt {job['attempt']} of {job['max_retries'] + 1}, {when('next_retry')}"))
    rows += [
        ("schedule", f"{job['schedule']} ({tz}{'' if tz != local else ', this machine'})"),
        ("period", period(job)),
        ("next run", when("next_run")),
        ("last run", when("last_run")),
        ("last message", job["last_message"] or "-"),
        ("retries", retries(job) + (f", at most {job['retry_max_delay']}s apart" if job["retry_max_delay"] else "")),
        ("timeout", f"{job['timeout']}s"),
        ("catch up", job["catch_up"]),
    ]
    rows += [("url", u) for u in job["url"]]
    if job["command"]:
        rows.append(("command", job["command"]))
    if job["headers"]:
        rows.append(("headers", ", ".join(job["headers"]) + " (values hidden)"))
    if job["verify"] is not True:
        rows.append(("verify", str(job["verify"]).lower()))
    if job["on_failure"]:
        rows.append(("on failure", job["on_failure"]))
    rows.append(("created", job["created_at"] or "-"))

    key_width = max(layout.cell_width(k) for k, _ in rows)
    room = max(width - key_width - 2, 10)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="" if plain else "bold", no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=room)
    for key, value in rows:
        text = layout.cut(value, room)
        grid.add_row(key, _styled(text, plain, job["status"]) if key == "status" else text)
    return grid


def cut_line(text: str, width: int) -> str:
    """One line of at most ``width`` cells, ending in ``…`` when cut (titles, banners)."""
    from crawlsched import layout

    return layout.cut(text, width)


def _styled(text: str, plain: bool, status: str) -> Any:
    from rich.text import Text

    return Text(text) if plain else Text(text, style=STATUS_STYLE.get(status, ""))


def period(job: Mapping[str, Any]) -> str:
    """``2025-11-08 → 2025-12-31``, or ``… → no end``."""
    return f"{job['start_date'] or '…'} → {job['end_date'] or 'no end'}"


def retries(job: Mapping[str, Any]) -> str:
    """``3 × 300s`` (with the backoff when there is one)."""
    text = f"{job['max_retries']} × {job['retry_delay']}s"
    if job["retry_backoff"] not in (1, None):
        text += f" ×{job['retry_backoff']}"
    return text


def _offset_note(iso: str | None) -> str:
    """`` UTC+07:00`` when a time written in its job's zone is not at the machine's offset, else ``""``.

    ``next_run`` is in the job's zone (as every job time is): without this, 09:05 in
    Jakarta would read as 09:05 here.
    """
    from crawlsched import layout
    from crawlsched.model import zone

    instant = layout.parse_iso(iso)
    if instant is None:
        return ""
    here = instant.astimezone(zone(timing.machine_timezone()))
    return "" if here.utcoffset() == instant.utcoffset() else f" {instant.strftime('%Z')}"


def status_lines(status: Mapping[str, Any], now: float | None = None) -> list[str]:
    """``status`` for people: a few plain lines."""
    if status["running"]:
        lines = [f"daemon: running (pid {status['pid']}, since {status['started_at']}, heartbeat {status['heartbeat']})"]
    else:
        lines = ["daemon: not running"]
    if status.get("scheduler_paused"):
        lines.append("scheduler: stopped ([defaults] paused = true): no job fires until `POST /api/scheduler/start`"
                     " or the key is removed (`crawlsched defaults --unset paused`)")
    if status["next_job"]:
        lines.append(f"next: {status['next_job']} at {status['next_run']}{_offset_note(status.get('next_run_iso'))}")
    else:
        lines.append("next: nothing scheduled")
    lines.append("config: ok" if status["config_ok"] else f"config: ERROR {status['config_error']}")
    missing = " (missing: no jobs until it is created)" if status.get("jobs_file_missing") else ""
    lines.append(f"jobs file: {status['jobs_file']}{missing}")
    if status.get("state"):
        lines.append(f"state: {status['state']}")
    if status.get("state_error"):
        lines.append(f"state: ERROR {status['state_error']}")
    from crawlsched.roster import roster_lines

    lines += roster_lines(status, time.time() if now is None else now)
    return lines
