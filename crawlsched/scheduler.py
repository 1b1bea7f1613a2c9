"""The scheduler, driven by calls: what is due, handing it to the executor, and what follows.

``Scheduler`` holds the plan (the heap of next fires and pending retries, one
entry per job: a turn costs nothing that grows with the number of jobs), the
chains in progress (``crawlsched.chains``) and the executor
(``crawlsched.executor``): ``fire_due(now)`` hands every due attempt out as an
``AttemptSpec``, ``collect()`` takes the ``AttemptOutcome``\\ s back,
``take_requests`` fires run-now requests. It has no lock, signals, wait or
duties and never reads the clock on its own schedule:
``crawlsched.daemon.Daemon`` runs it as a process's loop. Its base classes:
``crawlsched.applying.Applying`` (``_apply``: what a new job file changed is
re-planned, a start's downtime caught up) and ``crawlsched.leftovers.Leftovers``
(what it takes over from a dead daemon or a replaced state file).
"""

from __future__ import annotations

import gc
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any, Callable

from crawlsched import catchup, recovery, timing
from crawlsched.chains import Chain, Chains, Next
from crawlsched.executor import AttemptSpec, Executor, OutcomeKind
from crawlsched.applying import Applying
from crawlsched.leftovers import Leftovers
from crawlsched.local_executor import LEAD, LocalExecutor
from crawlsched.model import Job, RunStatus, Trigger
from crawlsched.plan import Entry, EntryKind, Planner
from crawlsched.runner import AttemptRunner
from crawlsched.state import CLAIM_DAEMON, State
from crawlsched.store import JobStore

__all__ = ["FIRE", "RETRY", "Scheduler"]

FIRE, RETRY = EntryKind.FIRE, EntryKind.RETRY


