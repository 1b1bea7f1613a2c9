"""Jobs and runs as JSON dicts (scripts, the web API) and rich tables (people). Prints nothing.

One serializer: ``job_dict`` and ``run_dict`` give the shapes of SPEC §5, and
the tables are built from those dicts, so what a person sees and what a script
reads cannot drift apart. Secrets never get here in the clear: passwords in
URLs are masked, header values are left out, ``${VAR}`` templates are shown as
written (they are only expanded at run time).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from crawlsched import timing
from crawlsched.model import Defaults, Job, JobStatus, RunStatus, ScheduleKind
from crawlsched.validate import redact_url
from crawlsched.state import JobState, Run

if TYPE_CHECKING:  # rich is imported only by the functions that build tables
    from crawlsched.jobfile import JobFile
    from rich.table import Table

_TINY = timedelta(microseconds=1)
ATTEMPT_OUTCOMES = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.INTERRUPTED)  # what success_rate counts

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


# --- derived facts -------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """What the history and the clock say of one job right now."""

    status: JobStatus
    next_run: datetime | None
    last_attempt: Run | None


def anchor_of(job: Job, state: JobState | None, now: datetime) -> datetime | None:
    """An ``every`` job's anchor: the stored one, else where the daemon would put it on sight."""
    if job.kind is not ScheduleKind.EVERY:
        return None
    if state is not None and state.anchor is not None:
        return timing.from_epoch(state.anchor)
    return timing.first_fire_on_sight(job, now)


def view(job: Job, state: JobState | None, now: datetime) -> JobView:
    """Next run and status (SPEC §5: the first that applies wins)."""
    anchor = anchor_of(job, state, now)
    seen = state is not None and state.anchor is not None
    # A job the daemon has not seen yet fires as soon as it is seen: show it
    # due now, not one interval later (next_fire is strictly after its input).
    after = now if seen or job.kind is not ScheduleKind.EVERY else now - _TINY
    next_run = timing.next_fire(job, after, anchor)
    last = state.last_attempt if state is not None else None
    if job.paused:
        status = JobStatus.PAUSED
    elif job.end_date is not None and next_run is None:
        status = JobStatus.FINISHED
    elif state is not None and state.running:
        status = JobStatus.RUNNING
    elif state is not None and state.retry is not None:
        status = JobStatus.RETRYING
    elif last is not None and last.status == RunStatus.SUCCESS:
        status = JobStatus.SUCCESS
    elif last is not None:
        # failed, interrupted, or "running" with its process gone: none of them succeeded.
        status = JobStatus.FAILED
    else:
        status = JobStatus.ACTIVE
    return JobView(status, next_run, last)


