"""The daemon: runs a ``Scheduler`` as the loop of its process, until SIGTERM.

A turn notices a clock jump, reloads the job file when asked or changed,
collects finished attempts, fires what is due (``crawlsched.scheduler``) and
runs the periodic duties (``crawlsched.duties``); then the loop waits on a
self-pipe (``crawlsched.waker``) until the earliest entry is due (at most
60 s, so a suspended machine or a changed clock is noticed). Signals, the job
file's watch and the executor's outcomes write a byte to it; a signal handler
only sets a flag. An exception in one step of a turn is logged and the loop
goes on. The job file's versions are ``crawlsched.reloads``, the home's lock
``crawlsched.homelock``, a clock jump ``crawlsched.clockjump``. Parts of
``Daemon`` live beside it, mixed in: its signals and requests
(``crawlsched.signals``), a lost PostgreSQL state (``crawlsched.outage``), its
role changes among daemons on one state (``crawlsched.roles``), applying the
job file again (``crawlsched.reloads``), its stop (``crawlsched.shutdown``),
its heartbeat and status line (``crawlsched.reports``). The clock, the monotonic clock and the executor are
injected: tests drive single turns with a fake clock and an inline executor.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from crawlsched import __version__, systemd
from crawlsched.chains import Chain
from crawlsched.clockjump import JumpWatch
from crawlsched.cluster import Membership
from crawlsched.duties import Duties
from crawlsched.errors import DaemonLockError
from crawlsched.executor import Executor, InlineExecutor
from crawlsched.homelock import HomeLock
from crawlsched.local_executor import LocalExecutor
from crawlsched.memory import collector_paused, settle_memory, trim_memory
from crawlsched.outage import StateOutage
from crawlsched.reloads import Reloading, Reloads
from crawlsched.reports import Reports
from crawlsched.retention import Retention
from crawlsched.roles import RoleChanges
from crawlsched.scheduler import Scheduler
from crawlsched.shutdown import Shutdown
from crawlsched.signals import Signals
from crawlsched.state import State, StorageUnavailable
from crawlsched.status import SystemdStatus
from crawlsched.store import JobStore
from crawlsched.waker import Waker

__all__ = ["Chain", "Daemon", "DaemonLockError", "Executor", "InlineExecutor", "LocalExecutor", "Scheduler", "Waker",
           "settle_memory", "trim_memory"]

MAX_WAIT = 60.0  # re-check the wall clock at least this often
WAKE_SLACK = 0.002  # wake a little after a duty is due, never just before it (that costs a second wake)
STEP_BACKOFF = 1.0  # seconds before the next turn after a step of the loop failed
FLUSH_EVERY = 1.0  # seconds between tries to save held writes while the storage is in trouble


class Daemon(Reloading, Shutdown, Reports, StateOutage, RoleChanges, Signals, Scheduler):
    """The scheduler of one home folder, as a process: lock, signals, the loop's turns, duties."""

    def __init__(self, store: JobStore, state: State, home: Path, log: logging.Logger, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 executor: Executor | None = None, grace: float | None = None,
                 environ: dict[str, str] | None = None, notify: Callable[[str], bool] = systemd.notify,
                 duties: bool = True) -> None:
        self.wake = Waker()
        store.compact_cache = True  # its jobs live as long as the daemon: read back from the cache without a dict each
        super().__init__(store, state, home, log, clock=clock, monotonic=monotonic, executor=executor, environ=environ,
                         wake=self.wake.set)
        self.grace, self.notify = grace, notify
        self.retention = Retention(state, home, log, clock=clock, monotonic=monotonic)
        self.reloads = Reloads(store, state, home, log, monotonic=monotonic, on_error=self._send_status)
        self.stopping = self.reload_requested = self.requests_pending = False
        self.duties, self.use_duties, self.watch = Duties(self), duties, None
        self.jumps = JumpWatch(monotonic)
        self.failed_step = False
        self.lock = HomeLock(self.home)
        self.http_url: str | None = None  # set by run_daemon when the web API is served
        self.wake_for_fire = False  # the next wake is for a fire or retry: wait precisely (Waker.wait)
        self.owns_process = False  # run() was called: the process is the daemon's (its GC, its signals)
        self.flush_at = 0.0  # monotonic: the next try to save what the state database holds back
        self.replacements = 0  # corrupt state files replaced under us, as far as the loop has caught up
        self.status = SystemdStatus(notify)
        self.waiting_for_state: str | None = None  # why the state could not be opened at start (waiting for it)
        self.outage_since: float | None = None  # the state was lost: fires due after this wait (handled as downtime)
        self.probe_at = 0.0  # monotonic: the next try to reach the lost state
        # Among daemons sharing the state (crawlsched.cluster): on SQLite always the leader.
        self.member = Membership(state, self.runner.owner.id, self.pid, self.home, log, clock=clock, monotonic=monotonic)

    @property
    def config_error(self) -> str | None:
        """Why the job file as it is now is not applied (None when it is)."""
        return self.reloads.config_error

    # --- life cycle ----------------------------------------------------------

    def start(self) -> bool:
        """Lock the home, recover what a dead daemon left, load the jobs and plan; then READY.

        False when SIGTERM came while it waited for a PostgreSQL state that did not answer."""
        self.acquire_lock()
        if not self._open_state():
            return False  # stopped (SIGTERM) while waiting for the database
        with collector_paused(self.owns_process):
            jobfile = self.reloads.first()  # a bad file at start is fatal: JobFileError
            now = self.clock()
            self.member.join(now, self.reloads.digest())  # on a shared state: leader, or standby
            if self.member.leading:
                previous = self.state.daemon_started(self.pid, socket.gethostname(), __version__, now)
                self._apply(jobfile, now, previous=previous)
                self.fired_until = now  # the catch-up accounted for everything due until now
            else:  # plan only: the leader fires; recovery and catch-up are for whoever takes over
                self._apply(jobfile, now, recover=False)
                self.log.info("crawlsched daemon on a shared state: standing by (another daemon leads, epoch %s)",
                              self.member.epoch)
            del jobfile
        self._settle_memory()
        self.executor  # noqa: B018 - build, start and warm the pool (max_concurrent) before the first fire
        if self.use_duties:
            from crawlsched import watch

            self.watch = watch.start(self.store.path, self._on_file_event)
        self._setup_duties()
        # Read both clocks together: `now` is from before recovery and planning, which can
        # take seconds, and that real time would read as a jump forward at the first turn.
        self.jumps.reset(self.clock())
        if self.member.leading:
            self.state.daemon_ready(self.clock(), http=self.http_url, handled_until=self.handled_until(now),
                                    **self.next_info())
        self.reloads.keep_last_good()
        self.member.applied(self.reloads.digest())
        self.started = True
        self.notify("READY=1")
        self._send_status()
        self.log.info("crawlsched daemon ready: %d job%s, home %s (pid %d)", len(self.jobs), "" if len(self.jobs) == 1 else "s",
                      self.home, self.pid)
        self.store.save_cache_later()  # for the next start and reload; nothing before READY needs it
        trim_memory()
        return True

    def run(self) -> int:
        """Start, loop until SIGTERM/SIGINT, shut down gracefully. Returns the exit code."""
        self.owns_process = True
        self.install_signals()
        # Hand the GIL over more often than every 5 ms: the loop thread must get it
        # back quickly to dispatch a burst while workers run Python code.
        sys.setswitchinterval(0.0005)
        if not self.start():
            self.release_lock()
            self.log.info("crawlsched daemon stopped before it started (the state database never answered)")
            return 0
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
        if self.member.due():  # before anything fires: a leader that lost its lease fires nothing more
            self._step("checking the leader lease", self._check_lease)
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
        if self.member.leading and not self._step("checking the state database", self._state_lost):
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
        handout = self.planner.next_handout(self.chains, self.lead) if self.member.leading else None  # a standby fires nothing
        fire_wait = handout - now if handout is not None else None
        if fire_wait is not None:
            wait = min(wait, fire_wait)
        lease_wait = self.member.wait()
        if lease_wait is not None:
            wait = min(wait, lease_wait)
        idle = self.duties.idle_seconds
        if idle is not None:
            wait = min(wait, max(0.0, idle) + WAKE_SLACK)
        if self.reloads.recheck_at is not None:
            wait = min(wait, max(0.0, self.reloads.recheck_at - self.monotonic()))
        if self.state.held:
            wait = min(wait, max(0.0, self.flush_at - self.monotonic()))
        if self.outage_since is not None:
            wait = min(wait, max(0.0, self.probe_at - self.monotonic()))
        if self._executor is not None and self._executor.has_results():
            wait = 0
        self.wake_for_fire = fire_wait is not None and fire_wait <= wait  # what wakes the loop is a fire
        return max(0.0, wait)

    # --- locking (signals and requests: crawlsched.signals) -----------------

    def acquire_lock(self) -> None:
        """Only one daemon per home: a second one refuses, naming the pid that holds it."""
        self.lock.acquire(self.pid)

    def release_lock(self) -> None:
        self.lock.release()

    # --- clock jumps -------------------------------------------------------------

    def _check_jump(self, now: float) -> None:
        delta = self.jumps.jumped(now)
        if delta is None:
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

    def _setup_duties(self) -> None:
        if self.use_duties:
            self.duties.setup()

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
    state_problem = property(lambda self: self._daemon.state_problem())
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
