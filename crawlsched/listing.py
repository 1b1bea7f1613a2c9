"""``list --json`` for many jobs: the bytes of ``json.dumps`` over ``render.job_dict``, made faster.

A job's dict has three runs of keys that depend only on the job file (its id,
schedule, retry settings, crawl …) between the keys that depend on the history
and the clock (next and last run, status, the pending retry, the last message).
The static runs are encoded once per version of the job file and kept in the
cache folder beside the parse cache (``list-….pickle``, keyed on the file's
``FileKey``); each call encodes only the changing values and joins the pieces.
The encoder is the one ``json.dumps(..., ensure_ascii=False)`` uses, and the
pieces are cut from ``json.dumps`` of ``render.job_dict`` itself, so the two
cannot drift: a test compares them byte for byte.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Mapping, Sequence

from crawlsched import __version__, render, timing
from crawlsched.jobcache import FileKey, ParseCache
from crawlsched.model import Job, JobFile, JobStatus, ScheduleKind
from crawlsched.state import JobState

__all__ = ["jobs_json"]

FORMAT = 1
_TINY = timedelta(microseconds=1)
# job_dict's keys in order; (True) runs that depend on the job alone, (False) on the history and the clock.
RUNS: tuple[tuple[bool, tuple[str, ...]], ...] = (
    (True, ("id", "name", "schedule", "kind", "start_date", "end_date", "timezone")),
    (False, ("next_run", "next_run_iso", "last_run", "last_run_iso", "status", "next_retry", "next_retry_iso", "attempt")),
    (True, ("max_retries", "retry_delay", "retry_backoff", "retry_max_delay")),
    (False, ("last_message",)),
    (True, ("paused", "url", "command", "timeout", "catch_up", "created_at", "created_at_iso", "headers", "on_failure",
            "max_bytes", "verify", "user_agent", "keep_runs")),
)
KEYS = tuple(k for _, keys in RUNS for k in keys)
SORT_FIELDS = ("id", "name", "status", "next_run_iso", "last_run_iso", "next_retry_iso")

_encode = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes a str with
_dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _value(v: Any) -> str:
    if v is None:
        return "null"
    if type(v) is str:
        return _encode(v)
    return _dumps(v)


def static_parts(job: Job, now: datetime) -> tuple[str, str, str]:
    """The job's three static runs as JSON (``"key": value, …``), cut from ``json.dumps(job_dict)``."""
    d = render.job_dict(job, None, now)
    if tuple(d) != KEYS:  # job_dict changed its keys: this module must follow (the test says so)
        raise RuntimeError("render.job_dict's keys are not listing.KEYS")
    return tuple(", ".join(f"{_encode(k)}: {_dumps(d[k])}" for k in keys) for static, keys in RUNS if static)  # type: ignore[return-value]


