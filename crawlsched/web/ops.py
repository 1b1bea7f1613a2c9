"""Operations: the status the API reports, the health check and the Prometheus metrics (``/metrics``)."""

from __future__ import annotations

import os
import threading
import time
import zlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

from crawlsched import __version__, control, render, timing
from crawlsched.errors import CrawlschedError
from crawlsched.model import Job, ScheduleKind
from crawlsched.state import HISTOGRAMS, SqliteStore, State
from crawlsched.state.open import label_of
from crawlsched.web.guards import _url_host

if TYPE_CHECKING:
    from crawlsched.control import SchedulerView
    from crawlsched.store import JobStore

HEALTH_STALE = control.DAEMON_FRESH  # seconds without a heartbeat after which /healthz says the loop is stuck


def status_dict(store: JobStore, state: State, scheduler: SchedulerView, home: Path, now: datetime,
                bind: tuple[str, int]) -> dict[str, Any]:
    """``crawlsched status --json``'s shape (``render.status_dict``), seen from inside the daemon."""
    running = bool(scheduler.started and not scheduler.stopping)
    row = state.daemon() if running else None
    config_error, jobfile = scheduler.config_error, None
    try:
        jobfile = store.load()
    except CrawlschedError as exc:
        config_error = config_error or str(exc)
    states = state.job_states([j.id for j in jobfile.jobs]) if jobfile is not None else {}  # next: as of now
    host, port = bind
    defaults = scheduler.defaults
    return render.status_dict(
        row, jobfile, now, states=states, running=running, pid=os.getpid() if running else None,
        http=f"http://{_url_host(host)}:{port}", config_ok=config_error is None, config_error=config_error,
        job_count=len(jobfile.jobs) if jobfile is not None else len(scheduler.jobs),
        jobs_file=str(store.path), home=str(home),
        scheduler_paused=None if jobfile is not None else bool(defaults is not None and defaults.paused),
        state=label_of(state))


def health_problem(state: State, scheduler: SchedulerView, now: float) -> str | None:
    """Why the scheduler is not healthy, or None: the loop must be alive and the job file applied."""
    if not scheduler.started:
        return "the scheduler loop has not started"
    if scheduler.stopping:
        return "the scheduler is stopping"
    try:
        row = state.daemon() or {}
    except Exception as exc:
        return f"the state database cannot be read ({type(exc).__name__})"
    held = getattr(state, "held", 0)
    if held:  # the database is lost or refuses writes: fires are held (as missed), nothing runs unrecorded
        return f"the state database does not take writes ({held} held until it does)"
    beat = row.get("heartbeat")
    if beat is None or now - beat > HEALTH_STALE:
        age = "never" if beat is None else f"{now - beat:.0f} s ago"
        return f"the scheduler loop looks stuck: its last heartbeat was {age}"
    if scheduler.config_error:
        return f"the job file is not applied: {scheduler.config_error}"
    return None


# The per-job families, in the order they are written: (name, type, help).
JOB_FAMILIES = (
    ("crawlsched_attempts_total", "counter", "Finished attempts, by job and outcome."),
    ("crawlsched_fires_skipped_total", "counter", "Fires not run because the job's previous run was still going."),
    ("crawlsched_fires_missed_total", "counter", "Fires not run because the daemon was down (or the machine asleep)."),
    ("crawlsched_job_last_success_timestamp_seconds", "gauge", "End of the job's newest successful attempt; 0 until the first."),
    ("crawlsched_job_last_failure_timestamp_seconds", "gauge",
     "End of the job's newest failed or interrupted attempt; 0 until the first."),
    ("crawlsched_job_next_fire_timestamp_seconds", "gauge", "The job's next scheduled fire; 0 when none (paused, finished)."),
    ("crawlsched_job_interval_seconds", "gauge",
     "Seconds between the job's fires (for cron: between its next two), for staleness alerts."),
    ("crawlsched_job_first_seen_timestamp_seconds", "gauge", "When the job was added (first seen)."),
)
_NO_COUNTERS = (0, 0, 0, 0, 0, 0, 0)  # METRIC_COUNTER_COLUMNS of a job with no history yet


