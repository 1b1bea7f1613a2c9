"""Operations: the status the API reports, the health check and the Prometheus metrics (``/metrics``)."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

from crawlsched import __version__, render, timing
from crawlsched.errors import CrawlschedError
from crawlsched.model import Job, ScheduleKind
from crawlsched.state import COUNTED_OUTCOMES, HISTOGRAMS, State
from crawlsched.web.guards import _url_host

if TYPE_CHECKING:
    from crawlsched.daemon import Daemon

HEALTH_STALE = 90.0  # three daemon heartbeats (every 30 s); seconds without a heartbeat after which /healthz says the loop is stuck


def status_dict(daemon: Daemon, now: datetime, bind: tuple[str, int]) -> dict[str, Any]:
    """``crawlsched status --json``'s shape (``render.status_dict``), seen from inside the daemon."""
    running = bool(daemon.started and not daemon.stopping)
    row = daemon.state.daemon() if running else None
    config_error, jobfile = daemon.config_error, None
    try:
        jobfile = daemon.store.load()
    except CrawlschedError as exc:
        config_error = config_error or str(exc)
    states = daemon.state.job_states([j.id for j in jobfile.jobs]) if jobfile is not None and not (row and row.get("next_job")) else {}
    host, port = bind
    return render.status_dict(
        row, jobfile, now, states=states, running=running, pid=os.getpid() if running else None,
        http=f"http://{_url_host(host)}:{port}", config_ok=config_error is None, config_error=config_error,
        job_count=len(jobfile.jobs) if jobfile is not None else len(daemon.jobs),
        jobs_file=str(daemon.store.path), home=str(daemon.home))


def health_problem(daemon: Daemon, now: float) -> str | None:
    """Why the scheduler is not healthy, or None: the loop must be alive and the job file applied."""
    if not daemon.started:
        return "the scheduler loop has not started"
    if daemon.stopping:
        return "the scheduler is stopping"
    try:
        row = daemon.state.daemon() or {}
    except Exception as exc:
        return f"the state database cannot be read ({type(exc).__name__})"
    beat = row.get("heartbeat")
    if beat is None or now - beat > HEALTH_STALE:
        age = "never" if beat is None else f"{now - beat:.0f} s ago"
        return f"the scheduler loop looks stuck: its last heartbeat was {age}"
    if daemon.config_error:
        return f"the job file is not applied: {daemon.config_error}"
    return None


