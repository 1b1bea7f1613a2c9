"""The daemon: runs a ``Scheduler`` as the loop of its process, until SIGTERM.

A turn notices a clock jump, reloads the job file when asked or changed,
collects finished attempts, fires what is due (``crawlsched.scheduler``) and
runs the periodic duties (``crawlsched.duties``); then the loop waits on a
self-pipe (``crawlsched.waker``) until the earliest entry is due (at most
60 s, so a suspended machine or a changed clock is noticed). Signals, the job
file's watch and the executor's outcomes write a byte to it; a signal handler
only sets a flag. An exception in one step of a turn is logged and the loop
goes on. The job file's versions are ``crawlsched.reloads``, the home's lock
``crawlsched.homelock``. Parts of ``Daemon`` live beside it, mixed in: its
signals and requests (``crawlsched.signals``), a lost PostgreSQL state
(``crawlsched.outage``), its role changes among daemons on one state
(``crawlsched.roles``). The clock, the monotonic clock and the executor are
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
from crawlsched.cluster import Membership
from crawlsched.duties import Duties
from crawlsched.errors import DaemonLockError
from crawlsched.executor import Executor, InlineExecutor
from crawlsched.homelock import HomeLock
from crawlsched.local_executor import LocalExecutor
from crawlsched.memory import collector_paused, settle, settle_memory, trim_memory
from crawlsched.outage import StateOutage
from crawlsched.reloads import Reloads
from crawlsched.retention import GUARD, Retention
from crawlsched.roles import RoleChanges
from crawlsched.scheduler import FIRE, RETRY, Scheduler
from crawlsched.signals import Signals
from crawlsched.state import State, StorageUnavailable
from crawlsched.status import SystemdStatus, status_line
from crawlsched.store import JobStore
from crawlsched.waker import Waker

__all__ = ["Chain", "Daemon", "DaemonLockError", "Executor", "InlineExecutor", "LocalExecutor", "Scheduler", "Waker",
           "settle_memory", "trim_memory"]

MAX_WAIT = 60.0  # re-check the wall clock at least this often
JUMP_TOLERANCE = 2.0  # seconds of disagreement between wall and monotonic clocks that count as a jump
WAKE_SLACK = 0.002  # wake a little after a duty is due, never just before it (that costs a second wake)
STEP_BACKOFF = 1.0  # seconds before the next turn after a step of the loop failed
FLUSH_EVERY = 1.0  # seconds between tries to save held writes while the storage is in trouble
CANCEL_WAIT = 10.0  # seconds, in all, for cancelled attempts to end after the grace period


class Daemon(StateOutage, RoleChanges, Signals, Scheduler):
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
        self.offset: float | None = None
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
        self.offset = self.clock() - self.monotonic()
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

    def shutdown(self) -> int:
        """Stop firing; give running attempts the grace period; then record them interrupted.

        Attempts that have not begun are dropped first, so none starts during the grace
        period (``handled_until`` makes the next start catch them up). The running ones
        share one deadline; those still running then are interrupted and get at most
        ``CANCEL_WAIT`` seconds in all (systemd's TimeoutStopSec is 45 s).
        """
        self.notify("STOPPING=1")
        self._step("handing the lead over", self._hand_over_lead)  # the others fire while our attempts finish
        grace = self.grace if self.grace is not None else (self.defaults.grace_period if self.defaults else 30.0)
        if self._executor is not None:
            # A chain whose attempt ends meanwhile is recorded and its claim released then: the daemon
            # that took the lead fires that job while the slower attempts finish their grace.
            self._executor.shutdown(grace, CANCEL_WAIT, on_wait=self.release_ended)
        self.release_ended()  # what it cannot release is stale once we exit
        now = self.clock()
        try:
            if self.member.still_leads():  # the cluster's row: a standby's stop leaves it to the leader
                self.state.daemon_stopped(now, handled_until=self.handled_until(now))
            self.member.leave(now)  # a leader resigns: a standby takes over at its next look
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

    # --- locking (signals and requests: crawlsched.signals) -----------------

    def acquire_lock(self) -> None:
        """Only one daemon per home: a second one refuses, naming the pid that holds it."""
        self.lock.acquire(self.pid)

    def release_lock(self) -> None:
        self.lock.release()

    # --- the job file -----------------------------------------------------------

    def reload(self, force: bool = False) -> bool:
        """Apply the job file if it changed and is good; keep the last good jobs otherwise."""
        with collector_paused(self.owns_process):
            before = self.reloads.applied_key
            jobfile = self.reloads.take(force, self.started)
            if jobfile is None:
                return False
            try:
                self._apply(jobfile, self.clock())
            except BaseException:
                self.reloads.applied_key = before  # not applied (the state was lost, say): the next look tries again
                raise
            del jobfile
        self._settle_memory()
        executor = self.executor  # resized when max_concurrent changed
        for key in self.chains.in_flight():  # removed or paused: its attempt saves no retry
            if not self._wanted(key.job_id):
                executor.cancel(key)
        recall = getattr(executor, "recall", None)
        # Queued ahead of its instant: a job paused or removed meanwhile does not run. A changed one runs as it
        # was queued (an edit in the last seconds applies from the next fire, as an edit just after the instant).
        if recall is not None:
            try:
                recall(lambda spec: self._wanted(spec.job_id))
            except StorageUnavailable:  # logged once by the state; the attempts queued ahead still run
                pass
        if self.member.leading:  # the cluster's row is the leader's
            self.state.config_status(None, **self.next_info())
        self.reloads.keep_last_good()
        self._step("noting the job file's digest", lambda: self.member.applied(self.reloads.digest()))
        self.log.info("job file reloaded: %d jobs", len(self.jobs))
        self._send_status()
        return True

    def _settle_memory(self) -> None:
        settle(self.owns_process, first=not self.started)  # started: a reload

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

    def _setup_duties(self) -> None:
        if self.use_duties:
            self.duties.setup()

    # --- what the duties and status read -------------------------------------------

    def write_heartbeat(self) -> None:
        now = self.clock()
        if not self.member.shared:
            self.member.beat(now)  # a shared state's rows beat with each look at the lease
        if self.member.leading:  # the cluster's row (its handled_until) is the leader's to write
            self.state.heartbeat(now, pid=self.pid, handled_until=self.handled_until(now), **self.next_info())
            if self.member.shared:
                self._settle_lapsed(now)
        elif self.chains:  # stepped down: the attempts it still runs keep their leases until they end
            self.state.renew_leases(self.runner.owner, now)

    def busy_soon(self) -> bool:
        """A fire or retry is due within retention.GUARD seconds, outcomes wait, or we are stopping."""
        self._clean_top()
        return (self.stopping or (self._executor is not None and self._executor.has_results())
                or bool(self.heap) and self.heap[0][0] - self.clock() < GUARD)

    def _send_status(self) -> None:
        """``systemctl status``'s line, when it changed: what the daemon does now and next (SPEC §6)."""
        self.status.send(self._status_text)

    def _status_text(self) -> str:
        self._clean_top()
        due, _, kind, job_id, _ = self.heap[0] if self.heap else (None, 0, FIRE, None, 0)
        return status_line(self.jobs, has_file=self.reloads.applied_key is not None, config_error=self.config_error,
                           next_due=due, next_job=job_id, retry=kind is RETRY)


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
