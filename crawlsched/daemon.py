"""The daemon: runs a ``Scheduler`` as the loop of its process, until SIGTERM.

A turn notices a clock jump, reloads the job file when asked or changed,
collects finished attempts, fires what is due (``crawlsched.scheduler``) and
runs the periodic duties (``crawlsched.duties``); then the loop waits on a
self-pipe (``crawlsched.waker``) until the earliest entry is due (at most
60 s, so a suspended machine or a changed clock is noticed). Signals, the job
file's watch and the executor's outcomes write a byte to it; a signal handler
only sets a flag. An exception in one step of a turn is logged and the loop
goes on. The job file's versions are ``crawlsched.reloads``, the home's lock
``crawlsched.homelock``. The clock, the monotonic clock and the executor are
injected: tests drive single turns with a fake clock and an inline executor.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from crawlsched import __version__, catchup, recovery, systemd
from crawlsched.chains import Chain
from crawlsched.cluster import Change, Membership
from crawlsched.duties import Duties
from crawlsched.errors import DaemonLockError
from crawlsched.executor import Executor, InlineExecutor
from crawlsched.homelock import HomeLock
from crawlsched.local_executor import LocalExecutor
from crawlsched.memory import collector_paused, settle, settle_memory, trim_memory
from crawlsched.model import JobFile
from crawlsched.plan import Planner
from crawlsched.reloads import Reloads
from crawlsched.retention import GUARD, Retention
from crawlsched.scheduler import FIRE, RETRY, Scheduler
from crawlsched.state import LEADER, STANDBY, State, StorageUnavailable
from crawlsched.state.trouble import StateUnreachable
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
STATE_RETRY = 1.0  # seconds between tries to reach a lost (PostgreSQL) state database


class Daemon(Scheduler):
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
        self.log.info("crawlsched daemon ready: %d jobs, home %s (pid %d)", len(self.jobs), self.home, self.pid)
        self.store.save_cache_later()  # for the next start and reload; nothing before READY needs it
        trim_memory()
        return True

    def _open_state(self) -> bool:
        """Open the state; a PostgreSQL one that cannot be reached is waited for (SPEC §10), said once
        at ERROR, until it answers or SIGTERM comes (False). Any other error (a SQLite file's trouble,
        a schema the database refuses) is raised as before."""
        while True:
            try:
                self.state.open(recover_corrupt=True)
            except StateUnreachable as exc:  # a server down or cut off; a refused schema still ends the start
                why = " ".join(str(exc).split())  # redacted and scrubbed by the store
                if self.waiting_for_state is None:
                    self.log.error("%s; waiting for it, trying every %g s: the daemon starts once it answers"
                                   " (logged once until then)", why, STATE_RETRY)
                self.waiting_for_state = why
                if not self.stopping:
                    self.wake.wait(STATE_RETRY)
                    self.wake.clear()
                if self.stopping:
                    return False
                continue
            if self.waiting_for_state is not None:
                self.waiting_for_state = None
                self.log.info("state database %s answers again; starting", getattr(self.state, "where", ""))
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

    # --- a lost (PostgreSQL) state: fires wait, then are handled as downtime ------------------

    def _state_lost(self) -> bool:
        """True while the state database is out of reach: nothing fires (an attempt without its row
        could run twice). Tried every ``STATE_RETRY`` s; when it is back, what came due meanwhile is
        handled as downtime (``_after_outage``), once. SQLite's storage trouble is not this."""
        state = self.state
        if not getattr(state, "outage_is_downtime", False):
            return False
        if self.outage_since is None:
            if not state.unreachable and self.deferred_since is None:  # type: ignore[attr-defined]
                return False
            handed = [t for t in (self.fired_until, self.deferred_since) if t is not None]
            self.outage_since = min(handed) if handed else self.clock()
            self.probe_at = self.monotonic()
        elif self.deferred_since is not None and self.deferred_since < self.outage_since:
            self.outage_since = self.deferred_since  # an attempt handed out before the loss was noticed
        if self.monotonic() < self.probe_at:
            return True
        self.probe_at = self.monotonic() + STATE_RETRY
        if not state.probe():  # type: ignore[attr-defined]
            return True
        try:
            self._after_outage(self.clock())
        except StorageUnavailable:
            return True  # lost again before the downtime was handled: handled at the next try, from the same instant
        return False

    def _after_outage(self, now: float) -> None:
        """The state is back: every job owed fires since ``outage_since`` gets its downtime handling
        (one missed row for the stretch, ``catch_up``), as at a start; rows written meanwhile (held
        writes, landed first) are not counted twice."""
        since = self.outage_since
        assert since is not None
        rowed = recovery.rows_after(self.state, {"handled_until": since})
        seen = recovery.seen_jobs(self.state)
        self.outage_since = self.deferred_since = None
        last = catchup.LastRun(since, None, None)
        owed = 0
        for job in list(self.jobs.values()):
            if job.id in self.chains or not self.planner.may_fire(job):
                continue  # a running chain's fires are its own (skipped); a paused job owes none
            due = self.planned.get(job.id)
            if not (due is not None and due <= now or self.last_fire.get(job.id, 0.0) >= since):
                continue
            owed += 1
            self.planner.unplan(job.id)
            self._catch_up(job, now, last, seen.get(job.id), rowed.get(job.id), down=catchup.STATE_LOST)
            self._plan(job, now)
        self.fired_until = now
        self.log.info("state database back: the fires of %d job(s) due in the %.0f s it was out of reach are"
                      " handled as downtime (missed rows, catch_up)", owed, now - since)

    def state_problem(self) -> str | None:
        """Why the state cannot be used now (for ``/healthz``), or None."""
        if self.waiting_for_state is not None:
            return f"{self.waiting_for_state}; the daemon waits for it and starts once it answers"
        episode = getattr(getattr(self.state, "db", None), "episode", None)
        why = getattr(episode, "why", None) if getattr(self.state, "outage_is_downtime", False) else None
        if why is not None or self.outage_since is not None:
            where = getattr(self.state, "where", "")
            return (f"the state database {where} cannot be reached ({why or 'trying again'}); nothing fires until"
                    " it answers, then what was due meanwhile is handled as downtime")
        return None

    def _wait_time(self, now: float) -> float:
        wait = MAX_WAIT
        self._clean_top()
        fire_wait = self.heap[0][0] - now if self.heap and self.member.leading else None  # a standby fires nothing
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
            self._executor.shutdown(grace, CANCEL_WAIT)
        self.collect(rearm=False)
        self.chains.release_claims()  # what it cannot release is stale once we exit
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

    # --- the job file -----------------------------------------------------------

    def reload(self, force: bool = False) -> bool:
        """Apply the job file if it changed and is good; keep the last good jobs otherwise."""
        with collector_paused(self.owns_process):
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
        if self.member.leading:  # the cluster's row is the leader's
            self.state.config_status(None, **self.next_info())
        self.reloads.keep_last_good()
        self._step("noting the job file's digest", lambda: self.member.applied(self.reloads.digest()))
        self.log.info("job file reloaded: %d jobs", len(self.jobs))
        self._send_status()
        return True

    def _settle_memory(self) -> None:
        settle(self.owns_process)

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

    # --- many daemons on one state (crawlsched.cluster) ------------------------------

    def _check_lease(self) -> None:
        """Renew or look at the leader lease; take over or step down when it changed hands."""
        now = self.clock()
        change = self.member.check(now)
        if change is Change.TOOK:
            self._take_over(now)
        elif change is Change.LOST:
            self._step_down()
        elif self.member.leading:
            self._adopt_retries(now)
            self.take_requests()  # run-now requests left through any daemon (or the CLI of any host)

    def _take_over(self, now: float) -> None:
        """This daemon leads now: what a start does (recovery, retries resumed, the downtime caught up)."""
        self.log.warning("this daemon leads now (leader lease epoch %d): taking over the schedule", self.member.epoch)
        previous = self.state.daemon_started(self.pid, socket.gethostname(), __version__, now)  # the cluster's row
        jobfile = JobFile(self.defaults, tuple(self.jobs.values())) if self.defaults is not None else None
        if jobfile is not None:
            self.planner = Planner()  # planned afresh from now, as a start plans
            self._apply(jobfile, now, previous=previous, recover=True)
        self.fired_until = now
        self.outage_since = self.deferred_since = None  # a takeover handles the whole downtime, an outage's too
        self.state.daemon_ready(self.clock(), http=self.http_url, handled_until=self.handled_until(now), **self.next_info())
        self._send_status()

    def _hand_over_lead(self) -> None:
        """Stopping on a shared state: say until when every fire was handled, and resign the lease
        now, so a standby takes over at its next look (not after this daemon's grace period)."""
        if not (self.member.shared and self.member.leading):
            return
        now = self.clock()
        self.state.heartbeat(now, pid=self.pid, handled_until=self.handled_until(now), **self.next_info())
        self.member.resign()
        self.log.info("stopping: the leader lease is handed over; the attempts running here finish in their grace period")

    def _step_down(self) -> None:
        """Another daemon leads: fire nothing more. Attempts already running finish and are recorded;
        pending retries are left saved in the state for the leader, and their claims released."""
        self.log.warning("this daemon lost the leader lease (another daemon leads, epoch %s): standing by;"
                         " it fires nothing more", self.member.epoch)
        self._hand_over_retries()

    def _hand_over_retries(self) -> None:
        waiting = [job_id for job_id, chain in self.chains.items() if not chain.handed]
        for job_id in waiting:
            del self.chains[job_id]  # its retry row stays: the leader adopts it
        self.chains.ended.update(waiting)
        self.chains.release_claims()

    def _settle_lapsed(self, now: float) -> None:
        """Attempts whose owner's lease lapsed since the takeover (a leader that died on another
        host: its leases outlive it by up to LEASE_SECONDS) are settled as a start settles them;
        their retries are adopted at the next renewal."""
        from crawlsched import recovery

        recovery.settle_stale_runs(self.state, self.jobs, self.home, 0, now, self.log,  # pid 0: nobody's own rows
                                   queued=getattr(self.defaults, "executor", "local") != "workers")

    def _adopt_retries(self, now: float) -> None:
        """Retries another daemon saved (an attempt it ran when it lost the lead) are this leader's to run."""
        from crawlsched import recovery

        known = self.chains.keys() | self.chains.saved_retry  # ours, or a leftover of our own chain
        saved = [r for r in self.state.retries() if r.job_id not in known]
        if not saved:
            return
        resumed = recovery.retries_to_resume(self.state, self.jobs, self.anchors, now, self.log, self.home, saved)
        for retry in resumed:
            chain = self.chains.resume(retry.job_id, retry.scheduled_for, retry.trigger, retry.next_attempt, retry.due_at)
            self.planner.push_retry(retry.job_id, chain.token, retry.due_at)
            self.log.info("job %s: adopted its retry (attempt %d/%d) saved by another daemon", retry.job_id,
                          retry.next_attempt, retry.max_attempts)
        self.state.claim_chains([r.job_id for r in resumed], self.runner.owner, now)

    @property
    def role(self) -> str:
        return LEADER if self.member.leading else STANDBY

    def take_requests(self) -> None:
        """Run-now requests are the leader's to fire (they wait in the state for it, whoever took them in)."""
        if self.member.leading:
            super().take_requests()

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
