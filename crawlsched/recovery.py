"""What a start or a late wake owes: interrupted attempts, pending retries, missed fires.

The daemon calls these with what they need (its state database, jobs,
anchors, the time) and applies what they return to its heap and chains;
the arithmetic of which fires were missed, which run and what the history
says about it lives here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from crawlsched import logs, procs, timing
from crawlsched.model import CatchUp, Job, RunStatus
from crawlsched.runner import run_dir
from crawlsched.state import Retry, State

if TYPE_CHECKING:
    from crawlsched.daemon import Chain

CATCH_UP_WINDOW = 24 * 3600.0
CATCH_UP_ALL_LIMIT = 100


@dataclass(frozen=True)
class Missed:
    """One history row for fires that never ran: how many, the first and last, and why."""

    job_id: str
    count: int
    first: float
    last: float
    message: str


@dataclass(frozen=True)
class CatchUpPlan:
    """After a downtime: the job's last fire is now ``newest``; ``runs`` are fired now, oldest first."""

    newest: float
    runs: list[float]
    missed: Missed | None


def record_missed(state: State, log: logging.Logger, missed: Missed, now: float) -> None:
    state.record_not_run(missed.job_id, missed.last, RunStatus.MISSED.value, missed.message, now=now,
                         missed_count=missed.count, first_missed=missed.first, last_missed=missed.last)
    log.warning("job %s: %s", missed.job_id, missed.message)


def settle_stale_runs(state: State, jobs: Mapping[str, Job], home: Path, pid: int, now: float, log: logging.Logger) -> None:
    """Finish the running rows a dead daemon left: complete, or interrupted (with a retry if one is left)."""
    from crawlsched.crawl import bodies_complete, url_output

    for run in state.stale_running(pid):
        if procs.stop_orphan_group(run.child_pgid, run.child_ident):
            # Killed outright (SIGKILL, OOM) outside systemd, the old daemon left its command
            # running; stop it before the chain's next attempt could run beside it.
            log.warning("job %s: attempt %d left its command running (process group %d); stopped it",
                        run.job_id, run.attempt, run.child_pgid)
        job = jobs.get(run.job_id)
        if job is not None and job.urls and bodies_complete(job.urls, run_dir(home, job, run.scheduled_for, run.trigger)):
            # The rename of the last body is the commit point: the attempt did succeed.
            state.finish_attempt(run.id, status=RunStatus.SUCCESS.value, finished_at=now,
                                 message="completed before the daemon stopped (all bodies in place)",
                                 output=url_output(job.urls, run_dir(home, job, run.scheduled_for, run.trigger)))
            log.info("job %s: attempt %d found complete after a restart", run.job_id, run.attempt)
            continue
        retry = None
        # A `crawlsched run` chain is that process's own (its retries are never saved): it ends with it.
        if job is not None and not job.paused and run.attempt < job.max_attempts and run.trigger != "run":
            retry = Retry(job.id, run.scheduled_for, run.attempt + 1, job.max_attempts, now, run.trigger)
        state.finish_attempt(run.id, status=RunStatus.INTERRUPTED.value, finished_at=now,
                             message="interrupted: the process running it stopped", retry=retry)
        if retry is not None:
            log.warning("job %s: attempt %d/%d was interrupted by a stop; the chain continues", run.job_id,
                        run.attempt, run.max_attempts)
        else:  # the chain ends failed: its one ERROR line (SPEC §6)
            logs.log_final_failure(log, run.job_id, f"attempt {run.attempt}/{run.max_attempts} was interrupted:"
                                   " the process running it stopped")


def retries_to_resume(state: State, jobs: Mapping[str, Job], anchors: Mapping[str, float], now: float,
                      log: logging.Logger) -> list[Retry]:
    """The saved retries that still stand; the others (job gone, paused, overtaken by its next run) are cleared.

    A retry never runs after the job's next regular fire (SPEC §4): when that fire is
    already due at the start, the chain ends as it is ("next run is due") and the
    catch-up accounts for the newer fires like for any other job.
    """
    keep = []
    for retry in state.retries():
        job = jobs.get(retry.job_id)
        if job is None or job.paused:
            state.clear_retry(retry.job_id)
            why = "removed from the job file" if job is None else "paused"
            logs.log_final_failure(log, retry.job_id, f"{why} while its retry (attempt {retry.next_attempt}/"
                                   f"{retry.max_attempts}) waited; the retry is cancelled")
            continue
        superseded = timing.next_fire(job, timing.from_epoch(retry.scheduled_for), timing.from_epoch(anchors.get(job.id)))
        if retry.trigger != "manual" and superseded is not None and superseded.timestamp() <= now:
            state.clear_retry(job.id)
            _note_next_run_due(state, retry)
            logs.log_final_failure(log, job.id, f"its pending retry (attempt {retry.next_attempt}/{retry.max_attempts})"
                                   " is dropped: the next run is due")
            continue
        keep.append(retry)
    return keep


