"""A job's history as runs (fires) with their attempts: the page's strip, runs list and chart.

A *run* is one fire of a job: the attempts that share its scheduled time (the
unique key ``(job_id, scheduled_for, attempt)`` makes them one chain), or a
skipped or missed fire (one row, attempt 0). Its outcome is its newest
attempt's, or ``retrying`` while a retry of it is pending.

Every read here goes through an index: rows by ``runs_by_job (job_id, id)``,
a run's attempts by ``runs_once (job_id, scheduled_for, attempt)``, new rows by
the primary key. Nothing reads the whole history on a page refresh: the
strips of every card are kept by ``StripCache``, which reads only the rows
written since its last look (and the ones it saw running).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from crawlsched.model import JobStatus, RunStatus
from crawlsched.state import Run, State, StripRow

UTC = timezone.utc
ATTEMPT_OUTCOMES = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.INTERRUPTED)
#: a run's outcomes: its newest row's status, or ``retrying`` while a retry of it is pending
OUTCOMES = (*ATTEMPT_OUTCOMES, RunStatus.SKIPPED, RunStatus.MISSED, RunStatus.RUNNING, JobStatus.RETRYING)
STRIP_LENGTH = 20  # runs on a card
STRIP_ROWS = 60  # rows read per job to build its strip at first (about 20 runs of 3 attempts)
CHECK_KEPT_EVERY = 60.0  # seconds: the rows a strip holds are checked against the history this often
SCAN_CHUNK = 200  # rows read at a time when paging a job's runs
SCAN_CAP = 20_000  # rows one runs request may look at (a rare status over a long history)


@dataclass
class Fire:
    """One run of a job: its attempts oldest first, or its one skipped/missed row."""

    rows: list[Any]  #: ``Run`` or ``StripRow``: the same names
    retry_pending: bool = False

    @property
    def newest(self) -> Run:
        return max(self.rows, key=lambda r: r.id)

    @property
    def id(self) -> int:
        """The newest row's id: runs are ordered by it, and the ``before`` cursor is one."""
        return self.newest.id

    @property
    def status(self) -> str:
        last = max(self.rows, key=lambda r: (r.attempt, r.id))
        if self.retry_pending and last.status != RunStatus.RUNNING:
            return JobStatus.RETRYING.value
        return last.status

    @property
    def when(self) -> float:
        """When it happened: the first attempt's start, else (skipped, missed) when it was recorded."""
        first = min(self.rows, key=lambda r: (r.attempt, r.id))
        return first.started_at or first.finished_at or first.scheduled_for


def fire_key(run: Run) -> tuple[str, float] | int:
    return (run.job_id, run.scheduled_for) if run.attempt > 0 else run.id


def group(rows: Iterable[Run], retries: set[tuple[str, float]] = frozenset()) -> list[Fire]:  # type: ignore[assignment]
    """Rows (any order) → runs, newest first."""
    by_key: dict[Any, list[Run]] = {}
    for row in rows:
        by_key.setdefault(fire_key(row), []).append(row)
    fires = [Fire(sorted(rs, key=lambda r: (r.attempt, r.id)), isinstance(k, tuple) and k in retries)
             for k, rs in by_key.items()]  # fmt: skip
    return sorted(fires, key=lambda f: f.id, reverse=True)


def pending_retries(state: State, job_id: str | None = None) -> set[tuple[str, float]]:
    return {(r.job_id, r.scheduled_for) for r in state.retries() if job_id is None or r.job_id == job_id}


def _recorded(run: Run) -> float:
    return run.started_at or run.finished_at or run.scheduled_for


@dataclass
class Page:
    fires: list[Fire]
    next_before: int | None  #: the ``before`` of the next page, None on the last


def job_fires(state: State, job_id: str, *, limit: int, before: int | None = None, since: float | None = None,
              statuses: tuple[str, ...] | None = None) -> Page:
    """A page of one job's runs, newest first, each with all its attempts.

    ``before`` (a run's id from the previous page) continues after that run; ``since``
    (epoch) keeps runs that happened at or after it; ``statuses`` keeps runs whose
    outcome is one of them. Rows are read newest first through ``runs_by_job``, and
    each run's attempts through ``runs_once``, so a run is never split across pages.
    """
    retries = pending_retries(state, job_id)
    out: list[Fire] = []
    seen: set[float] = set()
    cursor = before if before is not None else 2**62
    scanned = 0
    done = False
    while not done and len(out) <= limit and scanned < SCAN_CAP:
        rows = state.job_rows_before(job_id, cursor, SCAN_CHUNK)
        if not rows:
            break
        for run in rows:
            scanned += 1
            cursor = run.id
            if since is not None and _recorded(run) < since:
                done = True  # ids grow with time: everything further is older
                break
            if run.attempt > 0:
                if run.scheduled_for in seen:
                    continue
                seen.add(run.scheduled_for)
                attempts = state.chain_attempts(job_id, run.scheduled_for)
                fire = Fire(attempts, (job_id, run.scheduled_for) in retries)
                if before is not None and fire.id >= before:
                    continue  # its newest attempt was on an earlier page
            else:
                fire = Fire([run])
            if statuses and fire.status not in statuses:
                continue
            out.append(fire)
            if len(out) > limit:
                break
    more = len(out) > limit or (scanned >= SCAN_CAP and not done)
    page = out[:limit]
    next_before = page[-1].id if more and page else (cursor if more else None)
    return Page(page, next_before)