class Scheduler(Applying, Leftovers):
    """The jobs of one home, their plan and chains, and the executor their attempts go to."""

    def __init__(self, store: JobStore, state: State, home: Path, log: logging.Logger, *,
                 clock: Callable[[], float], monotonic: Callable[[], float], executor: Executor | None,
                 environ: dict[str, str] | None, wake: Callable[[], None]) -> None:
        self.store, self.state, self.home, self.log = store, state, Path(home), log
        self.clock, self.monotonic = clock, monotonic
        self.pid = os.getpid()
        self.runner = AttemptRunner(state, home, log, clock=clock, environ=environ, claim=CLAIM_DAEMON)
        self.chains = Chains(state, home, log, self.runner.owner)
        self._wake = wake  # what the executor calls when an outcome is ready
        self._executor = executor
        self._pool_size = 0  # the size of the scheduler's own pool (0 while the executor is an injected one)
        self._executor_started = False
        self.planner = Planner()  # jobs, next fires, anchors, catch-up backlogs and the heap (pure: crawlsched.plan)
        self.defaults = None
        self.started = False
        self.fired = 0
        # Every fire due at or before this instant was handed out (or accounted for at start):
        # the ``now`` of the last ``fire_due``. A stop records it as ``handled_until``, so the
        # fires that come due while running attempts get their grace period count as downtime.
        self.fired_until: float | None = None
        # The oldest fire not run because the (PostgreSQL) state was lost when it was due (no row).
        self.deferred_since: float | None = None

    @property
    def executor(self) -> Executor:
        """The injected executor, or the daemon's warm pool of max_concurrent threads (resized when that changes)."""
        size = self.defaults.max_concurrent if self.defaults else 8
        if self._executor is None and getattr(self.defaults, "executor", "local") == "workers":
            from crawlsched.workers.executor import WorkersExecutor  # PostgreSQL only: imported only then

            self._executor = WorkersExecutor(self.state, self.log)
        if self._executor is None:
            # Fires handed out LEAD seconds ahead, on one host's state only: on a state shared by daemons,
            # a leader frozen (SIGSTOP) with rows written ahead would hold its jobs until their leases lapse.
            self._executor = LocalExecutor(size, lead=0.0 if getattr(self.state, "shared", False) else LEAD)
            self._pool_size = size
        if self.defaults is not None and hasattr(self._executor, "grace_period"):
            self._executor.grace_period = self.defaults.grace_period  # carried to the workers with each attempt
        elif self._pool_size and size != self._pool_size:
            self._executor.resize(size)  # running attempts finish; the pool has `size` workers from now on
            self._pool_size = size
        if not self._executor_started:
            self._executor_started = True
            self._executor.start(self.runner, self._wake)
        return self._executor

    # The planner's tables, as the loop, the web API and tests read them (``Planner`` owns them).

    @property
    def jobs(self) -> dict[str, Job]:
        return self.planner.jobs

    @property
    def heap(self) -> list[Entry]:
        return self.planner.heap

    @property
    def planned(self) -> dict[str, float]:
        return self.planner.planned

    @property
    def gen(self) -> dict[str, int]:
        return self.planner.gen

    @property
    def anchors(self) -> dict[str, float]:
        return self.planner.anchors

    @property
    def last_fire(self) -> dict[str, float]:
        return self.planner.last_fire

    @property
    def backlog(self) -> dict[str, deque[tuple[float, str]]]:
        return self.planner.backlog

    @property
    def scheduler_paused(self) -> bool:
        """``[defaults] paused``: no scheduled fire, no catch-up, no retry; a run-now still runs."""
        return bool(self.defaults is not None and self.defaults.paused)

    def _clean_top(self) -> None:
        self.planner.clean_top(self.chains)

    def _current(self, entry: Entry) -> bool:
        return self.planner.current(entry, self.chains)

    def fire_due(self, now: float) -> int:
        """Fire every entry due at ``now``. Attempts are submitted first, next fires planned after."""
        self.fired_until = now if self.fired_until is None else max(self.fired_until, now)
        planner = self.planner
        # An executor with a lead (the workers' queue) gets the fires due within it now: each attempt
        # carries its instant and does not begin before it (crawlsched.workers.executor.QUEUE_AHEAD).
        due = planner.pop_due(now, self.chains, self.lead)
        replan: list[Job] = []
        # Gated even when only one is due: the loop then waits for its worker to take its start
        # time before planning the next fire (that worker would wait for the GIL meanwhile).
        burst = bool(due)
        collecting = len(due) > 1 and gc.isenabled()
        if collecting:
            gc.disable()  # no collection while a burst is handed out (the allocations would trigger some)
        try:
            if burst:
                self.executor.begin_burst()  # its attempts start together (local_executor.Burst)
            # The entries are off the heap: one that fails is logged and the others still fire
            # and get their next fire planned (a failing entry is not retried in a tight loop).
            for scheduled, _, kind, job_id, _token in due:
                job = self.jobs.get(job_id)
                try:
                    if job is None:
                        continue
                    if kind is RETRY:
                        chain = self.chains[job_id]
                        chain.retry_due = None
                        self._submit(job, chain)
                        continue
                    planner.take(job_id)
                    replan.append(job)
                    scheduled = self._coalesce(job, scheduled, now)
                    planner.fired(job_id, scheduled)
                    self.fire(job, scheduled, Trigger.SCHEDULE)
                except Exception:
                    self.log.exception("job %s: its %s failed inside crawlsched", job_id, "retry" if kind is RETRY else "fire")
                    chain = self.chains.get(job_id)
                    if chain is not None and not chain.handed and chain.retry_due is None:
                        self.chains.end(job_id)  # never handed over: a later fire starts a new chain
        finally:
            if burst:
                self.executor.end_burst()
            if collecting:
                gc.enable()
        for job in replan:
            try:
                planner.plan(job, now)
            except Exception:
                self.log.exception("job %s: planning its next fire failed", job.id)
        if due:
            self.fired += len(due)
        return len(due)

    @property
    def lead(self) -> float:
        """Seconds before its instant a fire is handed out: the executor's ``lead`` (0: at its instant)."""
        return float(getattr(self._executor, "lead", 0.0) or 0.0) if self._executor is not None else 0.0

    def _coalesce(self, job: Job, scheduled: float, now: float) -> float:
        """Woken late (suspend, clock jump): run the newest due fire once; the older ones are missed."""
        if now - scheduled < 1.0:
            return scheduled  # fires are at least 1 s apart: nothing else can be due yet
        newest, missed = catchup.coalesce(job, scheduled, now, self.planner.anchors.get(job.id))
        if missed is not None:
            recovery.record_missed(self.state, self.log, missed, now)
        return newest

    def fire(self, job: Job, scheduled_for: float, trigger: str) -> bool:
        """Start a run of ``job``, unless one is still going: then the fire is recorded as skipped."""
        chain = self.chains.get(job.id)
        if chain is not None:
            reason = "a retry is pending" if chain.retry_due is not None else "the previous run is still running"
            self.state.record_not_run(job.id, scheduled_for, RunStatus.SKIPPED.value,
                                      f"skipped: {reason} (runs of one job never overlap)", now=self.clock())
            self.log.warning("job %s: fire for %s skipped: %s", job.id,
                             timing.format_local(timing.from_epoch(scheduled_for), job.timezone), reason)
            return False
        self._submit(job, self.chains.begin(job.id, scheduled_for, trigger))
        return True

    def _submit(self, job: Job, chain: Chain) -> None:
        """Hand the chain's next attempt to the executor, as data; its outcome comes back through ``collect``."""
        self.executor.submit(
            AttemptSpec(job.id, chain.scheduled_for, chain.attempt, job.max_attempts, chain.trigger, job,
                        self.anchors.get(job.id)))
        chain.handed = True

    def collect(self, rearm: bool = True) -> None:
        """Take the outcomes the executor has: re-arm a retry, or end the chain (and fire the next catch-up)."""
        if self._executor is None:
            return
        for outcome in self._executor.results():
            decision, chain = self.chains.follow(outcome, self._wants_attempt, rearm)
            if outcome.kind is OutcomeKind.DEFERRED:  # the state was lost: owed, handled as downtime once it is back
                self.deferred_since = min(outcome.scheduled_for, self.deferred_since or outcome.scheduled_for)
                continue
            if decision is Next.RETRY:
                self.planner.push_retry(outcome.job_id, chain.token, chain.retry_due)
            elif rearm and decision in (Next.END, Next.VOID):
                self._next_from_backlog(outcome.job_id)

    def release_ended(self) -> None:
        """Take the outcomes there are (no retry re-armed: a stop) and release the claims of the chains they ended."""
        self.collect(rearm=False)
        self.chains.release_claims()

    def _wanted(self, job_id: str) -> bool:
        """The job is still planned: in the job file, not paused, the scheduler not paused."""
        job = self.jobs.get(job_id)
        return job is not None and not job.paused and not self.scheduler_paused

    def _wants_attempt(self, job_id: str, attempt: int) -> bool:
        job = self.jobs.get(job_id)
        return self._wanted(job_id) and job is not None and attempt <= job.max_attempts

    def take_requests(self) -> None:
        """Run-now requests left by the CLI or the web API: each fires its job now (trigger ``manual``)."""
        now = self.clock()
        for _, job_id, _ in self.state.take_requests(now):
            job = self.jobs.get(job_id)
            if job is None:
                self.log.warning("run-now: no job %s", job_id)
                continue
            self.log.info("run-now: firing job %s", job_id)
            self.fire(job, round(now, 3), Trigger.MANUAL)

    def handled_until(self, now: float) -> float:
        """Fires due after the last ``fire_due`` were not handed out (a stop's grace period, a
        turn still to come), nor those still waiting for a worker: the next start must treat
        them as downtime."""
        until = now if self.fired_until is None else min(now, self.fired_until)
        # A catch-up backlog's fires (``catch_up = "all"``) have no row until their turn comes.
        waiting = self.planner.backlog_times()
        unstarted = self._executor.unstarted() if self._executor is not None else ()
        return self.chains.handled_until(min([until, *waiting]), unstarted)

    def next_info(self) -> dict[str, Any]:
        self._clean_top()
        if not self.heap:
            return {"next_job": None, "next_due": None}
        return {"next_job": self.heap[0][3], "next_due": self.heap[0][0]}
