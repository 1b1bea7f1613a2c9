"""The scheduler loop: wait until the earliest fire or retry is due, fire it into a pool, repeat.

The next fire of every job and every pending retry sit in one heap, so a turn
of the loop costs nothing that grows with the number of jobs. The loop waits
on a self-pipe (``Waker``) until the earliest entry is due (at most 60 s, so a
suspended machine or a changed clock is noticed); signals and finished
attempts write a byte to it. A signal handler takes no lock: one landing while
the main thread holds a ``threading.Event``'s lock would deadlock the loop.
Crawls run on a bounded pool and report back through a queue; the loop never
blocks on one. An exception in one step of a turn is logged and the loop goes on.

The periodic duties (polling jobs.toml, the heartbeat, the systemd watchdog,
run-now requests, retention: ``crawlsched.retention``) run on a
``schedule.Scheduler``. Its next runs are naive
local times, which would stall after the wall clock goes back, so a jump
(wall clock against monotonic clock) rebuilds it.

The clock, the monotonic clock and the executor are injected: tests drive
single turns with a fake clock and an inline executor. Where attempts run is
``crawlsched.executor``; what a start or a late wake owes (interrupted
attempts, retries, missed fires) is worked out in ``crawlsched.recovery``.
"""

from __future__ import annotations

import fcntl
import gc
import itertools
import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from crawlsched import __version__, catchup, control, logs, recovery, systemd, timing
from crawlsched.errors import ChainBusy, DaemonLockError, JobFileError
from crawlsched.executor import Burst, Executor, InlineExecutor, WarmPool
from crawlsched.retention import GUARD, Retention
from crawlsched.model import Job, JobFile, RunStatus
from crawlsched.plan import Entry, EntryKind, Planner
from crawlsched.runner import AttemptResult, AttemptRunner, end_run
from crawlsched.state import CLAIM_DAEMON, DaemonInfo, Retry, State, StorageUnavailable
from crawlsched.store import FileKey, JobStore

__all__ = ["Burst", "Chain", "Daemon", "DaemonLockError", "Executor", "InlineExecutor", "Waker", "WarmPool", "trim_memory"]

FIRE, RETRY = EntryKind.FIRE, EntryKind.RETRY
MAX_WAIT = 60.0  # re-check the wall clock at least this often
JUMP_TOLERANCE = 2.0  # seconds of disagreement between wall and monotonic clocks that count as a jump
HEARTBEAT_EVERY = 30  # seconds: a cold SQLite write costs ~0.3 ms, so not more often (idle CPU)
HEARTBEAT_SLACK = 2 * HEARTBEAT_EVERY  # a fire this close before the last heartbeat may not have been handled
STABLE_FOR = 0.5  # a changed job file is applied once it stopped changing for this long
POLL_EVERY = 1  # seconds between checks of the job file when inotify is not available
FALLBACK_EVERY = 10  # seconds between checks of the file (with inotify) and of run-now requests (with SIGUSR1)
WAKE_SLACK = 0.002  # wake a little after a duty is due, never just before it (that costs a second wake)
STEP_BACKOFF = 1.0  # seconds before the next turn after a step of the loop failed
FLUSH_EVERY = 1.0  # seconds between tries to save held writes while the storage is in trouble
CANCEL_WAIT = 10.0  # seconds, in all, for cancelled attempts to end after the grace period
PRECISE_WAIT = 0.05  # seconds: a select this short wakes within the 50 µs timer slack (Waker.wait)
RETENTION_EVERY = 60  # seconds between retention sweeps (crawlsched.retention)


