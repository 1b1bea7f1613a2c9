"""Operations: the status the API reports, the health check and the Prometheus metrics."""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from crawlsched import render, timing
from crawlsched.errors import CrawlschedError
from crawlsched.model import JobStatus
from crawlsched.web.guards import _url_host

if TYPE_CHECKING:
    from crawlsched.daemon import Daemon

HEALTH_STALE = 90.0  # three daemon heartbeats (every 30 s); seconds without a heartbeat after which /healthz says the loop is stuck
LATENESS_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


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
        jobs_file=str(daemon.store.path), home=str(daemon.home),
        scheduler_paused=None if jobfile is not None else daemon.scheduler_paused)


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


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def metrics_text(daemon: Daemon, now: datetime) -> str:
    """Prometheus text format: a few aggregate queries, no per-run work."""
    try:
        jobs = list(daemon.store.load().jobs)
    except CrawlschedError:
        jobs = list(daemon.jobs.values())  # a broken file: the daemon still runs the last good jobs
    states = daemon.state.job_states([j.id for j in jobs])
    by_status = {s.value: 0 for s in JobStatus}
    for job in jobs:
        by_status[render.view(job, states.get(job.id), now).status.value] += 1
    outcomes = daemon.state.read(
        "SELECT status, attempt > 0 AS attempt, count(*) AS n FROM runs"
        " WHERE status != 'running' GROUP BY status, attempt > 0")
    columns = ", ".join(f"sum(l <= {b})" for b in LATENESS_BUCKETS)
    late = daemon.state.read(
        f"SELECT {columns}, count(*), coalesce(sum(l), 0) FROM (SELECT max(started_at - scheduled_for, 0) AS l"
        " FROM runs WHERE attempt = 1 AND trigger = 'schedule' AND started_at IS NOT NULL)")[0]
    ids = {j.id for j in jobs}
    last_ok = [r for r in daemon.state.read(
        "SELECT job_id, max(finished_at) AS t FROM runs WHERE status = 'success' GROUP BY job_id") if r["job_id"] in ids]

    out = ["# HELP crawlsched_up 1 while the scheduler serves this endpoint.", "# TYPE crawlsched_up gauge", "crawlsched_up 1"]
    out += ["# HELP crawlsched_jobs Jobs in the job file, by status.", "# TYPE crawlsched_jobs gauge"]
    out += [f'crawlsched_jobs{{status="{s}"}} {n}' for s, n in by_status.items()]
    out += ["# HELP crawlsched_attempts_total Finished attempts, by outcome.", "# TYPE crawlsched_attempts_total counter"]
    counts = {o: 0 for o in render.ATTEMPT_OUTCOMES}
    not_run = {"skipped": 0, "missed": 0}
    for row in outcomes:
        (counts if row["attempt"] else not_run)[row["status"]] = row["n"]
    out += [f'crawlsched_attempts_total{{outcome="{_label(o)}"}} {n}' for o, n in counts.items()]
    out += ["# HELP crawlsched_fires_not_run_total Fires that did not run (skipped: overlap; missed: daemon down).",
            "# TYPE crawlsched_fires_not_run_total counter"]
    out += [f'crawlsched_fires_not_run_total{{status="{_label(s)}"}} {n}' for s, n in not_run.items()]
    out += ["# HELP crawlsched_fire_lateness_seconds Start of a scheduled first attempt after its fire time.",
            "# TYPE crawlsched_fire_lateness_seconds histogram"]
    for bound, count in zip(LATENESS_BUCKETS, late[: len(LATENESS_BUCKETS)]):
        out.append(f'crawlsched_fire_lateness_seconds_bucket{{le="{bound}"}} {count or 0}')
    total, total_sum = late[len(LATENESS_BUCKETS)], late[len(LATENESS_BUCKETS) + 1]
    out += [f'crawlsched_fire_lateness_seconds_bucket{{le="+Inf"}} {total}',
            f"crawlsched_fire_lateness_seconds_sum {_fmt(total_sum)}",
            f"crawlsched_fire_lateness_seconds_count {total}"]
    out += ["# HELP crawlsched_last_success_timestamp_seconds When each job's newest successful attempt ended.",
            "# TYPE crawlsched_last_success_timestamp_seconds gauge"]
    out += [f'crawlsched_last_success_timestamp_seconds{{job="{_label(r["job_id"])}"}} {_fmt(r["t"])}' for r in last_ok]
    out += ["# HELP crawlsched_config_reload_success 1 when the job file as it is now is applied, 0 when it is broken.",
            "# TYPE crawlsched_config_reload_success gauge",
            f"crawlsched_config_reload_success {0 if daemon.config_error else 1}"]
    return "\n".join(out) + "\n"
