"""The scheduler loop: wait until the earliest fire or retry is due, hand it to the executor, repeat.

The next fire of every job and every pending retry sit in one heap, so a turn
of the loop costs nothing that grows with the number of jobs. The loop waits
on a self-pipe (``crawlsched.waker``) until the earliest entry is due (at most
60 s, so a suspended machine or a changed clock is noticed); signals, the
job file's watch and finished attempts write a byte to it. An exception in one
step of a turn is logged and the loop goes on.

What the loop hands out is data: an ``AttemptSpec`` goes to the executor
(``crawlsched.executor``: threads here, workers elsewhere) and
``AttemptOutcome``\\ s come back through its ``results()``; what an outcome
means for its run is ``crawlsched.chains``. The job file's versions are
``crawlsched.reloads``, the periodic duties ``crawlsched.duties``, what a start
owes (interrupted attempts, retries, missed fires) ``crawlsched.recovery``.
The clock, the monotonic clock and the executor are injected: tests drive
single turns with a fake clock and an inline executor.
"""

from __future__ import annotations

import heapq
import gc
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from crawlsched import __version__, recovery, systemd, timing
from crawlsched.chains import Chain, Chains, Next
from crawlsched.duties import HEARTBEAT_SLACK, Duties
from crawlsched.errors import DaemonLockError
from crawlsched.executor import AttemptSpec, Executor, InlineExecutor
from crawlsched.homelock import HomeLock
from crawlsched.local_executor import LocalExecutor
from crawlsched.memory import settle, settle_memory, trim_memory
from crawlsched.model import Job, JobFile, RunStatus, ScheduleKind
from crawlsched.reloads import Reloads
from crawlsched.retention import GUARD, Retention
from crawlsched.runner import AttemptRunner
from crawlsched.state import CLAIM_DAEMON, State, StorageUnavailable
from crawlsched.status import SystemdStatus, status_line
from crawlsched.store import JobStore
from crawlsched.waker import Waker

__all__ = ["Chain", "Daemon", "DaemonLockError", "Executor", "InlineExecutor", "LocalExecutor", "Waker", "settle_memory",
           "trim_memory"]

FIRE, RETRY = "fire", "retry"
MAX_WAIT = 60.0  # re-check the wall clock at least this often
JUMP_TOLERANCE = 2.0  # seconds of disagreement between wall and monotonic clocks that count as a jump
WAKE_SLACK = 0.002  # wake a little after a duty is due, never just before it (that costs a second wake)
STEP_BACKOFF = 1.0  # seconds before the next turn after a step of the loop failed
FLUSH_EVERY = 1.0  # seconds between tries to save held writes while the storage is in trouble
CANCEL_WAIT = 10.0  # seconds, in all, for cancelled attempts to end after the grace period