# --- the chart -------------------------------------------------------------------


@dataclass
class Stats:
    """Runs per bucket stacked by outcome, and the success rates over the window."""

    buckets: list[dict[str, Any]]
    runs: dict[str, int]
    attempts: dict[str, int]
    success_rate: float | None  #: successful attempts over finished attempts (as ``history``)
    run_success_rate: float | None  #: runs that ended in success over runs that ended


def job_stats(state: State, job_id: str, *, since: datetime, until: datetime, bucket: str, tz: Any) -> Stats:
    """Runs of ``job_id`` that happened in ``[since, until)``, counted per day or hour (in ``tz``)."""
    rows = state.runs_between(job_id, since.timestamp(), until.timestamp())
    fires = group(rows, pending_retries(state, job_id))
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    start = since.astimezone(tz)
    start = start.replace(minute=0, second=0, microsecond=0) if bucket == "hour" else start.replace(
        hour=0, minute=0, second=0, microsecond=0)
    edges: list[datetime] = []
    at = start
    while at < until:
        edges.append(at)
        # Day edges are local midnights (a day may be 23 or 25 hours long): step in wall time.
        at = (at.replace(tzinfo=None) + step).replace(tzinfo=tz) if bucket == "day" else (at + step)
        at = at.astimezone(tz)
    buckets = [{"start": e.isoformat(timespec="seconds"), **{o: 0 for o in OUTCOMES}} for e in edges]
    stamps = [e.timestamp() for e in edges]
    totals = {o: 0 for o in OUTCOMES}
    for fire in fires:
        t = fire.when
        index = max(0, _bisect(stamps, t))
        buckets[index][fire.status] += 1
        totals[fire.status] += 1
    attempts = {o: 0 for o in OUTCOMES}
    for row in rows:
        if row.attempt > 0:
            attempts[row.status] = attempts.get(row.status, 0) + 1
    finished = sum(attempts[o] for o in ATTEMPT_OUTCOMES)
    ended = [f for f in fires if f.status in ATTEMPT_OUTCOMES and f.rows[0].attempt > 0]
    return Stats(
        buckets=buckets,
        runs=totals,
        attempts={k: v for k, v in attempts.items() if k in (*ATTEMPT_OUTCOMES, RunStatus.RUNNING)},
        success_rate=attempts[RunStatus.SUCCESS] / finished if finished else None,
        run_success_rate=sum(f.status == RunStatus.SUCCESS for f in ended) / len(ended) if ended else None,
    )


