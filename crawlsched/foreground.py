"""``crawlsched run JOB``: one job's whole chain in this process, with the daemon's rules and records.

The chain is claimed for its whole length (the daemon skips the job's fires meanwhile), rows a
killed ``run`` left are settled first, and each attempt goes through the daemon's
:class:`~crawlsched.runner.AttemptRunner`; retries wait in this process and are not saved for a
daemon to resume.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from crawlsched import logs, procs
from crawlsched.crawl.runs import end_run
from crawlsched.executor import AttemptOutcome, AttemptSpec
from crawlsched.model import Job, RunStatus, Trigger
from crawlsched.runner import AttemptRunner
from crawlsched.state import AttemptKey, Owner, Saved, State
from crawlsched.state.leases import HOST

__all__ = ["run_foreground"]


def run_foreground(job: Job, state: State, home: Path, log: logging.Logger, *,
                   progress: Callable[[str], None] = lambda _line: None,
                   wait: Callable[[float], bool] | None = None,
                   clock: Callable[[], float] = time.time,
                   cancel: threading.Event | None = None) -> AttemptOutcome:
    """``crawlsched run``: the whole chain in this process, the daemon's rules and records.

    Retries are not saved for the daemon to resume (trigger ``run``): if this
    process is stopped, the chain ends here. ``wait(seconds)`` returns True
    when the wait was cut short (Ctrl-C), which ends the chain. Setting
    ``cancel`` (the CLI's SIGTERM handler) stops a running attempt: its
    process group is stopped and the row closed as ``interrupted``.

    Each attempt is told once, by the log lines (the seed's ``Retry attempt: k/R``
    counter); ``progress`` gets one line when the chain ends, its outcome.
    """
    from crawlsched.errors import ChainBusy, JobBusy
    from crawlsched.state import CLAIM_RUN

    pid = os.getpid()
    ident = procs.identity(pid)
    owner = Owner(CLAIM_RUN, pid, ident)
    other = state.running_elsewhere(job.id, owner)
    if other is not None:
        raise JobBusy(f"job {job.id} is running in another process (pid {other.owner_pid}); not starting it twice")
    # The whole chain, its retry waits included, is claimed: the daemon skips (and records)
    # a fire of this job until it ends; a daemon's chain that runs or waits for its retry
    # makes this refuse. Checked and taken in one transaction; a dead owner's claim is stale.
    try:
        state.claim_chain(job.id, owner, clock())
    except ChainBusy as busy:
        raise JobBusy(f"job {job.id} is busy: {busy.claim.describe(job.timezone)}; not starting it twice"  # type: ignore[attr-defined]
                      " (runs of one job never overlap)") from None
    try:
        _settle_killed_runs(job, state, home, log, owner, clock())
        return _run_chain(job, state, home, log, progress, wait, clock, cancel)
    finally:
        state.release_chains([job.id], owner)


def _settle_killed_runs(job: Job, state: State, home: Path, log: logging.Logger, owner: Owner, now: float) -> None:
    """Rows of this job that a killed ``crawlsched run`` left ``running`` (SIGKILL, OOM: it could
    close nothing): its command's process group stopped when provably still that group, the row
    closed ``interrupted``, as a daemon's start does (crawlsched.recovery). A ``run`` chain saves
    no retry, so nothing follows. Other owners' rows, and other hosts', are the daemon's to settle."""
    for run in state.stale_running(owner, now):
        if run.job_id != job.id or run.trigger != Trigger.RUN.value or run.owner_host not in (None, HOST):
            continue  # another host's `run` is judged by its lease, and its processes are not ours to stop
        if procs.stop_orphan_group(run.child_pgid, run.child_ident):
            log.warning("job %s: attempt %d left its command running (process group %d); stopped it",
                        run.job_id, run.attempt, run.child_pgid)
        saved = state.finish_attempt(AttemptKey.of(run), status=RunStatus.INTERRUPTED.value, finished_at=now,
                                     message="interrupted: the process running it stopped")
        if saved is not Saved.FENCED:
            end_run(home, run.job_id, run.scheduled_for, run.trigger)
            log.warning("job %s: attempt %d/%d was left running by a `crawlsched run` that was killed; recorded"
                        " interrupted", run.job_id, run.attempt, run.max_attempts)


def _run_chain(job: Job, state: State, home: Path, log: logging.Logger, progress: Callable[[str], None],
               wait: Callable[[float], bool] | None, clock: Callable[[], float],
               cancel: threading.Event | None) -> AttemptOutcome:
    from crawlsched.state import CLAIM_RUN

    runner = AttemptRunner(state, home, log, clock=clock, persist_retries=False, claim=CLAIM_RUN)
    stop = cancel if cancel is not None else threading.Event()
    sleeper = wait or (lambda seconds: stop.wait(seconds))
    scheduled_for = round(clock(), 3)
    attempt = 1
    while True:
        result = runner.attempt(AttemptSpec.of(job, scheduled_for, attempt, "run"), cancel=cancel,
                                still_wanted=lambda: cancel is None or not cancel.is_set())
        if result.retry_due is None:
            break
        delay = max(0.0, result.retry_due - clock())
        if sleeper(delay) or (cancel is not None and cancel.is_set()):
            logs.log_final_failure(log, job.id, "interrupted")
            break
        attempt += 1
    tried = f" after {attempt} attempts" if attempt > 1 else ""
    progress(f"{result.label}{tried}: {result.message}")
    return result