class DaemonCollector:
    """The ``/metrics`` families (SPEC §8), read fresh at each scrape.

    A scrape costs O(jobs), never O(history), and most of it is C-level
    string joins: the per-job counters and the histograms are running totals
    that the state database keeps in the same transaction as each history row
    (migration 006), and a scrape reads only the counters changed since the
    last one (their ``seq``); the jobs and their next fires come from the
    scheduler's view (its jobs mapping is replaced, never changed, on a reload;
    the next fires are a copy, one C-level copy under the GIL). It reads
    through a connection of its own, so it never waits for (nor holds) the
    lock the loop and the attempts write through; SQLite's WAL lets it read
    while they write.

    The daemon-wide families go through ``prometheus_client`` (``collect``).
    The per-job ones (ten series a job: 100,000 lines at 10,000 jobs) are
    written by ``job_text`` in the same text format, from a line per job and
    family that is rebuilt only when that job's values change:
    ``prometheus_client`` formats about 100,000 samples a second, which would
    make each scrape of 10,000 jobs hold the GIL the loop needs for a second.
    """

    def __init__(self, state: State, scheduler: SchedulerView) -> None:
        self.state = state
        self.scheduler = scheduler
        self._reader: State | None = None
        self._reader_ino: int | None = None
        self._lock = threading.Lock()
        self._intervals: dict[str, tuple[Job, float]] = {}
        self._forget()
        self._scrape: dict[str, Any] = {}

    def _forget(self) -> None:
        """Drop every cache: the next scrape reads and writes everything afresh."""
        self._counters: dict[str, tuple] = {}
        self._seq = 0
        self._first_seen: dict[str, float] = {}
        self._seen_rowid = 0
        self._jobs: dict[str, Job] | None = None  # the loop's jobs dict the lines were written for
        self._planned: dict[str, float] = {}
        self._lines: list[dict[str, str]] = [{} for _ in JOB_FAMILIES]

    def _state(self) -> State:
        """The reader's own connection, reopened (and the caches dropped) when the daemon replaced a corrupt file.

        A SQLite file gets a store of its own (a connection that never waits for the loop's writes);
        any other state (PostgreSQL: a pool, reads never wait for the write lock) is read as it is."""
        if not isinstance(self.state, SqliteStore):
            return self.state
        path = self.state.path
        ino = os.stat(path).st_ino
        if self._reader is None or ino != self._reader_ino:
            if self._reader is not None:
                self._reader.close()
            self._reader = State(path).open()
            self._reader_ino = ino
            self._forget()
        return self._reader

    def read(self) -> None:
        """Take what this scrape reports (called once per scrape, before ``collect`` and ``job_text``)."""
        scheduler = self.scheduler
        changed: set[str] = set()
        try:
            state = self._state()
            gauges = state.metric_gauges()
            counters, self._seq = state.metric_counters(self._seq)
            seen, self._seen_rowid = state.metric_first_seen(self._seen_rowid)
            histograms = state.metric_histograms()
            self._counters.update(counters)
            self._first_seen.update(seen)
            changed.update(counters)
            changed.update(seen)
        except Exception:  # a broken database: say the daemon is not healthy, and no more
            gauges, histograms = None, {}
        self._scrape = {"now": scheduler.clock(), "jobs": scheduler.jobs, "planned": scheduler.next_fires(),
                        "gauges": gauges, "histograms": histograms, "changed": changed}

    def collect(self) -> Iterator[Metric]:
        scheduler, scrape = self.scheduler, self._scrape
        now, gauges = scrape["now"], scrape["gauges"]
        beat = gauges["heartbeat"] if gauges else None
        alive = bool(scheduler.started and not scheduler.stopping and beat is not None and now - beat <= HEALTH_STALE)
        yield _gauge("crawlsched_up", f"1 while the scheduler loop's heartbeat is fresh (at most {HEALTH_STALE:g} s old), else 0.",
                     1 if alive else 0)
        yield _gauge("crawlsched_heartbeat_timestamp_seconds", "When the scheduler loop last wrote its heartbeat.",
                     beat or 0)
        info = GaugeMetricFamily("crawlsched_build_info", "The running crawlsched's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield _gauge("crawlsched_jobs", "Jobs the daemon runs (its last good job file).", len(scrape["jobs"]))
        yield _gauge("crawlsched_config_reload_success", "1 when the job file as it is now is applied, 0 when it is broken.",
                     0 if scheduler.config_error else 1)
        if gauges is not None:
            yield _gauge("crawlsched_retries_pending", "Failed attempts waiting for their retry.", gauges["retries_pending"])
            yield _gauge("crawlsched_attempts_running", "Attempts running now (this daemon's and `crawlsched run`'s).",
                         gauges["attempts_running"])
        yield _gauge("crawlsched_pool_size", "Attempts that can run at once (max_concurrent).", scheduler.pool_size)
        for name, metric, doc in (
            ("attempt_duration", "crawlsched_attempt_duration_seconds", "How long finished attempts took."),
            ("fire_lateness", "crawlsched_fire_lateness_seconds", "Start of a scheduled first attempt after its fire time."),
        ):
            yield _histogram(metric, doc, HISTOGRAMS[name], scrape["histograms"].get(name, []))

    def job_text(self) -> str:
        """The per-job families in the text format, a series for every current job (0 until its first event)."""
        scrape = self._scrape
        jobs, planned, now = scrape["jobs"], scrape["planned"], scrape["now"]
        if jobs is not self._jobs:  # (re)loaded: every job's lines afresh, removed jobs drop out
            self._lines = [{} for _ in JOB_FAMILIES]
            dirty: Any = jobs
        else:  # only the jobs whose counters or next fire moved; a Python loop, so the loop thread can take the GIL
            before = self._planned
            dirty = scrape["changed"] | {k for k, v in planned.items() if before.get(k) != v} | (before.keys() - planned.keys())
        self._jobs, self._planned = jobs, planned
        lines = self._lines
        for job_id in dirty:
            job = jobs.get(job_id)
            if job is None:
                continue
            values = _job_lines(job_id, self._counters.get(job_id, _NO_COUNTERS), planned.get(job_id, 0),
                                self._interval(job, now), self._first_seen.get(job_id) or 0)
            for family, line in zip(lines, values):
                family[job_id] = line
        out = []
        for (name, kind, doc), family in zip(JOB_FAMILIES, lines):
            time.sleep(0)  # each join holds the GIL for a while: let a due fire go first
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            if family:
                out.append("\n".join(family.values()))
                out.append("\n")
        return "".join(out)

    def _interval(self, job: Job, now: float) -> float:
        if job.every_seconds:
            return job.every_seconds
        if job.kind is ScheduleKind.AT:
            return 86400.0
        cached = self._intervals.get(job.id)
        if cached is not None and cached[0] is job:
            return cached[1]
        gap = 0.0  # cron: the gap between its next two fires, worked out once per version of the job
        first = timing.next_fire(job, timing.from_epoch(now))
        second = timing.next_fire(job, first) if first is not None else None
        if second is not None:
            gap = (second - first).total_seconds()
        self._intervals[job.id] = (job, gap)
        return gap


def _job_lines(job_id: str, counters: tuple, next_fire: float, interval: float, first_seen: float) -> tuple[str, ...]:
    """One job's line per family of ``JOB_FAMILIES`` (its three outcomes share one entry)."""
    success, failed, interrupted, skipped, missed, last_ok, last_bad = counters
    job = f'job="{_escape(job_id)}"'
    g = floatToGoString
    return (
        f'crawlsched_attempts_total{{{job},outcome="success"}} {g(success)}\n'
        f'crawlsched_attempts_total{{{job},outcome="failed"}} {g(failed)}\n'
        f'crawlsched_attempts_total{{{job},outcome="interrupted"}} {g(interrupted)}',
        f"crawlsched_fires_skipped_total{{{job}}} {g(skipped)}",
        f"crawlsched_fires_missed_total{{{job}}} {g(missed)}",
        f"crawlsched_job_last_success_timestamp_seconds{{{job}}} {g(last_ok)}",
        f"crawlsched_job_last_failure_timestamp_seconds{{{job}}} {g(last_bad)}",
        f"crawlsched_job_next_fire_timestamp_seconds{{{job}}} {g(next_fire)}",
        f"crawlsched_job_interval_seconds{{{job}}} {g(interval)}",
        f"crawlsched_job_first_seen_timestamp_seconds{{{job}}} {g(first_seen)}",
    )


def _escape(value: str) -> str:
    """A label value as the text format escapes it (job ids need none; ``[a-z0-9_-]``, but be safe)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, bounds: tuple[float, ...], stored: list[tuple[float, int, float]]) -> HistogramMetricFamily:
    """Cumulative buckets from the stored per-bucket counts (a bound no longer used folds into the next one up)."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for le, n, value_sum in stored:
        index = next((i for i, b in enumerate(bounds) if le <= b), len(bounds))
        counts[index] += n
        total += value_sum
    running, buckets = 0, []
    for bound, n in zip([*map(floatToGoString, bounds), "+Inf"], counts):
        running += n
        buckets.append((bound, running))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


class MetricsExporter:
    """``GET /metrics``: the daemon's families plus the usual ``process_*``.

    A scrape within ``REUSE_FOR`` seconds of the last full one gets the same
    body (Prometheus scrapes every 15 s or so; a second scraper, or a
    dashboard hammering the endpoint, then costs nothing).
    """

    content_type = CONTENT_TYPE_PLAIN_0_0_4
    REUSE_FOR = 1.0

    def __init__(self, state: State, scheduler: SchedulerView) -> None:
        self.collector = DaemonCollector(state, scheduler)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self.monotonic = scheduler.monotonic
        self._last: tuple[float, bytes, dict[str, bytes]] | None = None  # (monotonic time, body, its encodings)

    def render(self, encoding: str | None = None) -> bytes:
        """The exposition, ``encoding="gzip"`` for a scraper that accepts it."""
        with self.collector._lock:  # one scrape at a time: they share the reader and the cache
            last = self._last
            if last is None or self.monotonic() - last[0] >= self.REUSE_FOR:
                self.collector.read()
                body = generate_latest(self.registry) + self.collector.job_text().encode()
                last = self._last = (self.monotonic(), body, {})
            if encoding is None:
                return last[1]
            if encoding not in last[2]:
                # 10,000 jobs are 6.5 MB of text, 0.4 MB compressed; zlib lets go of the GIL while
                # it works, where the server's writes of 6.5 MB would not.
                last[2][encoding] = zlib.compress(last[1], 1, wbits=31)
            return last[2][encoding]
