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
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from crawlsched import __version__, render
from crawlsched.jobcache import FileKey, ParseCache
from crawlsched.model import Job, JobFile, JobStatus
from crawlsched.state import JobState

__all__ = ["jobs_json"]

FORMAT = 1
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


def dynamic(job: Job, state: JobState | None, now: datetime) -> dict[str, Any]:
    """The values of ``job_dict`` that depend on the history and the clock (the same code path)."""
    v = render.view(job, state, now)
    last = v.last_attempt
    retry = state.retry if state is not None and v.status is JobStatus.RETRYING else None
    return {
        **render._times("next_run", v.next_run, job.timezone),
        **render._times("last_run", render.timing.from_epoch(last.started_at) if last else None, job.timezone),
        "status": v.status.value,
        **render._times("next_retry", render.timing.from_epoch(retry.due_at) if retry else None, job.timezone),
        "attempt": retry.next_attempt if retry else None,
        "last_message": last.message if last else None,
    }


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
    dyn = [dynamic(j, states.get(j.id), now) for j in jobs]
    order: Sequence[int] = range(len(jobs))
    if sort != "file":
        rows = [{"i": i, "id": j.id, "name": j.name, **{k: d.get(k) for k in SORT_FIELDS if k in d}}
                for i, (j, d) in enumerate(zip(jobs, dyn))]
        order = [r["i"] for r in render.sort_jobs(rows, sort)]
    out = []
    for i in order:
        d, (first, middle, last) = dyn[i], parts[i]
        out.append(
            "{" + first
            + f', "next_run": {_value(d["next_run"])}, "next_run_iso": {_value(d["next_run_iso"])}'
            f', "last_run": {_value(d["last_run"])}, "last_run_iso": {_value(d["last_run_iso"])}'
            f', "status": {_encode(d["status"])}, "next_retry": {_value(d["next_retry"])}'
            f', "next_retry_iso": {_value(d["next_retry_iso"])}, "attempt": {_value(d["attempt"])}, '
            + middle + f', "last_message": {_value(d["last_message"])}, ' + last + "}"
        )
    tail = "".join(f", {_encode(k)}: {_dumps(v)}" for k, v in extra)
    return '{"success": true, "jobs": [' + ", ".join(out) + "]" + tail + "}"