class DaemonCollector:
    """The ``/metrics`` families (SPEC §8), read fresh at each scrape by ``prometheus_client``.

    A scrape costs O(jobs), never O(history): the per-job counters and the
    histograms are running totals that the state database keeps in the same
    transaction as each history row (migration 006); the jobs and their next
    fires are the loop's own dicts, copied whole (one C-level copy each, under
    the GIL). It reads through a connection of its own, so it never waits for
    (nor holds) the lock the loop and the attempts write through; SQLite's WAL
    lets it read while they write.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._reader: State | None = None
        self._reader_ino: int | None = None
        self._lock = threading.Lock()
        self._intervals: dict[str, tuple[Job, float]] = {}

    def _state(self) -> State:
        """The reader's own connection, reopened when the daemon replaced a corrupt file."""
        path = self.daemon.state.path
        ino = os.stat(path).st_ino
        if self._reader is None or ino != self._reader_ino:
            if self._reader is not None:
                self._reader.close()
            self._reader = State(path).open()
            self._reader_ino = ino
        return self._reader

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # one scrape at a time: they share the reader
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        now = daemon.clock()
        jobs = list(daemon.jobs.values())
        planned = dict(daemon.planned)
        try:
            state = self._state()
            gauges = state.metric_gauges()
            counters = {r["job_id"]: r for r in state.metric_counters()}
            histograms = state.metric_histograms()
        except Exception:  # a broken database: say the daemon is not healthy, nothing else
            gauges, counters, histograms = None, {}, {}
        beat = gauges["heartbeat"] if gauges else None
        alive = bool(daemon.started and not daemon.stopping and beat is not None and now - beat <= HEALTH_STALE)

        yield _gauge("crawlsched_up", "1 while the scheduler loop's heartbeat is fresh (at most 90 s old), else 0.",
                     1 if alive else 0)
        yield _gauge("crawlsched_heartbeat_timestamp_seconds", "When the scheduler loop last wrote its heartbeat.",
                     beat or 0)
        info = GaugeMetricFamily("crawlsched_build_info", "The running crawlsched's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield _gauge("crawlsched_jobs", "Jobs the daemon runs (its last good job file).", len(jobs))
        yield _gauge("crawlsched_config_reload_success", "1 when the job file as it is now is applied, 0 when it is broken.",
                     0 if daemon.config_error else 1)
        if gauges is not None:
            yield _gauge("crawlsched_retries_pending", "Failed attempts waiting for their retry.", gauges["retries_pending"])
            yield _gauge("crawlsched_attempts_running", "Attempts running now (this daemon's and `crawlsched run`'s).",
                         gauges["attempts_running"])
        pool = daemon._pool_size or (daemon.defaults.max_concurrent if daemon.defaults else 0)
        yield _gauge("crawlsched_pool_size", "Attempts that can run at once (max_concurrent).", pool)

        attempts = CounterMetricFamily("crawlsched_attempts", "Finished attempts, by job and outcome.", labels=["job", "outcome"])
        skipped = CounterMetricFamily("crawlsched_fires_skipped", "Fires not run because the job's previous run was still going.",
                                      labels=["job"])
        missed = CounterMetricFamily("crawlsched_fires_missed", "Fires not run because the daemon was down (or the machine asleep).",
                                     labels=["job"])
        last_ok = GaugeMetricFamily("crawlsched_job_last_success_timestamp_seconds",
                                    "End of the job's newest successful attempt; 0 until the first.", labels=["job"])
        last_bad = GaugeMetricFamily("crawlsched_job_last_failure_timestamp_seconds",
                                     "End of the job's newest failed or interrupted attempt; 0 until the first.", labels=["job"])
        next_fire = GaugeMetricFamily("crawlsched_job_next_fire_timestamp_seconds",
                                      "The job's next scheduled fire; 0 when none (paused, finished).", labels=["job"])
        interval = GaugeMetricFamily("crawlsched_job_interval_seconds",
                                     "Seconds between the job's fires (for cron: between its next two), for staleness alerts.",
                                     labels=["job"])
        seen = GaugeMetricFamily("crawlsched_job_first_seen_timestamp_seconds", "When the job was added (first seen).",
                                 labels=["job"])
        for job in jobs:
            row = counters.get(job.id)
            label = [job.id]
            for outcome in COUNTED_OUTCOMES:
                attempts.add_metric([job.id, outcome], row[outcome] if row else 0)
            skipped.add_metric(label, row["skipped"] if row else 0)
            missed.add_metric(label, row["missed"] if row else 0)
            last_ok.add_metric(label, (row["last_success"] or 0) if row else 0)
            last_bad.add_metric(label, (row["last_failure"] or 0) if row else 0)
            next_fire.add_metric(label, planned.get(job.id, 0))
            interval.add_metric(label, self._interval(job, now))
            seen.add_metric(label, (row["first_seen"] or 0) if row else 0)
        yield from (attempts, skipped, missed, last_ok, last_bad, next_fire, interval, seen)

        for name, metric, doc in (
            ("attempt_duration", "crawlsched_attempt_duration_seconds", "How long finished attempts took."),
            ("fire_lateness", "crawlsched_fire_lateness_seconds", "Start of a scheduled first attempt after its fire time."),
        ):
            yield _histogram(metric, doc, HISTOGRAMS[name], histograms.get(name, []))

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
    """The registry behind ``GET /metrics``: the daemon's families plus the usual ``process_*``."""

    content_type = CONTENT_TYPE_PLAIN_0_0_4

    def __init__(self, daemon: Daemon) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(daemon))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