class Daemon:
    """The scheduler of one home folder."""

    def __init__(self, store: JobStore, state: State, home: Path, log: logging.Logger, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 executor: Executor | None = None, grace: float | None = None,
                 environ: dict[str, str] | None = None, notify: Callable[[str], bool] = systemd.notify,
                 duties: bool = True) -> None:
        self.store, self.state, self.home, self.log = store, state, Path(home), log
        self.clock, self.monotonic, self.grace, self.notify = clock, monotonic, grace, notify
        self.pid = os.getpid()
        self.runner = AttemptRunner(state, home, log, clock=clock, environ=environ, claim=CLAIM_DAEMON)
        self.retention = Retention(state, home, log, clock=clock, monotonic=monotonic)
        self.reloads = Reloads(store, state, home, log, monotonic=monotonic, on_error=self._send_status)
        self.chains = Chains(state, home, log, CLAIM_DAEMON, self.pid)
        self._executor = executor
        self._pool_size = 0  # the size of the daemon's own pool (0 while the executor is an injected one)
        self._executor_started = False
        self.heap: list[tuple[float, int, str, str, int]] = []
        self.seq = itertools.count()
        self.jobs: dict[str, Job] = {}
        self.gen: dict[str, int] = {}
        self.planned: dict[str, float] = {}  # job id -> scheduled time of its FIRE entry
        self.anchors: dict[str, float] = {}
        self.last_fire: dict[str, float] = {}
        self.backlog: dict[str, deque[tuple[float, str]]] = {}
        self.wake = Waker()
        self.stopping = self.reload_requested = self.requests_pending = False
        self.defaults = None
        self.duties, self.use_duties, self.watch = Duties(self), duties, None
        self.offset: float | None = None
        self.started = self.failed_step = False
        self.lock = HomeLock(self.home)
        self.fired = 0
        self.http_url: str | None = None  # set by run_daemon when the web API is served
        self.wake_for_fire = False  # the next wake is for a fire or retry: wait precisely (Waker.wait)
        self.owns_process = False  # run() was called: the process is the daemon's (its GC, its signals)
        # Every fire due at or before this instant was handed out (or accounted for at start):
        # the ``now`` of the last ``fire_due``. A stop records it as ``handled_until``, so the
        # fires that come due while running attempts get their grace period count as downtime.
        self.fired_until: float | None = None
        self.flush_at = 0.0  # monotonic: the next try to save what the state database holds back
        self.replacements = 0  # corrupt state files replaced under us, as far as the loop has caught up
        self.status = SystemdStatus(notify)

    @property
    def config_error(self) -> str | None:
        """Why the job file as it is now is not applied (None when it is)."""
        return self.reloads.config_error

    # --- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Lock the home, recover what a dead daemon left, load the jobs and plan; then READY."""
        self.acquire_lock()
        self.state.open(recover_corrupt=True)
        jobfile = self.reloads.first()  # a bad file at start is fatal: JobFileError
        now = self.clock()
        previous = self.state.daemon_started(self.pid, socket.gethostname(), __version__, now)
        self._apply(jobfile, now, previous=previous)
        self.fired_until = now  # the catch-up accounted for everything due until now
        del jobfile
        self._settle_memory()
        self.executor  # noqa: B018 - build, start and warm the pool (max_concurrent) before the first fire
        if self.use_duties:
            from crawlsched import watch

            self.watch = watch.start(self.store.path, self._on_file_event)
        self._setup_duties()
        # Read both clocks together: `now` is from before recovery and planning, which can
        # take seconds, and that real time would read as a jump forward at the first turn.
        self.offset = self.clock() - self.monotonic()
        self.state.daemon_update(ready_at=self.clock(), config_ok=1, config_error=None, http=self.http_url,
                                 handled_until=self.handled_until(now), **self.next_info())
        self.reloads.keep_last_good()
        self.started = True
        self.notify("READY=1")
        self._send_status()
        self.log.info("crawlsched daemon ready: %d jobs, home %s (pid %d)", len(self.jobs), self.home, self.pid)

    def run(self) -> int:
        """Start, loop until SIGTERM/SIGINT, shut down gracefully. Returns the exit code."""
        self.owns_process = True
        self.install_signals()
        # Hand the GIL over more often than every 5 ms: the loop thread must get it
        # back quickly to dispatch a burst while workers run Python code.
        sys.setswitchinterval(0.0005)
        self.start()
        try:
            while not self.stopping:
                timeout = self.turn()
                if not self.stopping:
                    self.wake.wait(timeout, precise=self.wake_for_fire)
                    self.wake.clear()
        finally:
            code = self.shutdown()
        return code

    def turn(self) -> float:
        """One turn of the loop: notice jumps, reload, collect outcomes, fire what is due, duties.

        Returns how long to wait before the next turn.
        """
        self.failed_step = False
        self._step("noticing a clock jump", lambda: self._check_jump(self.clock()))
        if self.reload_requested:
            self.reload_requested = False
            self._step("reloading the job file", lambda: self.reload(force=True))
        if self.requests_pending:
            self.requests_pending = False
            self._step("reading run-now requests", self.take_requests)
        if self.reloads.due():
            self._step("reloading the job file", self.reload)
        if self.state.replaced != self.replacements:
            self.replacements = self.state.replaced
            self._step("restoring a replaced state database", self._restore_after_replace)
        if self.state.held and self.monotonic() >= self.flush_at:
            self.flush_at = self.monotonic() + FLUSH_EVERY
            self._step("saving held writes", self.state.flush_held)
        self._step("collecting finished attempts", self.collect)
        self._step("firing due jobs", lambda: self.fire_due(self.clock()))  # jobs first: a duty due at the same moment can wait
        if self.chains.ended:
            self._step("releasing the claims of ended chains", self.chains.release_claims)
        if self.started:
            self._step("telling systemd the status", self._send_status)  # only when it changed
        self._step("periodic duties", self.duties.run_pending)
        wait = self._step("planning the next wake", lambda: self._wait_time(self.clock()))
        if wait is None:
            return STEP_BACKOFF
        if self.failed_step:  # try again soon, but never in a tight loop
            return max(min(wait, STEP_BACKOFF), STEP_BACKOFF / 10)
        return wait

    def _step(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one step of a turn; an exception (a database error, a bug) is logged and the loop goes on."""
        try:
            return fn()
        except StorageUnavailable:
            self.failed_step = True  # the state database's episode is logged once, by the state
            return None
        except Exception:
            self.failed_step = True
            self.log.exception("daemon loop: %s failed; going on", what)
            return None

    def _wait_time(self, now: float) -> float:
        wait = MAX_WAIT
        self._clean_top()
        fire_wait = self.heap[0][0] - now if self.heap else None
        if fire_wait is not None:
            wait = min(wait, fire_wait)
        idle = self.duties.idle_seconds
        if idle is not None:
            wait = min(wait, max(0.0, idle) + WAKE_SLACK)
        if self.reloads.recheck_at is not None:
            wait = min(wait, max(0.0, self.reloads.recheck_at - self.monotonic()))
        if self.state.held:
            wait = min(wait, max(0.0, self.flush_at - self.monotonic()))
        if self._executor is not None and self._executor.has_results():
            wait = 0
        self.wake_for_fire = fire_wait is not None and fire_wait <= wait  # what wakes the loop is a fire
        return max(0.0, wait)

    def shutdown(self) -> int:
        """Stop firing; give running attempts the grace period; then record them interrupted.

        Attempts that have not begun are dropped first, so none starts during the grace
        period (``handled_until`` makes the next start catch them up). The running ones
        share one deadline; those still running then are interrupted and get at most
        ``CANCEL_WAIT`` seconds in all (systemd's TimeoutStopSec is 45 s).
        """
        self.notify("STOPPING=1")
        grace = self.grace if self.grace is not None else (self.defaults.grace_period if self.defaults else 30.0)
        if self._executor is not None:
            self._executor.shutdown(grace, CANCEL_WAIT)
        self.collect(rearm=False)
        self.chains.release_claims()  # what it cannot release is stale once we exit
        now = self.clock()
        try:
            self.state.daemon_update(heartbeat=now, stopped_at=now, handled_until=self.handled_until(now))
        except Exception as exc:  # the database may be the reason we stop
            self.log.error("could not record the stop in the state database: %s", exc)
        if self.state.held and not self.state.flush_held():
            self.log.error("stopping with %d write(s) the state database did not take; the next start records"
                           " their attempts as interrupted", self.state.held)
        if self.watch is not None:
            self.watch.close()
        self.release_lock()
        self.log.info("crawlsched daemon stopped")
        return 0

    # --- locking and signals -------------------------------------------------

    def acquire_lock(self) -> None:
        """Only one daemon per home: a second one refuses, naming the pid that holds it."""
        self.lock.acquire(self.pid)

    def release_lock(self) -> None:
        self.lock.release()

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 reads run-now requests: each only sets a flag and wakes."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.request_reload())
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self.wake.set()

    def _on_file_event(self) -> None:
        """From the watch thread: the job file may have changed."""
        self.reloads.changed = True
        self.wake.set()

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.request_wake()

    def request_wake(self) -> None:
        """Another thread (the web API, a signal) left a run-now request: handle it at once."""
        self.requests_pending = True
        self.wake.set()

    def request_reload(self) -> None:
        self.reload_requested = True
        self.wake.set()

    # --- the executor and the job file -----------------------------------------

    @property
    def executor(self) -> Executor:
        """The injected executor, or the daemon's warm pool of max_concurrent threads (resized when that changes)."""
        size = self.defaults.max_concurrent if self.defaults else 8
        if self._executor is None:
            self._executor = LocalExecutor(size)
            self._pool_size = size
        elif self._pool_size and size != self._pool_size:
            self._executor.resize(size)  # running attempts finish; the pool has `size` workers from now on
            self._pool_size = size
        if not self._executor_started:
            self._executor_started = True
            self._executor.start(self.runner, self.wake.set)
        return self._executor

    def reload(self, force: bool = False) -> bool:
        """Apply the job file if it changed and is good; keep the last good jobs otherwise."""
        jobfile = self.reloads.take(force, self.started)
        if jobfile is None:
            return False
        self._apply(jobfile, self.clock())
        del jobfile
        self._settle_memory()
        executor = self.executor  # resized when max_concurrent changed
        for key in self.chains.in_flight():  # removed or paused: its attempt saves no retry
            if not self._wanted(key.job_id):
                executor.cancel(key)
        self.state.daemon_update(config_ok=1, config_error=None, **self.next_info())
        self.reloads.keep_last_good()
        self.log.info("job file reloaded: %d jobs", len(self.jobs))
        self._send_status()
        return True

    def _apply(self, jobfile: JobFile, now: float, previous: dict[str, Any] | None = None) -> None:
        """Diff the new jobs against the running ones and re-plan only what changed."""
        first = not self.started
        # The scheduler's own switch ([defaults] paused, the legacy stop/start): flipping it
        # re-plans every job, as if each had been paused or resumed on its own.
        switched = self.defaults is not None and self.defaults.paused != jobfile.defaults.paused
        self.defaults = jobfile.defaults
        if switched or (first and jobfile.defaults.paused):
            self.log.info("scheduler stopped ([defaults] paused = true): no job fires until it is started again"
                          if jobfile.defaults.paused else "scheduler started ([defaults] paused removed)")
        new = {j.id: j for j in jobfile.jobs}
        old = self.jobs
        seen = self.state.seen()
        for job_id in [i for i in old if i not in new]:
            self._drop(job_id, "removed from the job file")
        unseen = []
        for job in new.values():
            row = seen.get(job.id)
            if row is None or row["daemon_seen"] is None:
                anchor = timing.first_fire_on_sight(job, timing.from_epoch(now)).timestamp() if job.kind is ScheduleKind.EVERY else None
                unseen.append((job.id, now, anchor))
                if anchor is not None:
                    self.anchors[job.id] = row["anchor"] if row is not None and row["anchor"] else anchor
            else:
                if row["anchor"] is not None:
                    self.anchors[job.id] = row["anchor"]
                elif job.kind is ScheduleKind.EVERY:
                    anchor = timing.first_fire_on_sight(job, timing.from_epoch(now)).timestamp()
                    self.anchors[job.id] = anchor
                    unseen.append((job.id, now, anchor))
                if row["last_fire"] is not None:
                    self.last_fire[job.id] = max(self.last_fire.get(job.id, 0.0), row["last_fire"])
        if unseen:
            self.state.mark_seen_many(unseen)
        self.jobs = new
        rowed = recovery.rows_after(self.state, previous) if first else {}
        if first:
            self._recover(now)
        for job in new.values():
            if job.id in old and old[job.id] == job and not switched:
                continue
            chain = self.chains.get(job.id)
            if chain is not None and chain.retry_due is not None and chain.attempt > job.max_attempts:
                self._drop_retry(job.id, f"now has at most {job.max_attempts} attempt(s)")
            self.gen[job.id] = self.gen.get(job.id, 0) + 1
            self.planned.pop(job.id, None)
            if job.paused or self.defaults.paused:
                self._drop_retry(job.id, "paused" if job.paused else "paused with the scheduler")
                continue
            if first and previous is not None:
                self._catch_up(job, now, previous, seen.get(job.id), rowed.get(job.id))
            self._plan(job, now)

    @property
    def scheduler_paused(self) -> bool:
        """``[defaults] paused``: no scheduled fire, no catch-up, no retry; a run-now still runs."""
        return bool(self.defaults is not None and self.defaults.paused)

    def _drop(self, job_id: str, why: str) -> None:
        self.gen[job_id] = self.gen.get(job_id, 0) + 1
        self.planned.pop(job_id, None)
        self.anchors.pop(job_id, None)
        self.backlog.pop(job_id, None)
        self._drop_retry(job_id, why)

    def _drop_retry(self, job_id: str, why: str) -> None:
        """No further attempts: a running one finishes and is recorded; a pending retry is cancelled."""
        self.chains.drop_retry(job_id, why)

    def _plan(self, job: Job, now: float) -> None:
        """Push the job's next fire after now (and after its last fire: never the same instant twice)."""
        after = max(now, self.last_fire.get(job.id, 0.0))
        anchor = self.anchors.get(job.id)
        if (job.kind is ScheduleKind.EVERY and anchor is not None and after == now and anchor >= now
                and self.last_fire.get(job.id, 0.0) < anchor):
            after_dt = timing.from_epoch(anchor) - timing.timedelta(microseconds=1)  # the anchor itself fires
        else:
            after_dt = timing.from_epoch(after)
        fire = timing.next_fire(job, after_dt, timing.from_epoch(anchor))
        if fire is None:
            return
        due = fire.timestamp()
        self.planned[job.id] = due
        heapq.heappush(self.heap, (due, next(self.seq), FIRE, job.id, self.gen.get(job.id, 0)))

    # --- recovery and catch-up -----------------------------------------------

    def _recover(self, now: float) -> None:
        """Account for what a dead daemon left: running rows and pending retries."""
        recovery.settle_stale_runs(self.state, self.jobs, self.home, self.pid, now, self.log)
        resumed = recovery.retries_to_resume(self.state, self.jobs, self.anchors, now, self.log, self.home)
        for retry in resumed:
            chain = self.chains.resume(retry.job_id, retry.scheduled_for, retry.trigger, retry.next_attempt, retry.due_at)
            heapq.heappush(self.heap, (retry.due_at, next(self.seq), RETRY, retry.job_id, chain.token))
        # A chain waiting for its retry is ours: `crawlsched run` refuses it meanwhile. One held by a
        # live `run` (started while no daemon was up) is checked again when the retry is due.
        self.state.claim_chains([r.job_id for r in resumed], CLAIM_DAEMON, self.pid, self.runner.ident, now)

    def _catch_up(self, job: Job, now: float, previous: dict[str, Any], seen: Any,
                  rowed: recovery.Rowed | None = None) -> None:
        """Fires missed while the daemon was down: recorded as missed; the catch-up policy runs some."""
        if job.id in self.chains:
            return
        plan = recovery.catch_up(job, now, previous, seen, self.anchors.get(job.id), heartbeat_slack=HEARTBEAT_SLACK,
                                 rowed=rowed)
        if plan is None:
            return
        for missed in plan.extra_missed:
            recovery.record_missed(self.state, self.log, missed, now)
        if plan.missed is not None:
            recovery.record_missed(self.state, self.log, plan.missed, now)
        self.last_fire[job.id] = plan.newest
        if plan.runs:
            self.backlog[job.id] = deque((t, "catch_up") for t in plan.runs)
            self._next_from_backlog(job.id)

    def _next_from_backlog(self, job_id: str) -> None:
        backlog = self.backlog.get(job_id)
        job = self.jobs.get(job_id)
        if not backlog or job is None or job.paused or self.scheduler_paused:
            self.backlog.pop(job_id, None)
            return
        scheduled_for, trigger = backlog.popleft()
        if not backlog:
            self.backlog.pop(job_id, None)
        self.fire(job, scheduled_for, trigger)

    # --- firing and collecting ----------------------------------------------------

    def _settle_memory(self) -> None:
        settle(self.owns_process)

    def _clean_top(self) -> None:
        while self.heap and not self._current(self.heap[0]):
            heapq.heappop(self.heap)

    def _current(self, entry: tuple[float, int, str, str, int]) -> bool:
        due, _, kind, job_id, token = entry
        if kind == FIRE:
            return self.gen.get(job_id) == token and job_id in self.jobs and self.planned.get(job_id) == due
        chain = self.chains.get(job_id)
        return chain is not None and chain.token == token and chain.retry_due == due

    def fire_due(self, now: float) -> int:
        """Fire every entry due at ``now``. Attempts are submitted first, next fires planned after."""
        due: list[tuple[float, int, str, str, int]] = []
        self.fired_until = now if self.fired_until is None else max(self.fired_until, now)
        while self.heap and self.heap[0][0] <= now:
            entry = heapq.heappop(self.heap)
            if self._current(entry):
                due.append(entry)
        replan: list[Job] = []
        burst = len(due) > 1
        collecting = burst and gc.isenabled()
        if collecting:
            gc.disable()  # no collection while a burst is handed out (the allocations would trigger some)
        if burst:
            self.executor.begin_burst()  # its attempts start together (local_executor.Burst)
        try:
            # The entries are off the heap: one that fails is logged and the others still fire
            # and get their next fire planned (a failing entry is not retried in a tight loop).
            for scheduled, _, kind, job_id, _token in due:
                job = self.jobs.get(job_id)
                try:
                    if job is None:
                        continue
                    if kind == RETRY:
                        chain = self.chains[job_id]
                        chain.retry_due = None
                        self._submit(job, chain)
                        continue
                    self.planned.pop(job_id, None)
                    replan.append(job)
                    scheduled = self._coalesce(job, scheduled, now)
                    self.last_fire[job_id] = max(self.last_fire.get(job_id, 0.0), scheduled)
                    self.fire(job, scheduled, "schedule")
                except Exception:
                    self.log.exception("job %s: its %s failed inside crawlsched", job_id, "retry" if kind == RETRY else "fire")
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
                self._plan(job, now)
            except Exception:
                self.log.exception("job %s: planning its next fire failed", job.id)
        if due:
            self.fired += len(due)
        return len(due)

    def _coalesce(self, job: Job, scheduled: float, now: float) -> float:
        """Woken late (suspend, clock jump): run the newest due fire once; the older ones are missed."""
        if now - scheduled < 1.0:
            return scheduled  # fires are at least 1 s apart: nothing else can be due yet
        newest, missed = recovery.coalesce(job, scheduled, now, self.anchors.get(job.id))
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
            if decision is Next.RETRY:
                heapq.heappush(self.heap, (chain.retry_due, next(self.seq), RETRY, outcome.job_id, chain.token))
            elif rearm and decision in (Next.END, Next.VOID):
                self._next_from_backlog(outcome.job_id)

    def _wanted(self, job_id: str) -> bool:
        """The job is still planned: in the job file, not paused, the scheduler not paused."""
        job = self.jobs.get(job_id)
        return job is not None and not job.paused and not self.scheduler_paused

    def _wants_attempt(self, job_id: str, attempt: int) -> bool:
        job = self.jobs.get(job_id)
        return self._wanted(job_id) and job is not None and attempt <= job.max_attempts

    def _restore_after_replace(self) -> None:
        """A corrupt file was replaced by a fresh one: write back what the loop knows, so a
        restart still catches up this daemon's jobs and resumes its pending retries."""
        now = self.clock()
        self.state.restore_seen([(j, now, self.anchors.get(j), self.last_fire.get(j)) for j in self.jobs])
        retries = self.chains.restore_retries(self.jobs)
        self.log.info("state database replaced: %d jobs and %d pending retries written to the fresh one", len(self.jobs),
                      retries)

    def take_requests(self) -> None:
        """Run-now requests left by the CLI or the web API: each fires its job now (trigger ``manual``)."""
        now = self.clock()
        for _, job_id, _ in self.state.take_requests(now):
            job = self.jobs.get(job_id)
            if job is None:
                self.log.warning("run-now: no job %s", job_id)
                continue
            self.log.info("run-now: firing job %s", job_id)
            self.fire(job, round(now, 3), "manual")

    # --- clock jumps -------------------------------------------------------------

    def _check_jump(self, now: float) -> None:
        offset = now - self.monotonic()
        if self.offset is None:
            self.offset = offset
            return
        delta = offset - self.offset
        self.offset = offset
        if abs(delta) < JUMP_TOLERANCE:
            return
        self.log.warning("wall clock jumped by %+.0f s; re-planning", delta)
        if delta < 0:
            # Back: fixed-time jobs wait for their next fire after the last one (no duplicate);
            # interval jobs and pending retries keep their real remaining time.
            for job_id, job in self.jobs.items():
                if job.kind is ScheduleKind.EVERY and job_id in self.planned and not job.paused:
                    new_due = max(now, self.planned[job_id] + delta)
                    self.anchors[job_id] = new_due
                    self.last_fire[job_id] = min(self.last_fire.get(job_id, 0.0), new_due - 1e-6)
                    self.state.reset_anchor(job_id, new_due)
                    self.gen[job_id] = self.gen.get(job_id, 0) + 1
                    self.planned[job_id] = new_due
                    heapq.heappush(self.heap, (new_due, next(self.seq), FIRE, job_id, self.gen[job_id]))
            for job_id, chain in self.chains.items():
                if chain.retry_due is not None:
                    chain.retry_due = max(now, chain.retry_due + delta)
                    heapq.heappush(self.heap, (chain.retry_due, next(self.seq), RETRY, job_id, chain.token))
        self._setup_duties()

    def _setup_duties(self) -> None:
        if self.use_duties:
            self.duties.setup()

    # --- what the duties and status read -------------------------------------------

    def write_heartbeat(self) -> None:
        now = self.clock()
        self.state.daemon_update(heartbeat=now, pid=self.pid, handled_until=self.handled_until(now), **self.next_info())

    def handled_until(self, now: float) -> float:
        """Fires due after the last ``fire_due`` were not handed out (a stop's grace period, a
        turn still to come), nor those still waiting for a worker: the next start must treat
        them as downtime."""
        until = now if self.fired_until is None else min(now, self.fired_until)
        # A catch-up backlog's fires (``catch_up = "all"``) have no row until their turn comes.
        waiting = [t for backlog in self.backlog.values() for t, _ in backlog]
        unstarted = self._executor.unstarted() if self._executor is not None else ()
        return self.chains.handled_until(min([until, *waiting]), unstarted)

    def busy_soon(self) -> bool:
        """A fire or retry is due within retention.GUARD seconds, outcomes wait, or we are stopping."""
        self._clean_top()
        return (self.stopping or (self._executor is not None and self._executor.has_results())
                or bool(self.heap) and self.heap[0][0] - self.clock() < GUARD)

    def next_info(self) -> dict[str, Any]:
        self._clean_top()
        if not self.heap:
            return {"next_job": None, "next_due": None}
        return {"next_job": self.heap[0][3], "next_due": self.heap[0][0]}

    def _send_status(self) -> None:
        """``systemctl status``'s line, when it changed: what the daemon does now and next (SPEC §6)."""
        self.status.send(self._status_text)

    def _status_text(self) -> str:
        self._clean_top()
        due, _, kind, job_id, _ = self.heap[0] if self.heap else (None, 0, FIRE, None, 0)
        return status_line(self.jobs, has_file=self.reloads.applied_key is not None, config_error=self.config_error,
                           next_due=due, next_job=job_id, retry=kind == RETRY)
