"""Jobs and runs as JSON dicts, for scripts and the web API (SPEC §5). Prints nothing.

One serializer: ``job_dict`` and ``run_dict`` give the shapes of SPEC §5, and
the tables for people (``crawlsched.tables``) are built from those dicts, so what
a person sees and what a script reads cannot drift apart. Here too: what a job's
history and the clock say of it (``view``: next run and status), ``status_dict``
for ``status`` and the API, and the orders of ``list --sort``. Secrets never get
here in the clear: passwords in URLs are masked, header values are left out,
``${VAR}`` templates are shown as written (they are only expanded at run time).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from crawlsched import timing
from crawlsched.model import Defaults, Job, JobStatus, RunStatus, ScheduleKind
from crawlsched.urls import redact_url
from crawlsched.state import JobState, Run

if TYPE_CHECKING:
    from crawlsched.jobfile import JobFile

_TINY = timedelta(microseconds=1)
ATTEMPT_OUTCOMES = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.INTERRUPTED)  # what success_rate counts

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
    next_run = next_run_of(job, state, now)
    last = state.last_attempt if state is not None else None
    return JobView(status_of(job.paused, job.end_date, next_run, state), next_run, last)


def next_run_of(job: Job, state: JobState | None, now: datetime) -> datetime | None:
    """The job's next fire as of ``now``, from its schedule, window and (``every``) anchor."""
    seen = state is not None and state.anchor is not None
    # A job the daemon has not seen yet fires as soon as it is seen: show it
    # due now, not one interval later (next_fire is strictly after its input).
    after = now if seen or job.kind is not ScheduleKind.EVERY else now - _TINY
    return timing.next_fire(job, after, anchor_of(job, state, now))


def status_of(paused: bool, end_date: date | None, next_run: datetime | None, state: JobState | None) -> JobStatus:
    """A job's status from its pause, end date, next run and history (SPEC §5: the first that applies wins)."""
    last = state.last_attempt if state is not None else None
    if paused:
        return JobStatus.PAUSED
    if end_date is not None and next_run is None:
        return JobStatus.FINISHED
    if state is not None and state.running:
        return JobStatus.RUNNING
    if state is not None and state.retry is not None:
        return JobStatus.RETRYING
    if last is not None and last.status == RunStatus.SUCCESS:
        return JobStatus.SUCCESS
    if last is not None:
        # failed, interrupted, or "running" with its process gone: none of them succeeded.
        return JobStatus.FAILED
    return JobStatus.ACTIVE


def status_dict(row: Mapping[str, Any] | None, jobfile: JobFile | None, now: datetime, *,
                states: Mapping[str, JobState], running: bool, pid: int | None, http: str | None,
                config_ok: bool, config_error: str | None, jobs_file: str, home: str,
                job_count: int | None = None, state_error: str | None = None,
                jobs_file_missing: bool = False, scheduler_paused: bool | None = None,
                state: str | None = None, roster: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``crawlsched status --json`` and ``GET /api/scheduler/status``: one shape, built here for both.

    ``row`` is the daemon's row (None when it is not known to be up). What is next is worked
    out as of ``now`` (SPEC §6), not taken from the daemon's last heartbeat: the earliest of
    the unpaused jobs' next runs and pending retries (ties: the first in the file). Only
    without a job file does the daemon's row say, and only a time not yet past.
    ``job_count`` (the API's), ``state_error`` (the database could not be read) and
    ``jobs_file_missing`` (no job file: no jobs, not an error) appear only when given.
    ``scheduler_paused`` (``[defaults] paused``, the legacy stop) is read from ``jobfile`` unless given;
    while it is on, nothing is next. ``state`` is the state in use as shown (the SQLite file, or the
    PostgreSQL DSN without its password: ``crawlsched.dsn.redact_dsn``), the last key.
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
    if state is not None:
        out["state"] = state
    if roster is not None:  # the daemons and workers on the state (crawlsched.roster, SPEC §10)
        out.update(roster)
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

# --- orders of `list --sort` ------------------------------------------------------------

SORT_KEYS = ("file", "next", "name", "status", "last")
STATUS_ORDER = (JobStatus.FAILED, JobStatus.RETRYING, JobStatus.RUNNING, JobStatus.ACTIVE, JobStatus.SUCCESS,
                JobStatus.PAUSED, JobStatus.FINISHED)

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