def _next_run(job: Job, state: JobState | None, now: datetime, memo: dict[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    """``view``'s next run with its two shown forms, memoised on what it depends on: the schedule,
    the zone, the window and (``every`` jobs) the anchor. 10,000 jobs share a few hundred schedules."""
    seen = state is not None and state.anchor is not None
    every = job.kind is ScheduleKind.EVERY
    key = (job.kind, job.spec, job.timezone, job.start_date, job.end_date, seen and state.anchor, seen) if every \
        else (job.kind, job.spec, job.timezone, job.start_date, job.end_date)  # type: ignore[union-attr]
    hit = memo.get(key)
    if hit is None:
        # As render.view: a job the daemon has not seen yet is due now, not one interval later.
        after = now if seen or not every else now - _TINY
        fire = timing.next_fire(job, after, render.anchor_of(job, state, now))
        hit = memo[key] = (fire, *timing.local_pair(fire, job.timezone))
    return hit


def _status(job: Job, state: JobState | None, next_run: datetime | None) -> JobStatus:
    """``render.view``'s status (SPEC §5: the first that applies wins); test_listing holds them equal."""
    last = state.last_attempt if state is not None else None
    if job.paused:
        return JobStatus.PAUSED
    if job.end_date is not None and next_run is None:
        return JobStatus.FINISHED
    if state is not None and state.running:
        return JobStatus.RUNNING
    if state is not None and state.retry is not None:
        return JobStatus.RETRYING
    if last is not None and last.status == "success":
        return JobStatus.SUCCESS
    if last is not None:
        return JobStatus.FAILED
    return JobStatus.ACTIVE


def dynamic(job: Job, state: JobState | None, now: datetime, memo: dict[tuple[Any, ...], Any]) -> tuple[dict[str, Any], str]:
    """The values of ``job_dict`` that depend on the history and the clock, and their JSON
    (``, "next_run": … "attempt": …``); the last message is ``dict["last_message"]``."""
    next_run, plain, iso = _next_run(job, state, now, memo)
    if state is None:  # no history: the same for every job of this schedule and pause
        hit = memo.get(("no history", job.paused, plain, iso, job.end_date is None))
        if hit is not None:
            return hit
    status = _status(job, state, next_run)
    last = state.last_attempt if state is not None else None
    retry = state.retry if state is not None and status is JobStatus.RETRYING else None
    last_plain, last_iso = timing.local_pair(timing.from_epoch(last.started_at) if last else None, job.timezone)
    retry_plain, retry_iso = timing.local_pair(timing.from_epoch(retry.due_at) if retry else None, job.timezone)
    d = {"next_run": plain, "next_run_iso": iso, "last_run": last_plain, "last_run_iso": last_iso, "status": status.value,
         "next_retry": retry_plain, "next_retry_iso": retry_iso, "attempt": retry.next_attempt if retry else None,
         "last_message": last.message if last else None}
    text = (f', "next_run": {_value(plain)}, "next_run_iso": {_value(iso)}, "last_run": {_value(last_plain)}'
            f', "last_run_iso": {_value(last_iso)}, "status": {_encode(d["status"])}, "next_retry": {_value(retry_plain)}'
            f', "next_retry_iso": {_value(retry_iso)}, "attempt": {_value(d["attempt"])}, ')
    if state is None:
        memo[("no history", job.paused, plain, iso, job.end_date is None)] = (d, text)
    return d, text


def _cache_file(cache_dir: Path | None, path: Path) -> Path | None:
    parse = ParseCache(cache_dir, path, "").file()
    return None if parse is None else parse.with_name("list-" + parse.name.removeprefix("jobs-"))


def _load_parts(file: Path | None, stamp_: tuple[Any, ...] | None, count: int) -> list[tuple[str, str, str]] | None:
    if file is None or stamp_ is None:
        return None
    try:
        with open(file, "rb") as fh:
            stamp, parts = pickle.load(fh)
    except Exception:
        return None
    if stamp != stamp_ or not isinstance(parts, list) or len(parts) != count:
        return None
    return parts


def _save_parts(file: Path | None, stamp: tuple[Any, ...] | None, parts: list[tuple[str, str, str]]) -> None:
    if file is None or stamp is None:
        return
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the job file's contents
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump((stamp, parts), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, file)
    except OSError:
        pass  # a speed-up only


def jobs_json(jobfile: JobFile, states: Mapping[str, JobState], now: datetime, sort: str, *,
              key: FileKey | None = None, machine_tz: str = "", cache_dir: Path | None = None,
              path: Path | None = None, extra: Sequence[tuple[str, Any]] = ()) -> str:
    """``json.dumps({"success": True, "jobs": [job_dict…], **extra}, ensure_ascii=False, default=str)``.

    ``key`` is the version of the file at ``path`` that ``jobfile`` was read from, with the
    zone it was read in (``machine_tz``); None: nothing is kept. ``sort`` is one of ``render.SORT_KEYS``.
    """
    jobs = jobfile.jobs
    file = _cache_file(cache_dir, path) if path is not None else None
    stamp = (FORMAT, __version__, machine_tz, key) if key is not None else None
    parts = _load_parts(file, stamp, len(jobs))
    if parts is None:
        parts = [static_parts(j, now) for j in jobs]
        if len(jobs) >= 1000:
            _save_parts(file, stamp, parts)
    memo: dict[tuple[Any, ...], Any] = {}
    dyn = [dynamic(j, states.get(j.id), now, memo) for j in jobs]
    order: Sequence[int] = range(len(jobs))
    if sort != "file":
        rows = [{"i": i, "id": j.id, "name": j.name, **{k: d[k] for k in SORT_FIELDS if k in d}}
                for i, (j, (d, _)) in enumerate(zip(jobs, dyn))]
        order = [r["i"] for r in render.sort_jobs(rows, sort)]
    out = []
    for i in order:
        (d, text), (first, middle, last) = dyn[i], parts[i]
        message = d["last_message"]
        out.append("{" + first + text + middle + ', "last_message": ' + ("null" if message is None else _value(message)) + ", " + last + "}")
    tail = "".join(f", {_encode(k)}: {_dumps(v)}" for k, v in extra)
    return '{"success": true, "jobs": [' + ", ".join(out) + "]" + tail + "}"