def status_dict(row: Mapping[str, Any] | None, jobfile: JobFile | None, now: datetime, *,
                states: Mapping[str, JobState], running: bool, pid: int | None, http: str | None,
                config_ok: bool, config_error: str | None, jobs_file: str, home: str,
                job_count: int | None = None, state_error: str | None = None,
                jobs_file_missing: bool = False, scheduler_paused: bool | None = None) -> dict[str, Any]:
    """``crawlsched status --json`` and ``GET /api/scheduler/status``: one shape, built here for both.

    ``row`` is the daemon's row (None when it is not known to be up). What is next is worked
    out as of ``now`` (SPEC §6), not taken from the daemon's last heartbeat: the earliest of
    the unpaused jobs' next runs and pending retries (ties: the first in the file). Only
    without a job file does the daemon's row say, and only a time not yet past.
    ``job_count`` (the API's), ``state_error`` (the database could not be read) and
    ``jobs_file_missing`` (no job file: no jobs, not an error) appear only when given.
    ``scheduler_paused`` (``[defaults] paused``, the legacy stop) is read from ``jobfile`` unless given;
    while it is on, nothing is next.
    """
    local = timing.machine_timezone()
    if scheduler_paused is None:
        scheduler_paused = bool(jobfile is not None and jobfile.defaults.paused)
    next_job, next_at = None, None
    if jobfile is not None and not scheduler_paused:
        upcoming = []
        for j in jobfile.jobs:
            if j.paused:
                continue
            st = states.get(j.id)
            if (v := view(j, st, now)).next_run is not None:
                upcoming.append((v.next_run, j.id))
            if st is not None and st.retry is not None:
                upcoming.append((timing.from_epoch(st.retry.due_at), j.id))
        if upcoming:
            next_at, next_job = min(upcoming, key=lambda item: item[0])
    elif jobfile is None and row is not None and row.get("next_job") and (row.get("next_due") or 0) >= now.timestamp():
        next_job, next_at = row["next_job"], timing.from_epoch(row.get("next_due"))
    known = jobfile.find(next_job) if jobfile is not None and next_job is not None else None
    next_tz = known.timezone if known is not None else local
    started = timing.from_epoch(row.get("started_at")) if row else None
    beat = timing.from_epoch(row.get("heartbeat")) if row else None
    out: dict[str, Any] = {
        "success": True,
        "running": running,
        "pid": pid,
        "host": row.get("host") if row else None,
        "version": row.get("version") if row else None,
        "started_at": timing.format_local(started, local),
        "started_at_iso": timing.iso_local(started, local),
        "heartbeat": timing.format_local(beat, local),
        "heartbeat_iso": timing.iso_local(beat, local),
        "http": http,
        "config_ok": config_ok,
        "config_error": config_error,
        "scheduler_paused": scheduler_paused,
    }
    if job_count is not None:
        out["job_count"] = job_count
    out.update({
        "next_job": next_job,
        "next_run": timing.format_local(next_at, next_tz),
        "next_run_iso": timing.iso_local(next_at, next_tz),
        "jobs_file": jobs_file,
        "home": home,
    })
    if jobs_file_missing:
        out["jobs_file_missing"] = True
    if state_error is not None:
        out["state_error"] = state_error
    return out


def success_rate(runs: Iterable[Run]) -> float | None:
    """Successful attempts over finished attempts; skipped and missed fires (attempt 0) do not count."""
    outcomes = [r.status for r in runs if r.attempt > 0 and r.status in ATTEMPT_OUTCOMES]
    if not outcomes:
        return None
    return outcomes.count(RunStatus.SUCCESS) / len(outcomes)


# --- JSON ----------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def mask_url(url: str) -> str:
    """``https://user:secret@host`` → ``https://user:***@host``."""
    return redact_url(url)


ADDED = "✅ Job '{name}' berhasil ditambahkan"  # the seed's message, word for word (CLI `add --json` and the API)


def _num(value: float | int | None) -> float | int | None:
    """300.0 → 300: whole seconds read as the seed wrote them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _times(name: str, instant: datetime | None, tz: str) -> dict[str, str | None]:
    plain, iso = timing.local_pair(instant, tz)
    return {name: plain, name + "_iso": iso}


def _created(job: Job) -> dict[str, str | None]:
    created = job.created_at
    if created is None:
        return {"created_at": None, "created_at_iso": None}
    if created.tzinfo is None:  # a hand-written local date-time: shown as written
        return {"created_at": created.strftime("%Y-%m-%d %H:%M:%S"), "created_at_iso": created.isoformat(timespec="seconds")}
    return _times("created_at", created, job.timezone)


def job_dict(job: Job, state: JobState | None, now: datetime) -> dict[str, Any]:
    """A job as the CLI's ``--json`` and the web API show it (SPEC §5)."""
    v = view(job, state, now)
    last = v.last_attempt
    retry = state.retry if state is not None and v.status is JobStatus.RETRYING else None
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "schedule": job.schedule_text,
        "kind": job.kind.value,
        "start_date": job.start_date.isoformat() if job.start_date else None,
        "end_date": job.end_date.isoformat() if job.end_date else None,
        "timezone": job.timezone,
        **_times("next_run", v.next_run, job.timezone),
        **_times("last_run", timing.from_epoch(last.started_at) if last else None, job.timezone),
        "status": v.status.value,
        # The pending retry of a retrying job (SPEC §5): when, and the number that attempt will be.
        **_times("next_retry", timing.from_epoch(retry.due_at) if retry else None, job.timezone),
        "attempt": retry.next_attempt if retry else None,
        "max_retries": job.max_retries,
        "retry_delay": _num(job.retry_delay),
        "retry_backoff": _num(job.retry_backoff),
        "retry_max_delay": _num(job.retry_max_delay),
        "last_message": last.message if last else None,
        "paused": job.paused,
        "url": [mask_url(u) for u in job.urls],
        "command": job.command,
        "timeout": _num(job.timeout),
        "catch_up": job.catch_up.value,
        **_created(job),
        "headers": sorted(job.headers),  # names only: values are often secrets
        "on_failure": job.on_failure,
        "max_bytes": job.max_bytes,
        "verify": job.verify,
        "user_agent": job.user_agent,
        "keep_runs": job.keep_runs,
    }
    return out