def _bisect(stamps: list[float], t: float) -> int:
    lo, hi = 0, len(stamps)
    while lo < hi:
        mid = (lo + hi) // 2
        if stamps[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


# --- the cards' strips -------------------------------------------------------------


@dataclass
class _Entry:
    rows: list[StripRow] = field(default_factory=list)
    changed: int = 0  #: the version at which this job's strip last changed
    retries: frozenset = frozenset()
    fragment: str | None = None  #: its strip as JSON, built once per change


class StripCache:
    """The last runs of every job, kept up to date by reading only what changed.

    Rows are read at first per job (``runs_by_job``, ``STRIP_ROWS`` each), then only
    rows with a higher id than the newest seen, plus the rows seen ``running`` (an
    attempt that finishes updates its row in place) and the pending retries. Every
    change bumps ``version`` and marks the jobs it touched, so a client that has a
    version gets only the strips changed since (``changed_since``), each serialized
    once per change. The version starts with this cache's own random epoch: a
    client holding another daemon's version gets everything.

    Rows go only through ``keep_history`` (``State.prune_history``, the oldest first). The
    smallest row id is read on each update (one index lookup); when it moved, or every
    ``CHECK_KEPT_EVERY`` s (a sweep by age may leave an older row, another job's newest
    attempt, in place), each strip's oldest row is looked up (a job's rows go oldest first),
    and the strips whose oldest row is gone have all their rows looked up and the missing dropped.
    """

    def __init__(self, state: State, render: Callable[[str, list[Fire]], str], *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.render = render  #: (job id, its runs newest first) -> the strip's JSON
        self.monotonic = monotonic
        self._min_id: int | None = None  #: the smallest row id at the last update
        self._checked_at = monotonic()
        self.epoch = os.urandom(4).hex()
        self._lock = threading.Lock()
        self._jobs: dict[str, _Entry] = {}
        self._max_id = 0
        self._version = 0
        self._running: set[int] = set()  #: ids of the rows kept that were running when last read
        self._retries: dict[str, frozenset[float]] = {}
        self._fleet: tuple[float, dict[str, Any]] | None = None

    @property
    def version(self) -> str:
        return f"{self.epoch}.{self._version}"

    def update(self, job_ids: list[str]) -> str:
        """Bring the strips of ``job_ids`` up to date; returns the version."""
        with self._lock:
            touched: set[str] = set()
            if self._jobs:
                for run in self.state.strip_rows_after(self._max_id):
                    entry = self._jobs.get(run.job_id)
                    if entry is not None:
                        entry.rows.append(run)
                        if run.status == RunStatus.RUNNING:
                            self._running.add(run.id)
                        if len(entry.rows) > STRIP_ROWS * 2:
                            del entry.rows[: len(entry.rows) - STRIP_ROWS]
                        touched.add(run.job_id)
                    self._max_id = max(self._max_id, run.id)
                for row in self.state.strip_rows(list(self._running)):
                    entry = self._jobs[row.job_id]
                    for i, old in enumerate(entry.rows):
                        if old.id == row.id and old != row:
                            entry.rows[i] = row
                            touched.add(row.job_id)
                    if row.status != RunStatus.RUNNING:
                        self._running.discard(row.id)
                touched |= self._drop_pruned()
            else:
                self._max_id, self._min_id = self.state.newest_run_id(), self.state.oldest_run_id()
            for job_id in job_ids:
                if job_id not in self._jobs:
                    rows = self.state.job_strip_rows(job_id, self._max_id, STRIP_ROWS)
                    self._jobs[job_id] = _Entry(rows[::-1])
                    self._running.update(r.id for r in rows if r.status == RunStatus.RUNNING)
                    touched.add(job_id)
            retries: dict[str, set[float]] = {}
            for job_id, scheduled_for in pending_retries(self.state):
                retries.setdefault(job_id, set()).add(scheduled_for)
            frozen = {k: frozenset(v) for k, v in retries.items()}
            for job_id in set(frozen) | set(self._retries):
                if frozen.get(job_id) != self._retries.get(job_id):
                    touched.add(job_id)
            self._retries = frozen
            touched &= set(self._jobs)
            if touched:
                self._version += 1
                for job_id in touched:
                    entry = self._jobs[job_id]
                    entry.changed = self._version
                    entry.fragment = None
            return self.version

    def _drop_pruned(self) -> set[str]:
        """Drop the rows kept that the history no longer has; returns the jobs whose strips lost one."""
        lowest = self.state.oldest_run_id()
        now = self.monotonic()
        if lowest == self._min_id and now - self._checked_at < CHECK_KEPT_EVERY:
            return set()
        self._min_id, self._checked_at = lowest, now
        oldest = [entry.rows[0].id for entry in self._jobs.values() if entry.rows]
        present = self._present(oldest)
        touched = set()
        for job_id, entry in self._jobs.items():
            if entry.rows and entry.rows[0].id not in present:
                there = self._present([row.id for row in entry.rows])
                self._running -= {row.id for row in entry.rows} - there
                entry.rows = [row for row in entry.rows if row.id in there]
                touched.add(job_id)
        return touched

    def _present(self, ids: list[int]) -> set[int]:
        """Which of ``ids`` the history still has."""
        return self.state.existing_run_ids(ids)

    def changed_since(self, job_ids: list[str], version: str | None) -> tuple[bool, dict[str, str]]:
        """(whether this is every strip, {job id: strip JSON}) for the jobs changed after ``version``."""
        with self._lock:
            epoch, _, number = (version or "").partition(".")
            full = epoch != self.epoch or not number.isdigit() or int(number) > self._version
            after = -1 if full else int(number)
            out: dict[str, str] = {}
            for job_id in job_ids:
                entry = self._jobs.get(job_id)
                if entry is None or entry.changed <= after:
                    continue
                if entry.fragment is None:
                    marks = {(job_id, t) for t in self._retries.get(job_id, ())}
                    entry.fragment = self.render(job_id, group(entry.rows, marks)[:STRIP_LENGTH])  # type: ignore[arg-type]
                out[job_id] = entry.fragment
            return full, out

    def fleet(self, now: float, max_age: float = 30.0) -> dict[str, Any]:
        """Attempts of the last 24 h over all jobs (read at most every ``max_age`` s)."""
        with self._lock:
            if self._fleet is not None and now - self._fleet[0] < max_age:
                return self._fleet[1]
        since = now - 86400
        # One pass over the rows of the last day, at most every ``max_age`` seconds (not per refresh).
        counts = self.state.attempt_counts_since(since)
        finished = sum(counts.get(o, 0) for o in ATTEMPT_OUTCOMES)
        fleet = {"attempts_24h": finished, "successes_24h": counts.get(RunStatus.SUCCESS, 0),
                 "success_rate_24h": counts.get(RunStatus.SUCCESS, 0) / finished if finished else None}
        with self._lock:
            self._fleet = (now, fleet)
        return fleet


def since_text(value: str, now: datetime, tz_name: str) -> datetime:
    """``since`` of the page's routes: ``history --since``'s rule (``24h``, ``7d``, ``1h30m`` back
    from now, or an ISO date or date-time), a time without an offset in the job's zone."""
    from crawlsched.errors import InvalidValue
    from crawlsched.history import parse_since

    try:
        return parse_since(value, now, tz_name).astimezone(UTC)
    except InvalidValue as exc:
        raise InvalidValue("since", value, exc.allowed) from None
