"""What a start or a late wake owes, against the state database: interrupted attempts,
pending retries, missed fires recorded.

The daemon calls these with what they need (its state database, jobs,
anchors, the time) and applies what they return to its plan and chains
(which fires a stop leaves owed is ``chains.Chains.handled_until``). The
arithmetic of which fires were missed and which run is pure and lives in
``crawlsched.catchup``; here is what reads it from the store and writes it back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from crawlsched import logs, procs, timing
from crawlsched.catchup import CATCH_UP_ALL_LIMIT, CATCH_UP_WINDOW, CatchUpPlan, LastRun, Missed, Rowed, Seen
from crawlsched.model import Job, RunStatus, Trigger
from crawlsched.runner import end_run, run_dir
from crawlsched.state import CLAIM_DAEMON, AttemptKey, DaemonInfo, Owner, Retry, Saved, State

__all__ = ["CATCH_UP_ALL_LIMIT", "CATCH_UP_WINDOW", "CatchUpPlan", "Missed", "Rowed", "last_run",
           "record_missed", "retries_to_resume", "rows_after", "seen_jobs", "settle_stale_runs"]


def record_missed(state: State, log: logging.Logger, missed: Missed, now: float) -> None:
    saved = state.record_not_run(missed.job_id, missed.last, RunStatus.MISSED.value, missed.message, now=now,
                                 missed_count=missed.count, first_missed=missed.first, last_missed=missed.last)
    if saved is not Saved.FENCED:  # a daemon that no longer leads: the leader records it (the store said so)
        log.warning("job %s: %s", missed.job_id, missed.message)


def settle_stale_runs(state: State, jobs: Mapping[str, Job], home: Path, pid: int, now: float, log: logging.Logger,
                      *, queued: bool = True) -> None:
    """Finish the running rows a dead daemon left: complete, or interrupted (with a retry if one is left).

    ``queued`` False (executor = "workers"): rows that went through the queue are left to the
    executor, which settles them when their worker's lease lapsed, and whose outcome comes back to
    the chain the leader adopted (crawlsched.workers.executor), so their retry runs as in a live turn."""
    from crawlsched.crawl import bodies_complete, url_output

    for run in state.stale_running(Owner(CLAIM_DAEMON, pid, procs.identity(pid))):
        if not queued and run.queue_job is not None:
            continue
        if procs.stop_orphan_group(run.child_pgid, run.child_ident):
            # Killed outright (SIGKILL, OOM) outside systemd, the old daemon left its command
            # running; stop it before the chain's next attempt could run beside it.
            log.warning("job %s: attempt %d left its command running (process group %d); stopped it",
                        run.job_id, run.attempt, run.child_pgid)
        job = jobs.get(run.job_id)
        if job is not None and job.urls and bodies_complete(job.urls, run_dir(home, job, run.scheduled_for, run.trigger)):
            # The rename of the last body is the commit point: the attempt did succeed.
            state.finish_attempt(AttemptKey.of(run), status=RunStatus.SUCCESS.value, finished_at=now,
                                 message="completed before the daemon stopped (all bodies in place)",
                                 output=url_output(job.urls, run_dir(home, job, run.scheduled_for, run.trigger)))
            log.info("job %s: attempt %d found complete after a restart", run.job_id, run.attempt)
            continue
        retry = None
        # A `crawlsched run` chain is that process's own (its retries are never saved): it ends with it.
        if job is not None and not job.paused and run.attempt < job.max_attempts and run.trigger != "run":
            retry = Retry(job.id, run.scheduled_for, run.attempt + 1, job.max_attempts, now, run.trigger)
        state.finish_attempt(AttemptKey.of(run), status=RunStatus.INTERRUPTED.value, finished_at=now,
                             message="interrupted: the process running it stopped", retry=retry)
        if retry is not None:
            log.warning("job %s: attempt %d/%d was interrupted (the process running it stopped or was killed);"
                        " the chain continues", run.job_id, run.attempt, run.max_attempts)
        else:  # the chain ends failed: its one ERROR line (SPEC §6)
            end_run(home, run.job_id, run.scheduled_for, run.trigger)  # a body it was writing: nobody finishes it
            logs.log_final_failure(log, run.job_id, f"attempt {run.attempt}/{run.max_attempts} was interrupted:"
                                   " the process running it stopped")


def retries_to_resume(state: State, jobs: Mapping[str, Job], anchors: Mapping[str, float], now: float,
                      log: logging.Logger, home: Path | None = None, saved: list[Retry] | None = None) -> list[Retry]:
    """The saved retries that still stand; the others (job gone, paused, overtaken by its next run) are cleared.

    A retry never runs after the job's next regular fire (SPEC §4): when that fire is
    already due at the start, the chain ends as it is ("next run is due") and the
    catch-up accounts for the newer fires like for any other job. ``saved``: only these
    retries (the leader adopting those another daemon saved), not all the state's.
    """
    keep = []
    for retry in state.retries() if saved is None else saved:
        job = jobs.get(retry.job_id)
        if job is None or job.paused:
            state.clear_retry(retry.job_id)
            if home is not None:
                end_run(home, retry.job_id, retry.scheduled_for, retry.trigger)
            why = "removed from the job file" if job is None else "paused"
            logs.log_final_failure(log, retry.job_id, f"{why} while its retry (attempt {retry.next_attempt}/"
                                   f"{retry.max_attempts}) waited; the retry is cancelled")
            continue
        superseded = timing.next_fire(job, timing.from_epoch(retry.scheduled_for), timing.from_epoch(anchors.get(job.id)))
        if retry.trigger != Trigger.MANUAL and superseded is not None and superseded.timestamp() <= now:
            state.clear_retry(job.id)
            _note_next_run_due(state, retry)
            if home is not None:
                end_run(home, job.id, retry.scheduled_for, retry.trigger)
            logs.log_final_failure(log, job.id, f"its pending retry (attempt {retry.next_attempt}/{retry.max_attempts})"
                                   " is dropped: the next run is due")
            continue
        keep.append(retry)
    return keep


def _note_next_run_due(state: State, retry: Retry) -> None:
    """Say on the chain's last attempt row why no further attempt follows."""
    state.note_chain_end(retry.job_id, retry.scheduled_for, retry.next_attempt - 1, " (next run is due)")


def seen_jobs(state: State) -> dict[str, Seen]:
    """What the store knows of each job (first sight by a daemon, anchor, last fire), as the planner takes it."""
    return {job_id: Seen(row.daemon_seen, row.anchor, row.last_fire) for job_id, row in state.seen().items()}


def last_run(previous: DaemonInfo | None) -> LastRun | None:
    """The previous daemon's row (``State.daemon_started``), as the catch-up needs it."""
    if previous is None:
        return None
    return LastRun(previous.handled_until, previous.stopped_at, previous.heartbeat)


def rows_after(state: State, previous: Mapping[str, Any] | None) -> dict[str, Rowed]:
    """Per job, the rows of fires scheduled after the previous daemon's ``handled_until``."""
    handled = previous.get("handled_until") if previous else None
    if handled is None:
        return {}
    instants: dict[str, set[float]] = {}
    ranges: dict[str, list[tuple[float, float]]] = {}
    for row in state.fire_marks_after(handled - 1e-6):
        if row.status == RunStatus.MISSED.value and row.first_missed is not None:
            ranges.setdefault(row.job_id, []).append((row.first_missed, row.last_missed))
        else:
            instants.setdefault(row.job_id, set()).add(row.scheduled_for)
    return {j: Rowed(frozenset(instants.get(j, ())), tuple(ranges.get(j, ()))) for j in {*instants, *ranges}}