def _note_next_run_due(state: State, retry: Retry) -> None:
    """Say on the chain's last attempt row why no further attempt follows."""
    note = " (next run is due)"
    with state.write() as c:
        c.execute("UPDATE runs SET message = coalesce(message, '') || ? WHERE job_id = ? AND scheduled_for = ? AND attempt = ?"
                  " AND status != 'running' AND instr(coalesce(message, ''), 'next run is due') = 0",
                  (note, retry.job_id, retry.scheduled_for, retry.next_attempt - 1))


def catch_up(job: Job, now: float, previous: Mapping[str, Any], seen: Any, anchor: float | None, *,
             heartbeat_slack: float) -> CatchUpPlan | None:
    """Fires missed while the daemon was down: some are run (the catch-up policy), the rest recorded missed."""
    if seen is None or seen["daemon_seen"] is None:
        return None
    handled = previous.get("handled_until")
    if handled is None:  # a daemon of an older version: assume the last stretch before its heartbeat
        handled = (previous.get("stopped_at") or previous.get("heartbeat") or now) - heartbeat_slack
    # Fires at or before `handled` have rows; the job's last_fire covers those since.
    lo = max(seen["daemon_seen"], seen["last_fire"] or 0.0, handled - 1e-6)
    if lo >= now:
        return None
    anchor_dt = timing.from_epoch(anchor)
    lo_dt, now_dt = timing.from_epoch(lo), timing.from_epoch(now)
    count = timing.count_fires(job, lo_dt, now_dt, anchor_dt)
    if count == 0:
        return None
    first = timing.next_fire(job, lo_dt, anchor_dt)
    newest = timing.prev_fire(job, now_dt, anchor_dt)
    assert first is not None and newest is not None
    runs: list[float] = []
    if job.catch_up is CatchUp.LATEST and now - newest.timestamp() <= CATCH_UP_WINDOW:
        runs = [newest.timestamp()]
    elif job.catch_up is CatchUp.ALL:
        t: datetime | None = newest
        while t is not None and len(runs) < min(count, CATCH_UP_ALL_LIMIT):
            runs.append(t.timestamp())
            t = timing.prev_fire(job, t - timing.timedelta(microseconds=1), anchor_dt)
        runs.reverse()
    missed = None
    count_missed = count - len(runs)
    if count_missed > 0:
        last_missed = timing.prev_fire(job, timing.from_epoch(runs[0]) - timing.timedelta(microseconds=1), anchor_dt) if runs else newest
        assert last_missed is not None
        fmt = lambda d: timing.format_local(d, job.timezone)  # noqa: E731
        message = (f"missed {count_missed} fire{'s' if count_missed != 1 else ''} while the daemon was down"
                   f" ({fmt(first)} to {fmt(last_missed)}); catch_up = {job.catch_up.value}")
        missed = Missed(job.id, count_missed, first.timestamp(), last_missed.timestamp(), message)
    return CatchUpPlan(newest.timestamp(), runs, missed)


def coalesce(job: Job, scheduled: float, now: float, anchor: float | None) -> tuple[float, Missed | None]:
    """Woken late (suspend, clock jump): the fire to run (the newest one due) and the older ones, missed."""
    anchor_dt = timing.from_epoch(anchor)
    newest = timing.prev_fire(job, timing.from_epoch(now), anchor_dt)
    if newest is None or newest.timestamp() <= scheduled:
        return scheduled, None
    count = timing.count_fires(job, timing.from_epoch(scheduled) - timing.timedelta(microseconds=1),
                               newest - timing.timedelta(microseconds=1), anchor_dt)
    missed = None
    if count > 0:
        last_missed = timing.prev_fire(job, newest - timing.timedelta(microseconds=1), anchor_dt)
        fmt = lambda t: timing.format_local(timing.from_epoch(t) if isinstance(t, float) else t, job.timezone)  # noqa: E731
        message = f"missed {count} fire{'s' if count != 1 else ''} ({fmt(scheduled)} to {fmt(last_missed)}): the daemon woke late"
        last = last_missed.timestamp() if last_missed else scheduled
        missed = Missed(job.id, count, scheduled, last, message)
    return newest.timestamp(), missed


def handled_until(chains: Iterable[Chain], now: float) -> float:
    """Every fire due before this has a row or a saved retry; a fire still queued for a
    worker has neither, so a daemon killed now must catch it up at the next start."""
    waiting = [c.scheduled_for for c in chains if not c.begun and c.attempt == 1 and c.retry_due is None]
    return min([now, *waiting])
