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
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from crawlsched import timing
from crawlsched.model import Defaults, Job, JobStatus, ScheduleKind, redact_url
from crawlsched.state import JobState, Run

if TYPE_CHECKING:  # rich is imported only by the functions that build tables
    from crawlsched.jobfile import JobFile
    from rich.table import Table

_TINY = timedelta(microseconds=1)
ATTEMPT_OUTCOMES = ("success", "failed", "interrupted")  # what success_rate counts

STATUS_STYLE = {
    "active": "blue",
    "success": "green",
    "failed": "red",
    "retrying": "yellow",
    "running": "cyan",
    "paused": "dim",
    "finished": "dim",
    "interrupted": "red",
    "skipped": "dim",
    "missed": "magenta",
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
    elif last is not None and last.status == "success":
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
    return outcomes.count("success") / len(outcomes)


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


def _box(plain: bool) -> Any:
    from rich import box

    return None if plain else box.SIMPLE_HEAD


def _styled(status: str, plain: bool) -> Any:
    from rich.text import Text

    return Text(status) if plain else Text(status, style=STATUS_STYLE.get(status, ""))


def _short(text: str | None, width: int = 48) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def period(job: Mapping[str, Any]) -> str:
    """``2025-11-08 → 2025-12-31``, or ``… → no end``."""
    return f"{job['start_date'] or '…'} → {job['end_date'] or 'no end'}"


def retries(job: Mapping[str, Any]) -> str:
    """``3 × 300s`` (with the backoff when there is one)."""
    text = f"{job['max_retries']} × {job['retry_delay']}s"
    if job["retry_backoff"] not in (1, None):
        text += f" ×{job['retry_backoff']}"
    return text


def jobs_table(jobs: list[Mapping[str, Any]], *, plain: bool = False) -> Table:
    """The seed's job card as columns, one row per job dict."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=_box(plain), show_edge=not plain, pad_edge=not plain)
    for header in ("name", "status", "schedule", "period", "next run", "last run", "retries", "last message"):
        table.add_column(header, no_wrap=header not in ("name", "last message"), min_width=12 if header == "name" else None)
    for job in jobs:
        name = Text(job["name"])
        if job["id"] != job["name"]:
            name.append(f" ({job['id']})", style="" if plain else "dim")
        table.add_row(
            name,
            _styled(job["status"], plain),
            job["schedule"],
            period(job),
            job["next_run"] or "-",
            job["last_run"] or "-",
            retries(job),
            _short(job["last_message"]),
        )
    if not jobs:
        table.caption = "no jobs yet: add one with `crawlsched add NAME --at HH:MM --url URL`"
    return table


def runs_table(runs: list[Mapping[str, Any]], *, plain: bool = False, show_job: bool = True) -> Table:
    """History rows, newest first."""
    from rich.table import Table

    table = Table(box=_box(plain), show_edge=not plain, pad_edge=not plain)
    columns = (["job"] if show_job else []) + ["scheduled for", "attempt", "started", "finished", "status", "message"]
    for header in columns:
        table.add_column(header, no_wrap=header != "message")
    for run in runs:
        attempt = f"{run['attempt']}/{run['max_attempts']}" if run["attempt"] else "-"
        row = [run["job_id"]] if show_job else []
        row += [
            run["scheduled_for"] or "-",
            attempt,
            run["started_at"] or "-",
            run["finished_at"] or "-",
            _styled(run["status"], plain),
            _short(run["message"], 60),
        ]
        table.add_row(*row)
    return table


def job_details(job: Mapping[str, Any], *, plain: bool = False) -> Table:
    """``show``: one job's fields as a two-column grid."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="" if plain else "bold")
    grid.add_column()
    rows: list[tuple[str, Any]] = [
        ("name", job["name"]),
        ("id", job["id"]),
        ("status", _styled(job["status"], plain)),
        ("schedule", f"{job['schedule']} ({job['timezone']})"),
        ("period", period(job)),
        ("next run", job["next_run"] or "-"),
        ("last run", job["last_run"] or "-"),
        ("last message", job["last_message"] or "-"),
        ("retries", retries(job) + (f", at most {job['retry_max_delay']}s apart" if job["retry_max_delay"] else "")),
        ("timeout", f"{job['timeout']}s"),
        ("catch up", job["catch_up"]),
    ]
    if job["url"]:
        rows.append(("url", "\n".join(job["url"])))
    if job["command"]:
        rows.append(("command", job["command"]))
    if job["headers"]:
        rows.append(("headers", ", ".join(job["headers"]) + " (values hidden)"))
    if job["verify"] is not True:
        rows.append(("verify", str(job["verify"]).lower()))
    if job["on_failure"]:
        rows.append(("on failure", job["on_failure"]))
    rows.append(("created", job["created_at"] or "-"))
    for key, value in rows:
        grid.add_row(key, value)
    return grid


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
        lines.append(f"next: {status['next_job']} at {status['next_run']}")
    else:
        lines.append("next: nothing scheduled")
    lines.append("config: ok" if status["config_ok"] else f"config: ERROR {status['config_error']}")
    missing = " (missing: no jobs until it is created)" if status.get("jobs_file_missing") else ""
    lines.append(f"jobs file: {status['jobs_file']}{missing}")
    return lines
