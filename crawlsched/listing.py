"""``list --json`` for many jobs: the bytes of ``json.dumps`` over ``render.job_dict``, made faster.

A job's dict has three runs of keys that depend only on the job file (its id,
schedule, retry settings, crawl …) between the keys that depend on the history
and the clock (next and last run, status, the pending retry, the last message).
The static runs are encoded once per version of the job file and kept, with what
the changing values depend on (schedule, zone, window, pause), as one plain row
per job in the cache folder beside the parse cache (``list-….pickle``, keyed on
the file's ``FileKey`` and the machine's zone): for an unchanged file ``list
--json`` reads neither the file nor the parse cache. Each call encodes only the
changing values (the next run once per schedule, not per job) and joins the
pieces. The encoder is the one ``json.dumps(..., ensure_ascii=False)`` uses, and
the static pieces are cut from ``json.dumps`` of ``render.job_dict`` itself, so
the two cannot drift: a test compares them byte for byte.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from crawlsched import __version__, render, timing
from crawlsched.jobcache import _LAYOUT, FileKey, ParseCache
from crawlsched.model import Job, JobFile, JobStatus, ScheduleKind
if TYPE_CHECKING:
    from crawlsched.state import JobState

__all__ = ["jobs_json", "kept_rows", "rows_json"]

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


# A row: what `list --json` needs of one job — (id, name, kind, spec, timezone, start_date,
# end_date, paused) and its three static runs. Plain tuples: they unpickle in C, 10,000 of them
# several times faster than the Job objects the parse cache holds.
ID, NAME, KIND, SPEC, TZ, START, END, PAUSED, FIRST, MIDDLE, LAST = range(11)


def row_of(job: Job, now: datetime) -> tuple[Any, ...]:
    return (job.id, job.name, job.kind, job.spec, job.timezone, job.start_date, job.end_date, job.paused,
            *static_parts(job, now))


def _job(row: tuple[Any, ...]) -> Job:
    """A Job with what the next run depends on (the schedule, its zone and window), for ``timing``."""
    return Job(id=row[ID], name=row[NAME], kind=row[KIND], spec=row[SPEC], timezone=row[TZ],
               start_date=row[START], end_date=row[END], paused=row[PAUSED])


def _next_run(row: tuple[Any, ...], state: JobState | None, now: datetime, memo: dict[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    """``view``'s next run with its two shown forms, memoised on what it depends on: the schedule,
    the zone, the window and (``every`` jobs) the anchor. 10,000 jobs share a few hundred schedules."""
    seen = state is not None and state.anchor is not None
    every = row[KIND] is ScheduleKind.EVERY
    key = row[KIND:END + 1] + ((seen and state.anchor, seen) if every else ())  # type: ignore[union-attr]
    hit = memo.get(key)
    if hit is None:
        fire = render.next_run_of(_job(row), state, now)
        hit = memo[key] = (fire, *timing.local_pair(fire, row[TZ]))
    return hit


def dynamic(row: tuple[Any, ...], state: JobState | None, now: datetime, memo: dict[tuple[Any, ...], Any]) -> tuple[dict[str, Any], str]:
    """The values of ``job_dict`` that depend on the history and the clock, and their JSON
    (``, "next_run": … "attempt": …``); the last message is ``dict["last_message"]``."""
    if state is not None and state.anchor is None and state.last_attempt is None and state.retry is None and not state.running:
        state = None  # a job the history knows nothing of (view reads no other field)
    next_run, plain, iso = _next_run(row, state, now, memo)
    if state is None:  # no history: the same for every job of this schedule and pause
        hit = memo.get(("no history", row[PAUSED], plain, iso, row[END] is None))
        if hit is not None:
            return hit
    status = render.status_of(row[PAUSED], row[END], next_run, state)
    last = state.last_attempt if state is not None else None
    retry = state.retry if state is not None and status is JobStatus.RETRYING else None
    last_plain, last_iso = timing.local_pair(timing.from_epoch(last.started_at) if last else None, row[TZ])
    retry_plain, retry_iso = timing.local_pair(timing.from_epoch(retry.due_at) if retry else None, row[TZ])
    d = {"next_run": plain, "next_run_iso": iso, "last_run": last_plain, "last_run_iso": last_iso, "status": status.value,
         "next_retry": retry_plain, "next_retry_iso": retry_iso, "attempt": retry.next_attempt if retry else None,
         "last_message": last.message if last else None}
    text = (f', "next_run": {_value(plain)}, "next_run_iso": {_value(iso)}, "last_run": {_value(last_plain)}'
            f', "last_run_iso": {_value(last_iso)}, "status": {_encode(d["status"])}, "next_retry": {_value(retry_plain)}'
            f', "next_retry_iso": {_value(retry_iso)}, "attempt": {_value(d["attempt"])}, ')
    if state is None:
        memo[("no history", row[PAUSED], plain, iso, row[END] is None)] = (d, text)
    return d, text


def _cache_file(cache_dir: Path | None, path: Path) -> Path | None:
    parse = ParseCache(cache_dir, path, "").file()
    return None if parse is None else parse.with_name("list-" + parse.name.removeprefix("jobs-"))


def kept_rows(cache_dir: Path | None, path: Path, key: FileKey | None, machine_tz: str) -> list[tuple[Any, ...]] | None:
    """The rows kept for the version ``key`` of the file at ``path`` read in ``machine_tz``; None: none kept."""
    file = _cache_file(cache_dir, path)
    if file is None or key is None:
        return None
    try:
        with open(file, "rb") as fh:
            stamp, rows = pickle.load(fh)
    except Exception:
        return None
    return rows if stamp == (FORMAT, __version__, _LAYOUT, KEYS, machine_tz, key) and isinstance(rows, list) else None


def _keep_rows(cache_dir: Path | None, path: Path, key: FileKey, machine_tz: str, rows: list[tuple[Any, ...]]) -> None:
    file = _cache_file(cache_dir, path)
    if file is None:
        return
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the job file's contents
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(((FORMAT, __version__, _LAYOUT, KEYS, machine_tz, key), rows), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, file)
    except OSError:
        pass  # a speed-up only


def jobs_json(jobfile: JobFile, states: Mapping[str, JobState], now: datetime, sort: str, *,
              key: FileKey | None = None, machine_tz: str = "", cache_dir: Path | None = None,
              path: Path | None = None, extra: Sequence[tuple[str, Any]] = ()) -> str:
    """``json.dumps({"success": True, "jobs": [job_dict…], **extra}, ensure_ascii=False, default=str)``.

    ``key`` is the version of the file at ``path`` that ``jobfile`` was read from, with the
    zone it was read in (``machine_tz``): its rows are kept for ``kept_rows`` (None: nothing is
    kept). ``sort`` is one of ``render.SORT_KEYS``.
    """
    rows = [row_of(j, now) for j in jobfile.jobs]
    if key is not None and path is not None and len(rows) >= 1000:
        _keep_rows(cache_dir, path, key, machine_tz, rows)
    return rows_json(rows, states, now, sort, extra=extra)


def rows_json(rows: list[tuple[Any, ...]], states: Mapping[str, JobState], now: datetime, sort: str, *,
              extra: Sequence[tuple[str, Any]] = ()) -> str:
    """``jobs_json`` from the rows (``row_of`` or ``kept_rows``)."""
    memo: dict[tuple[Any, ...], Any] = {}
    dyn = [dynamic(r, states.get(r[ID]), now, memo) for r in rows]
    order: Sequence[int] = range(len(rows))
    if sort != "file":
        keys = [{"i": i, "id": r[ID], "name": r[NAME], **{k: d[k] for k in SORT_FIELDS if k in d}}
                for i, (r, (d, _)) in enumerate(zip(rows, dyn))]
        order = [k["i"] for k in render.sort_jobs(keys, sort)]
    out = []
    for i in order:
        (d, text), row = dyn[i], rows[i]
        message = d["last_message"]
        out.append("{" + row[FIRST] + text + row[MIDDLE] + ', "last_message": '
                   + ("null" if message is None else _value(message)) + ", " + row[LAST] + "}")
    tail = "".join(f", {_encode(k)}: {_dumps(v)}" for k, v in extra)
    return '{"success": true, "jobs": [' + ", ".join(out) + "]" + tail + "}"