class Waker:
    """What the loop waits on: a non-blocking self-pipe, safe to set from a signal handler.

    ``set`` is one ``write`` of a byte and takes no lock (a ``threading.Event``
    does, and a signal handler that runs while the main thread holds it inside
    ``wait`` or ``clear`` would deadlock). ``wait`` is a ``select`` on the read
    end: no polling.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        try:
            os.write(self._w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake is pending anyway) or closed

    def wait(self, timeout: float | None = None, precise: bool = False) -> bool:
        """Until set (True) or ``timeout`` seconds passed (False).

        Linux lets ``select`` wake up to 0.1 % of its timeout late (0.5 % when
        niced): 2 ms on a 2 s wait, which is fire lateness. A futex wait (what
        ``threading.Event`` uses) has only the 50 µs timer slack. So a
        ``precise`` wait (for a fire) is cut: a select that ends safely short
        of the deadline, then short ones (see ``wait_step``) whose slack is the
        50 µs floor. Other waits (duties, the 60 s re-check) are one select:
        an idle daemon wakes no more often than it must.
        """
        if timeout is None or not precise:
            ready, _, _ = select.select([self._r], [], [], timeout)
            return bool(ready)
        deadline = time.monotonic() + timeout
        remaining = max(0.0, timeout)
        while True:  # one select even for a zero timeout: a pending wake is seen
            ready, _, _ = select.select([self._r], [], [], wait_step(remaining))
            if ready:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False

    def clear(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def __del__(self) -> None:  # the last reference: no thread can write any more
        for fd in (getattr(self, "_r", None), getattr(self, "_w", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def wait_step(remaining: float) -> float:
    """How long the next ``select`` of a wait with ``remaining`` seconds left may last.

    Short waits go to the end. A longer one stops ``max(1 %, 20 ms)`` short of
    the deadline, out of reach of select's late wake (at most 0.5 %), so the
    wait ends with a select of at most ~50 ms: two or three selects in all.
    """
    if remaining <= PRECISE_WAIT:
        return remaining
    return remaining - max(remaining * 0.01, PRECISE_WAIT / 2.5)


@dataclass
class Chain:
    """One run of a job in progress: its attempts and retries, until it succeeds or gives up."""

    scheduled_for: float
    trigger: str
    attempt: int
    token: int
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None
    retry_due: float | None = None
    begun: bool = False  # its worker has started (the attempt row follows at once)


class Daemon:
    """The scheduler of one home folder."""

    def __init__(self, store: JobStore, state: State, home: Path, log: logging.Logger, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 executor: Executor | None = None, grace: float | None = None,
                 environ: dict[str, str] | None = None, notify: Callable[[str], bool] = systemd.notify,
                 duties: bool = True) -> None:
        self.store = store
        self.state = state
        self.home = Path(home)
        self.log = log
        self.clock = clock
        self.monotonic = monotonic
        self.grace = grace
        self.notify = notify
        self.pid = os.getpid()
        self.runner = AttemptRunner(state, home, log, clock=clock, environ=environ, claim=CLAIM_DAEMON)
        self.retention = Retention(state, home, log, clock=clock, monotonic=monotonic)
        self._executor = executor
        self._pool_size = 0
        self.planner = Planner()  # jobs, next fires, anchors, catch-up backlogs and the heap (pure: crawlsched.plan)
        self.chains: dict[str, Chain] = {}
        self.tokens = itertools.count(1)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.wake = Waker()
        self.stopping = False
        self.reload_requested = False
        self.requests_pending = False
        self.applied_key: FileKey | None = None
        self.pending_key: tuple[FileKey | None, float] | None = None
        self.bad_key: FileKey | None = None
        self.config_error: str | None = None
        self.defaults = None
        self.duties: Any = None
        self.use_duties = duties
        self.offset: float | None = None
        self.started = False
        self._lock_fd: int | None = None
        self.fired = 0
        self.watch: Any = None
        self.http_url: str | None = None  # set by run_daemon when the web API is served
        self.file_changed = False
        self.recheck_at: float | None = None
        self.failed_step = False
        self.wake_for_fire = False  # the next wake is for a fire or retry: wait precisely (Waker.wait)
        self.owns_process = False  # run() was called: the process is the daemon's (its GC, its signals)
        self.saved_retry: set[str] = set()  # jobs whose retry row may still be in the database
        # Every fire due at or before this instant was handed out (or accounted for at start):
        # the ``now`` of the last ``fire_due``. A stop records it as ``handled_until``, so the
        # fires that come due while running attempts get their grace period count as downtime.
        self.fired_until: float | None = None
        self.flush_at = 0.0  # monotonic: the next try to save what the state database holds back
        self.replacements = 0  # corrupt state files replaced under us, as far as the loop has caught up
        self.unclaim: set[str] = set()  # jobs whose chain ended: their claim is released once per turn
        self.status_sent: str | None = None  # the last STATUS= told to systemd
        self.release_failing = False  # releasing claims failed (storage trouble): logged once per episode

    # --- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Lock the home, recover what a dead daemon left, load the jobs and plan; then READY."""
        self.acquire_lock()
        self.state.open(recover_corrupt=True)
        jobfile = self.store.load()  # a bad file at start is fatal: JobFileError
        self.applied_key = self.store.stat_key()
        if self.applied_key is None:  # not an error (it may come later), but never a silent "0 jobs"
            self.log.warning("job file %s does not exist: no jobs until it is created (it is read as soon as it is)",
                             self.store.path)
        now = self.clock()
        previous = self.state.daemon_started(self.pid, socket.gethostname(), __version__, now)
        self._apply(jobfile, now, previous=previous)
        self.fired_until = now  # the catch-up accounted for everything due until now
        del jobfile
        self._settle_memory()
        self.executor  # noqa: B018 - build and warm the pool (max_concurrent) before the first fire
        if self.use_duties:
            from crawlsched import watch

            self.watch = watch.start(self.store.path, self._on_file_event)
        self._setup_duties()
        # Read both clocks together: `now` is from before recovery and planning, which can
        # take seconds, and that real time would read as a jump forward at the first turn.
        self.offset = self.clock() - self.monotonic()
        self.state.daemon_ready(self.clock(), http=self.http_url, handled_until=self._handled_until(now), **self._next_info())
        self._keep_last_good(self.applied_key)
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
        """One turn of the loop: notice jumps, reload, collect results, duties, fire what is due.

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
        if self.file_changed or (self.recheck_at is not None and self.monotonic() >= self.recheck_at):
            self.file_changed = False
            self.recheck_at = None
            self._duty_poll_file()
        if self.state.replaced != self.replacements:
            self.replacements = self.state.replaced
            self._step("restoring a replaced state database", self._restore_after_replace)
        if self.state.held and self.monotonic() >= self.flush_at:
            self.flush_at = self.monotonic() + FLUSH_EVERY
            self._step("saving held writes", self.state.flush_held)
        self._step("collecting finished attempts", self._drain_inbox)
        self._step("firing due jobs", lambda: self.fire_due(self.clock()))  # jobs first: a duty due at the same moment can wait
        if self.unclaim:
            self._step("releasing the claims of ended chains", self._release_claims)
        if self.started:
            self._step("telling systemd the status", self._send_status)  # only when it changed
        if self.duties is not None:
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
        if self.duties is not None:
            idle = self.duties.idle_seconds
            if idle is not None:
                wait = min(wait, max(0.0, idle) + WAKE_SLACK)
        if self.recheck_at is not None:
            wait = min(wait, max(0.0, self.recheck_at - self.monotonic()))
        if self.state.held:
            wait = min(wait, max(0.0, self.flush_at - self.monotonic()))
        if not self.inbox.empty():
            wait = 0
        self.wake_for_fire = fire_wait is not None and fire_wait <= wait  # what wakes the loop is a fire
        return max(0.0, wait)

    def shutdown(self) -> int:
        """Stop firing; give running attempts the grace period; then record them interrupted.

        Queued attempts that have not begun are cancelled first, so none starts during
        the grace period (``handled_until`` makes the next start catch them up). The
        running ones share one deadline; those still running then are cancelled and
        get at most ``CANCEL_WAIT`` seconds in all (systemd's TimeoutStopSec is 45 s).
        """
        self.notify("STOPPING=1")
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        running = [c.future for c in self.chains.values() if c.future is not None and not c.future.done()]
        grace = self.grace if self.grace is not None else (self.defaults.grace_period if self.defaults else 30.0)
        if running:
            self.log.info("stopping: waiting up to %gs for %d running attempt(s)", grace, len(running))
            _, still = wait_futures(running, timeout=grace)
            if still:
                self.log.warning("stopping: cancelling %d attempt(s) still running after %gs", len(still), grace)
                for chain in self.chains.values():
                    if chain.future in still:
                        chain.cancel.set()
                wait_futures(still, timeout=CANCEL_WAIT)
        self._drain_inbox(rearm=False)
        self._release_claims()  # what it cannot release is stale once we exit
        now = self.clock()
        try:
            self.state.daemon_stopped(now, handled_until=self._handled_until(now))
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
        self.home.mkdir(parents=True, exist_ok=True)
        path = control.lock_path(self.home)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DaemonLockError(f"another crawlsched daemon (pid {holder}) is running for home {self.home}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.pid}\n".encode(), 0)
        self._lock_fd = fd

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self.wake.set()

    def _on_file_event(self) -> None:
        """From the watch thread: the job file may have changed."""
        self.file_changed = True
        self.wake.set()

    def _on_hup(self, signum: int, frame: Any) -> None:
        self.reload_requested = True
        self.wake.set()

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.requests_pending = True
        self.wake.set()

    # --- the pool ------------------------------------------------------------

    @property
    def executor(self) -> Executor:
        """The injected executor, or a warm pool of max_concurrent threads (a new one when that changes)."""
        size = self.defaults.max_concurrent if self.defaults else 8
        if self._executor is None or (isinstance(self._executor, ThreadPoolExecutor) and size != self._pool_size):
            old = self._executor
            self._executor = WarmPool(size)
            self._pool_size = size
            if old is not None:
                old.shutdown(wait=False)  # running attempts finish; new ones go to the new pool
        return self._executor

    # --- configuration -------------------------------------------------------

    def reload(self, force: bool = False) -> bool:
        """Apply the job file if it changed and is good; keep the last good jobs otherwise."""
        key = self.store.stat_key()
        if not force and key == self.applied_key:
            self.pending_key = None
            return False
        if not force:
            # Wait until the file has stopped changing: an editor's half-written save never wipes jobs.
            now_m = self.monotonic()
            if self.pending_key is None or self.pending_key[0] != key:
                self.pending_key = (key, now_m)
                self.recheck_at = now_m + STABLE_FOR
                return False
            if now_m - self.pending_key[1] < STABLE_FOR:
                self.recheck_at = self.pending_key[1] + STABLE_FOR
                return False
        self.pending_key = None
        if (key is None or key.size == 0) and self.started:
            self._file_missing("missing" if key is None else "empty (0 bytes)")
            return False
        if key is not None and key == self.bad_key and not force:
            return False
        try:
            jobfile = self.store.load()
        except JobFileError as exc:
            if key != self.bad_key or force:
                self.log.error("job file not applied, keeping the last good jobs: %s", exc)
            self.bad_key = key
            self.config_error = str(exc)
            self.state.config_status(str(exc))
            self._send_status()
            return False
        self.bad_key = None
        self.config_error = None
        self.applied_key = key
        self._apply(jobfile, self.clock())
        del jobfile
        self._settle_memory()
        self.state.config_status(None, **self._next_info())
        self._keep_last_good(key)
        self.log.info("job file reloaded: %d jobs", len(self.jobs))
        self._send_status()
        return True

    def _keep_last_good(self, key: FileKey | None) -> None:
        """Keep the bytes of the file just applied in ``<home>/.cache``: while the file is broken,
        ``list``, ``show`` and ``history`` show these jobs (the ones this daemon runs)."""
        if key is None:
            return
        try:
            data = self.store.path.read_bytes()
            if self.store.stat_key() == key:  # else it changed since: the next reload keeps that one
                self.store.save_last_good(self.home, data)
        except OSError as exc:
            self.log.warning("could not keep a copy of the applied job file in %s/.cache: %s", self.home, exc)

    def _file_missing(self, how: str = "missing") -> None:
        """While running, a missing job file (an editor's delete and re-create, a ``mv``) is not
        an empty job list: the last good jobs and their retries stay until it is back. Nor is
        an empty one (SPEC §7: a truncating save, a full disk, a deploy that failed halfway)."""
        message = f"{self.store.path.name}: the file is {how}"
        if self.config_error != message:
            self.log.error("job file not applied, keeping the last good jobs: %s", message)
            self.state.config_status(message)
        self.config_error = message
        self._send_status()
        self.applied_key = None  # any file that appears is read again
        self.bad_key = None

    def _apply(self, jobfile: JobFile, now: float, previous: DaemonInfo | None = None) -> None:
        """Diff the new jobs against the running ones and re-plan only what changed (``Planner.apply``)."""
        first = not self.started
        seen = recovery.seen_jobs(self.state)
        change = self.planner.apply(jobfile.jobs, jobfile.defaults.paused, seen, now)
        # The scheduler's own switch ([defaults] paused, the legacy stop/start): flipping it
        # re-plans every job, as if each had been paused or resumed on its own.
        self.defaults = jobfile.defaults
        if change.switched or (first and jobfile.defaults.paused):
            self.log.info("scheduler stopped ([defaults] paused = true): no job fires until it is started again"
                          if jobfile.defaults.paused else "scheduler started ([defaults] paused removed)")
        for job_id in change.removed:
            self._drop_retry(job_id, "removed from the job file")
        if change.unseen:
            self.state.mark_seen_many(change.unseen)
        rowed = recovery.rows_after(self.state, previous) if first else {}
        last_run = recovery.last_run(previous) if first else None
        if first:
            self._recover(now)
        for job in change.changed:
            chain = self.chains.get(job.id)
            if chain is not None and chain.retry_due is not None and chain.attempt > job.max_attempts:
                self._drop_retry(job.id, f"now has at most {job.max_attempts} attempt(s)")
            if not self.planner.may_fire(job):
                self._drop_retry(job.id, "paused" if job.paused else "paused with the scheduler")
                continue
            if last_run is not None:
                self._catch_up(job, now, last_run, seen.get(job.id), rowed.get(job.id))
            self._plan(job, now)

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

    def _drop_retry(self, job_id: str, why: str) -> None:
        """No further attempts: a running one finishes and is recorded; a pending retry is cancelled."""
        chain = self.chains.get(job_id)
        if chain is None:
            return
        if chain.future is None or chain.future.done():
            # A retry is pending: set by the loop, or saved by an attempt whose result is not collected yet.
            future = chain.future
            done = future.result() if future is not None and not future.cancelled() and future.exception() is None else None
            pending = chain.retry_due is not None or (done is not None and done.retry_due is not None)
            self._end_chain(job_id)
            self._clear_retry(job_id)
            end_run(self.home, job_id, chain.scheduled_for, chain.trigger)
            if pending:  # the chain ends failed here: its one ERROR line (SPEC §6)
                logs.log_final_failure(self.log, job_id, f"{why}; its pending retry is cancelled")

    def _clear_retry(self, job_id: str) -> None:
        self.saved_retry.discard(job_id)
        self.state.clear_retry(job_id)

    def _plan(self, job: Job, now: float) -> None:
        """Push the job's next fire after now (and after its last fire: never the same instant twice)."""
        self.planner.plan(job, now)

    # --- recovery and catch-up -----------------------------------------------

    def _recover(self, now: float) -> None:
        """Account for what a dead daemon left: running rows and pending retries."""
        recovery.settle_stale_runs(self.state, self.jobs, self.home, self.pid, now, self.log)
        resumed = recovery.retries_to_resume(self.state, self.jobs, self.anchors, now, self.log, self.home)
        for retry in resumed:
            chain = Chain(retry.scheduled_for, retry.trigger, retry.next_attempt, next(self.tokens), retry_due=retry.due_at)
            self.chains[retry.job_id] = chain
            self.saved_retry.add(retry.job_id)
            self.planner.push_retry(retry.job_id, chain.token, retry.due_at)
        # A chain waiting for its retry is ours: `crawlsched run` refuses it meanwhile. One held by a
        # live `run` (started while no daemon was up) is checked again when the retry is due.
        self.state.claim_chains([r.job_id for r in resumed], self.runner.owner, now)

    def _catch_up(self, job: Job, now: float, previous: catchup.LastRun, seen: catchup.Seen | None,
                  rowed: catchup.Rowed | None = None) -> None:
        """Fires missed while the daemon was down: recorded as missed; the catch-up policy runs some."""
        if job.id in self.chains:
            return
        plan = catchup.catch_up(job, now, previous, seen, self.planner.anchors.get(job.id), heartbeat_slack=HEARTBEAT_SLACK,
                                rowed=rowed)
        if plan is None:
            return
        for missed in plan.extra_missed:
            recovery.record_missed(self.state, self.log, missed, now)
        if plan.missed is not None:
            recovery.record_missed(self.state, self.log, plan.missed, now)
        if self.planner.caught_up(job.id, plan):
            self._next_from_backlog(job.id)

    def _next_from_backlog(self, job_id: str) -> None:
        following = self.planner.next_from_backlog(job_id)
        if following is not None:
            self.fire(*following)

    # --- firing --------------------------------------------------------------

    def _settle_memory(self) -> None:
        if self.owns_process:
            settle_memory()  # a whole-process act: not for a daemon embedded in tests
        else:
            trim_memory()

    def _clean_top(self) -> None:
        self.planner.clean_top(self.chains)

    def _current(self, entry: Entry) -> bool:
        return self.planner.current(entry, self.chains)

    def fire_due(self, now: float) -> int:
        """Fire every entry due at ``now``. Attempts are submitted first, next fires planned after."""
        self.fired_until = now if self.fired_until is None else max(self.fired_until, now)
        planner = self.planner
        due = planner.pop_due(now, self.chains)
        replan: list[Job] = []
        gate = Burst(len(due)) if len(due) > 1 else None
        collecting = gate is not None and gc.isenabled()
        if collecting:
            gc.disable()  # no collection while a burst is handed out (the allocations would trigger some)
        try:
            # The entries are off the heap: one that fails is logged and the others still fire
            # and get their next fire planned (a failing entry is not retried in a tight loop).
            for scheduled, _, kind, job_id, _token in due:
                job = self.jobs.get(job_id)
                submitted = False
                try:
                    if job is None:
                        continue
                    if kind is RETRY:
                        chain = self.chains[job_id]
                        chain.retry_due = None
                        self._submit(job, chain, gate)
                        submitted = True
                        continue
                    planner.take(job_id)
                    replan.append(job)
                    scheduled = self._coalesce(job, scheduled, now)
                    planner.fired(job_id, scheduled)
                    submitted = self.fire(job, scheduled, "schedule", gate)
                except Exception:
                    self.log.exception("job %s: its %s failed inside crawlsched", job_id, "retry" if kind == RETRY else "fire")
                    chain = self.chains.get(job_id)
                    if chain is not None and chain.future is None and chain.retry_due is None:
                        self._end_chain(job_id)  # never submitted: a later fire starts a new chain
                finally:
                    if gate is not None and not submitted:
                        gate.arrive()  # nothing will arrive for it
            if gate is not None:
                gate.release()
        finally:
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

    def _coalesce(self, job: Job, scheduled: float, now: float) -> float:
        """Woken late (suspend, clock jump): run the newest due fire once; the older ones are missed."""
        if now - scheduled < 1.0:
            return scheduled  # fires are at least 1 s apart: nothing else can be due yet
        newest, missed = catchup.coalesce(job, scheduled, now, self.planner.anchors.get(job.id))
        if missed is not None:
            recovery.record_missed(self.state, self.log, missed, now)
        return newest

    def fire(self, job: Job, scheduled_for: float, trigger: str, gate: Burst | None = None) -> bool:
        """Start a run of ``job``, unless one is still going: then the fire is recorded as skipped."""
        chain = self.chains.get(job.id)
        if chain is not None:
            reason = "a retry is pending" if chain.retry_due is not None else "the previous run is still running"
            self.state.record_not_run(job.id, scheduled_for, RunStatus.SKIPPED.value,
                                      f"skipped: {reason} (runs of one job never overlap)", now=self.clock())
            self.log.warning("job %s: fire for %s skipped: %s", job.id,
                             timing.format_local(timing.from_epoch(scheduled_for), job.timezone), reason)
            return False
        if job.id in self.saved_retry:
            self._clear_retry(job.id)  # a leftover of an earlier chain must not show as `retrying`
        chain = Chain(scheduled_for, trigger, 1, next(self.tokens))
        self.chains[job.id] = chain
        self._submit(job, chain, gate)
        return True

    def _submit(self, job: Job, chain: Chain, gate: Burst | None = None) -> None:
        chain.future = self.executor.submit(self._work, job, chain, chain.attempt, gate)

    def _work(self, job: Job, chain: Chain, attempt: int, gate: Burst | None = None) -> AttemptResult | None:
        """In a pool thread: one attempt, then report back to the loop."""
        started = self.clock()  # before any I/O: this is the moment lateness is measured at
        chain.begun = True
        if gate is not None:
            gate.arrive_and_wait()
        result: AttemptResult | None = None
        try:
            try:
                other = self.state.running_elsewhere(job.id, self.runner.owner)
            except StorageUnavailable:
                other = None  # the attempt cannot start without its row: the runner holds the fire as missed
            busy = f"running in another process (pid {other.owner_pid})" if other is not None else None
            if busy is None:
                try:
                    result = self.runner.attempt(job, chain.scheduled_for, attempt, trigger=chain.trigger, cancel=chain.cancel,
                                                 still_wanted=lambda: self._wanted(job.id, chain), anchor=self.anchors.get(job.id),
                                                 started_at=started)
                except ChainBusy as exc:  # a `crawlsched run` of it holds its chain
                    busy = exc.claim.describe(job.timezone)
            if busy is not None:
                result = self._skip_busy(job, chain, attempt, busy)
        except StorageUnavailable:
            pass  # not run and not recorded: the episode is logged once, by the state
        except Exception:
            self.log.exception("attempt %d of job %s failed inside crawlsched", attempt, job.id)
        finally:
            self.inbox.put((job.id, chain.token, result))
            self.wake.set()
        return result

    def _skip_busy(self, job: Job, chain: Chain, attempt: int, busy: str) -> AttemptResult:
        """Another process runs this job (a `crawlsched run`): the fire, or the retry, is recorded skipped."""
        self.state.record_not_run(job.id, chain.scheduled_for, RunStatus.SKIPPED.value,
                                  f"skipped: {busy} (runs of one job never overlap)", now=self.clock())
        self.log.warning("job %s: %s for %s skipped: %s", job.id, "fire" if attempt == 1 else f"attempt {attempt}",
                         timing.format_local(timing.from_epoch(chain.scheduled_for), job.timezone), busy)
        if attempt > 1:
            self.state.clear_retry(job.id)  # the chain ends here, failed: its saved retry goes too
            logs.log_final_failure(self.log, job.id, f"its retry was skipped: {busy}")
        return AttemptResult(job.id, chain.scheduled_for, attempt, RunStatus.SKIPPED.value, busy)

    def _end_chain(self, job_id: str) -> None:
        del self.chains[job_id]
        self.unclaim.add(job_id)

    def _release_claims(self) -> None:
        """Drop the claims of chains that ended (not of one a new chain of the job holds again)."""
        ended = [job_id for job_id in self.unclaim if job_id not in self.chains]
        if not ended:  # nothing was written: not a sign the storage is back
            self.unclaim.clear()
            return
        try:
            self.state.release_chains(ended, self.runner.owner)
        except StorageUnavailable:
            return  # tried again next turn; the storage episode is logged once, by the state
        except Exception as exc:  # a locked database: tried again next turn, logged once
            if not self.release_failing:
                self.release_failing = True
                self.log.error("could not release the claims of %d ended chain(s), trying again: %s", len(ended), exc)
            return
        if self.release_failing:
            self.release_failing = False
            self.log.info("the claims of ended chains are released again")
        self.unclaim.clear()

    def _wanted(self, job_id: str, chain: Chain) -> bool:
        job = self.jobs.get(job_id)
        return job is not None and not job.paused and not self.scheduler_paused and self.chains.get(job_id) is chain

    def _drain_inbox(self, rearm: bool = True) -> None:
        while True:
            try:
                job_id, token, result = self.inbox.get_nowait()
            except queue.Empty:
                return
            chain = self.chains.get(job_id)
            if chain is None or chain.token != token:
                continue
            chain.future = None
            if result is None:
                self.saved_retry.add(job_id)  # failed inside crawlsched: it may have saved a retry
            elif result.retry_due is not None:
                self.saved_retry.add(job_id)
                if not rearm:
                    continue  # saved in the database; re-armed at the next start
                if self._wanted(job_id, chain):
                    chain.attempt = result.attempt + 1
                    chain.retry_due = result.retry_due
                    self.planner.push_retry(job_id, chain.token, result.retry_due)
                    continue
                # Paused or removed while the attempt ran: the retry it saved is void, the chain ends failed.
                self._end_chain(job_id)
                self._clear_retry(job_id)
                end_run(self.home, job_id, chain.scheduled_for, chain.trigger)
                logs.log_final_failure(self.log, job_id, "paused or removed while its attempt ran; its retry is cancelled")
                self._next_from_backlog(job_id)
                continue
            self._end_chain(job_id)
            if rearm:
                self._next_from_backlog(job_id)

    def _restore_after_replace(self) -> None:
        """A corrupt file was replaced by a fresh one: write back what the loop knows, so a
        restart still catches up this daemon's jobs and resumes its pending retries."""
        now = self.clock()
        self.state.restore_seen([(j, now, self.anchors.get(j), self.last_fire.get(j)) for j in self.jobs])
        for job_id, chain in self.chains.items():
            job = self.jobs.get(job_id)
            if job is not None and chain.retry_due is not None:
                self.state.save_retry(Retry(job_id, chain.scheduled_for, chain.attempt, job.max_attempts,
                                            chain.retry_due, chain.trigger))
        self.log.info("state database replaced: %d jobs and %d pending retries written to the fresh one", len(self.jobs),
                      sum(1 for c in self.chains.values() if c.retry_due is not None))

    # --- run-now ---------------------------------------------------------------

    def take_requests(self) -> None:
        now = self.clock()
        for _, job_id, _ in self.state.take_requests(now):
            job = self.jobs.get(job_id)
            if job is None:
                self.log.warning("run-now: no job %s", job_id)
                continue
            self.log.info("run-now: firing job %s", job_id)
            self.fire(job, round(now, 3), "manual")

    def request_wake(self) -> None:
        """Another thread (the web API) left a request: handle it at once."""
        self.requests_pending = True
        self.wake.set()

    def request_reload(self) -> None:
        self.reload_requested = True
        self.wake.set()

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
        # Back: fixed-time jobs wait for their next fire after the last one (no duplicate);
        # interval jobs and pending retries keep their real remaining time (Planner.clock_jumped).
        jumped = self.planner.clock_jumped(delta, now, self.chains)
        for job_id, due in jumped.retries:
            self.chains[job_id].retry_due = due
        for job_id, anchor in jumped.anchors:
            self.state.reset_anchor(job_id, anchor)
        self._setup_duties()

    # --- periodic duties -----------------------------------------------------------

    def _setup_duties(self) -> None:
        if not self.use_duties:
            return
        import schedule

        duties = schedule.Scheduler()
        # With inotify the file is seen at once and polled only as a fallback; run-now
        # requests wake the loop (SIGUSR1, or the web API in-process), polled likewise.
        duties.every(FALLBACK_EVERY if self.watch is not None else POLL_EVERY).seconds.do(self._duty_poll_file)
        duties.every(HEARTBEAT_EVERY).seconds.do(self._duty_heartbeat)
        duties.every(FALLBACK_EVERY).seconds.do(self._duty_requests)
        duties.every(RETENTION_EVERY).seconds.do(self._duty_retention)
        interval = systemd.watchdog_interval()
        if interval:
            duties.every(max(1, int(interval))).seconds.do(self._duty_watchdog)
        self.duties = duties

    def _duty_poll_file(self) -> None:
        try:
            self.reload()
        except Exception:
            self.log.exception("reloading the job file failed")

    def _duty_heartbeat(self) -> None:
        try:
            now = self.clock()
            self.state.heartbeat(now, pid=self.pid, handled_until=self._handled_until(now), **self._next_info())
        except StorageUnavailable:
            pass  # logged once for the episode, by the state
        except Exception as exc:
            self.log.error("heartbeat not written: %s", exc)

    def _handled_until(self, now: float) -> float:
        """Fires due after the last ``fire_due`` were not handed out (a stop's grace period, a
        turn still to come): the next start must treat them as downtime."""
        until = now if self.fired_until is None else min(now, self.fired_until)
        # A catch-up backlog's fires (``catch_up = "all"``) have no row until their turn comes.
        waiting = [t for backlog in self.backlog.values() for t, _ in backlog]
        return recovery.handled_until(self.chains.values(), min([until, *waiting]))

    def _duty_requests(self) -> None:
        try:
            self.take_requests()
        except StorageUnavailable:
            pass
        except Exception as exc:
            self.log.error("run-now requests not read: %s", exc)

    def _duty_retention(self) -> None:
        """History and log files past keep_history / keep_logs, in small batches, never near a fire."""
        try:
            if self.defaults is not None:
                self.retention.sweep(self.defaults, self._busy_soon)
        except Exception as exc:
            self.log.error("retention sweep failed: %s", exc)

    def _busy_soon(self) -> bool:
        """A fire or retry is due within retention.GUARD seconds, results wait, or we are stopping."""
        self._clean_top()
        return (self.stopping or not self.inbox.empty()
                or bool(self.heap) and self.heap[0][0] - self.clock() < GUARD)

    def _duty_watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def _next_info(self) -> dict[str, Any]:
        self._clean_top()
        fires = [e for e in self.heap[:1]]
        if not fires:
            return {"next_job": None, "next_due": None}
        return {"next_job": fires[0][3], "next_due": fires[0][0]}

    def _status_text(self) -> str:
        """``systemctl status``'s line: what the daemon does now and next (SPEC §6: it follows every change)."""
        self._clean_top()
        head = f"{len(self.jobs)} jobs"
        if self.applied_key is None and not self.config_error:
            head += " (no job file yet)"
        if self.heap:
            due, _, kind, job_id, _ = self.heap[0]
            job = self.jobs.get(job_id)
            when = timing.format_local(timing.from_epoch(due), job.timezone if job else "UTC")
            what = f"{job_id} (retry)" if kind == RETRY else job_id
            text = f"{head}; next: {what} at {when}"
        else:
            text = f"{head}; nothing due"
        if self.config_error:
            text = f"job file error: {self.config_error}; {text}"
        return " ".join(text.split())  # one line: a newline would start another assignment

    def _send_status(self) -> None:
        """``STATUS=`` to systemd when it changed since the last one sent (a no-op outside systemd)."""
        if self.notify is systemd.notify and not os.environ.get("NOTIFY_SOCKET"):
            return  # not under systemd: not even the text is worth building, once per turn
        text = self._status_text()
        if text != self.status_sent:
            self.status_sent = text
            self.notify(f"STATUS={text}")


def settle_memory() -> None:
    """After (re)loading the jobs: collect, freeze what is left, give freed memory back.

    The jobs and the plan live as long as the daemon; frozen, the garbage
    collector never walks them again. Without it, a full collection (133 ms
    measured with 100,000 jobs) lands at a moment the allocations of a burst
    happen to trigger, and whatever is due then waits for it. A reload
    unfreezes first, so the jobs it replaced can be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    trim_memory()


def trim_memory() -> None:
    """Give the memory a big parse freed back to the system (glibc keeps it otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass



class DaemonView:
    """The daemon as the web API sees it (``control.SchedulerView``): read-only facts and two
    requests. The web is given this, the store and the state, never the ``Daemon``."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self.clock = daemon.clock
        self.monotonic = daemon.monotonic
        self.request_reload = daemon.request_reload
        self.request_wake = daemon.request_wake

    started = property(lambda self: self._daemon.started)
    stopping = property(lambda self: self._daemon.stopping)
    config_error = property(lambda self: self._daemon.config_error)
    jobs = property(lambda self: self._daemon.jobs)
    defaults = property(lambda self: self._daemon.defaults)

    @property
    def pool_size(self) -> int:
        daemon = self._daemon
        return daemon._pool_size or (daemon.defaults.max_concurrent if daemon.defaults else 0)

    def next_fires(self) -> dict[str, float]:
        return dict(self._daemon.planned)

    def is_busy(self, job_id: str) -> bool:
        return job_id in self._daemon.chains