def run_dict(run: Run, job: Job | None = None) -> dict[str, Any]:
    """One history row; times in the job's zone when the job is known, else UTC."""
    tz = job.timezone if job is not None else "UTC"
    out: dict[str, Any] = {
        "id": run.id,
        "job_id": run.job_id,
        **_times("scheduled_for", timing.from_epoch(run.scheduled_for), tz),
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        **_times("started_at", timing.from_epoch(run.started_at), tz),
        **_times("finished_at", timing.from_epoch(run.finished_at), tz),
        "status": run.status,
        "message": run.message,
        "trigger": run.trigger,
        "http_status": run.http_status,
        "exit_code": run.exit_code,
        "bytes": run.bytes,
        "output": run.output,
    }
    if run.missed_count is not None:
        out["missed_count"] = run.missed_count
        out.update(_times("first_missed", timing.from_epoch(run.first_missed), tz))
        out.update(_times("last_missed", timing.from_epoch(run.last_missed), tz))
    return out


def defaults_dict(defaults: Defaults) -> dict[str, Any]:
    """``[defaults]`` as ``retry-config`` shows it (header values and URL passwords hidden)."""
    return {
        "max_retries": defaults.max_retries,
        "retry_delay": _num(defaults.retry_delay),
        "retry_backoff": _num(defaults.retry_backoff),
        "retry_max_delay": _num(defaults.retry_max_delay),
        "timezone": defaults.timezone,
        "max_concurrent": defaults.max_concurrent,
        "catch_up": defaults.catch_up.value,
        "timeout": _num(defaults.timeout),
        "url": [mask_url(u) for u in defaults.url],
        "command": defaults.command,
        "headers": sorted(defaults.headers),
    }


# --- tables for people ---------------------------------------------------------------
#
# Every table is laid out for the width it is printed at (crawlsched.layout): the
# columns a person needs (a job's name, its status, when it fires next and last ran)
# never go; the others shrink or go in the order of each table's STEPS (README,
# "Tables for people"). Times are relative to ``now`` (passed in, never read here),
# with the absolute time beside them where there is room.

SORT_KEYS = ("file", "next", "name", "status", "last")
STATUS_ORDER = (JobStatus.FAILED, JobStatus.RETRYING, JobStatus.RUNNING, JobStatus.ACTIVE, JobStatus.SUCCESS,
                JobStatus.PAUSED, JobStatus.FINISHED)


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


def sort_jobs(jobs: list[Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    """``file`` (as written), ``next`` (soonest first: a pending retry counts; nothing next goes last),
    ``name``, ``status`` (failed first, then retrying, running, active, success, paused, finished),
    ``last`` (most recently run first; never run goes last)."""
    from crawlsched import layout

    far = datetime.max.replace(tzinfo=timezone.utc)
    if key == "file":
        return list(jobs)
    if key == "name":
        return sorted(jobs, key=lambda j: (j["name"].casefold(), j["id"]))
    if key == "status":
        rank = {s: i for i, s in enumerate(STATUS_ORDER)}
        return sorted(jobs, key=lambda j: rank.get(j["status"], len(rank)))
    if key == "last":
        def last(j: Mapping[str, Any]) -> float:
            at = layout.parse_iso(j.get("last_run_iso"))
            return -at.timestamp() if at is not None else float("inf")

        return sorted(jobs, key=last)
    if key == "next":
        def soonest(j: Mapping[str, Any]) -> datetime:
            times = [layout.parse_iso(j.get(k)) for k in ("next_run_iso", "next_retry_iso")]
            return min((t for t in times if t is not None), default=far)

        return sorted(jobs, key=soonest)
    raise ValueError(f"sort: {key!r} is not one of {', '.join(SORT_KEYS)}")


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


def status_lines(status: Mapping[str, Any]) -> list[str]:
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
    return lines
