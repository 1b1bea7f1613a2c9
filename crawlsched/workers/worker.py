"""``crawlsched worker``: a procrastinate worker that runs queued attempts with crawlsched's own crawl code.

Each queued job carries an attempt's spec (``spec_to_json``) and the id of its ``running`` row.
Before it crawls, the worker takes the row over (crawlsched.state.takeover.take_over_many: its own
owner id, a lease by the database's clock, the chain's next fencing epoch; the attempts due
together in this process share one write: crawlsched.workers.takeover). An attempt queued
ahead of its instant waits for it first, in its task thread; a row already closed
(settled while the job waited) drops the job, never crawled. Then
:class:`~crawlsched.workers.runner.WorkerRunner` (the daemon's ``AttemptRunner``) runs it: URL or command, limits, redaction, ``${VAR}`` from this
process's environment, bodies and run logs under this worker's home, the retry saved in the
transaction that closes the row. :class:`~crawlsched.workers.leases.LeaseKeeper` renews the
leases; a lost one stops the command's process group at once.

SIGTERM (or SIGINT): no new jobs; running attempts get their grace period (``[defaults]
grace_period``, carried by each job), then are stopped: each is closed ``interrupted`` with the
next attempt due now (given back, as after a local crash), and the worker exits 0. A second
signal stops them at once (crawlsched.workers.stopping). procrastinate's own log lines go through
crawlsched.workers.queuelogs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable

from crawlsched import procs
from crawlsched.executor import AttemptSpec, spec_from_json
from crawlsched.memory import settle_memory
from crawlsched.state import AttemptKey, Owner
from crawlsched.state import queue as q
from crawlsched.state.leases import HOST
from crawlsched.state.trouble import StateUnreachable, StorageUnavailable
from crawlsched.state.takeover import still_queued, take_over_many
from crawlsched.workers.leases import LeaseKeeper
from crawlsched.workers.queue import QUEUE, TASK, make_app
from crawlsched.workers.queuelogs import loop_trouble, quiet_queue_logs
from crawlsched.workers.runner import WorkerRunner, WorkerStore
from crawlsched.workers.stopping import Stopping
from crawlsched.workers.takeover import GIVEN_BACK, GoAheads, StartsFirst, TakeOvers, wait_until

__all__ = ["CLAIM_WORKER", "Worker", "run_worker"]

CLAIM_WORKER = "worker"  #: the owner kind of a worker's rows
ORPHAN_WINDOW = 24 * 3600.0  #: seconds: attempts this recent are checked for commands a dead worker left
STATE_RETRY = 2.0  #: seconds between tries while the state database cannot be reached
#: Seconds before its instant a queued attempt's row is taken over (its thread then waits for the
#: instant): a burst's grouped writes, one per worker process in turn under the state's write lock,
#: are done by the instant. Measured (docs/SCALING.md): they took up to 115 ms under load.
TAKE_OVER_LEAD = 0.5


class Worker:
    """One ``crawlsched worker`` process: its owner id, registry row, leases and procrastinate worker."""

    def __init__(self, store: Any, dsn: str, home: Path, log: logging.Logger, *, concurrency: int = 4) -> None:
        self.store, self.dsn, self.home, self.log = store, dsn, Path(home), log
        self.concurrency = concurrency
        pid = os.getpid()
        self.owner = Owner(CLAIM_WORKER, pid, procs.identity(pid), HOST)
        self.keeper = LeaseKeeper(store, self.owner, log)
        self.fenced = 0  # late results refused: the lease was lost meanwhile
        self.starts = StartsFirst()
        self.rows = WorkerStore(store, self.owner, self._fenced)
        self.runner = WorkerRunner(self.rows, self.home, log, keeper=self.keeper, starts=self.starts)
        self.runner.owner = self.owner
        self.takeovers = TakeOvers(lambda ids, children: take_over_many(store, ids, self.owner, str(self.home),
                                                                        children=children),
                                   on_taken=self._taken, lead=TAKE_OVER_LEAD)
        self.go_aheads = GoAheads(pause_collector=True)
        self.stopping = Stopping(log, self.keeper, self.go_aheads)
        self._pg: Any = None  # procrastinate's worker

    # --- one job -------------------------------------------------------------------------

    def attempt(self, run_id: int, spec: dict[str, Any], grace: float = 30.0) -> None:
        """The ``crawlsched_attempt`` task: take the row over, run the attempt, close it."""
        attempt_spec: AttemptSpec = spec_from_json(spec)
        # Queued ahead of its instant (crawlsched.workers.executor.QUEUE_AHEAD): it begins when it is due, not before;
        # one recalled meanwhile (its job paused or removed) is dropped before the wait, when it can be seen.
        # A command's process is spawned while it waits, held at its gate (it runs nothing): the take-over,
        # TAKE_OVER_LEAD ahead, records its group, and at the instant only its go-ahead is left (GoAheads).
        ahead = attempt_spec.scheduled_for > time.time()
        child = None
        if ahead and not still_queued(self.store, run_id):
            key = None
        else:
            child = self.runner.prepare(attempt_spec, self.go_aheads) if ahead else None
            try:
                key = self.takeovers.take(run_id, attempt_spec.job_id, attempt_spec.scheduled_for, self.stopping.now,
                                          child=child)
            except BaseException:
                if child is not None:
                    child.abandon()
                raise
        if child is not None and (key is GIVEN_BACK or key is None):
            child.abandon()  # its gate exits: the command never runs
            child = None
        if key is GIVEN_BACK:
            self.log.info("job %s: attempt %d given back before its instant: the worker stops now",
                          attempt_spec.job_id, attempt_spec.attempt)
            return
        if key is None:
            self.log.info("job %s: attempt %d was settled (or recalled) before a worker took it; dropped, not crawled",
                          attempt_spec.job_id, attempt_spec.attempt)
            return
        held = self.keeper.hold(run_id, key, grace)
        try:
            if child is not None:  # its group, in the row since the take-over, stopped if the lease is lost
                self.keeper.note_child(key, child.pgid)
            if not self._until_instant(attempt_spec, key, child):
                self.log.info("job %s: attempt %d given back before its instant: the worker stops now",
                              attempt_spec.job_id, attempt_spec.attempt)
                self.runner.give_back(attempt_spec, key, "interrupted: its worker stopped before its instant")
                return
            if child is not None and child.evicted:  # killed at its shared gate, never let go: spawned now
                child = None
            if self.stopping.asked:
                self.stopping.arm(held)
            self.runner.run_started(attempt_spec, key, cancel=held.cancel, prepared=child)
        except Exception:
            self.log.exception("attempt %d of job %s failed inside crawlsched", attempt_spec.attempt, attempt_spec.job_id)
        finally:
            if child is not None:
                child.abandon()  # (a no-op once it was let go)
            self.rows.began.pop(key, None)
            self.starts.begun(key)
            self.keeper.release(run_id)

    def _until_instant(self, spec: AttemptSpec, key: AttemptKey, child: Any) -> bool:
        """A row taken over up to TAKE_OVER_LEAD ahead begins at its instant: a held command is let
        go with the others due then, in one loop (GoAheads). False: the worker stops now (a second
        SIGTERM) before it; nothing began."""
        if child is not None:
            if not self.go_aheads.release(spec.scheduled_for, child):
                return False
            began = child.went_at if not child.evicted else None  # evicted: it begins when spawned again
            if began is not None:
                self.starts.begun(key)
        else:
            if not wait_until(spec.scheduled_for, self.stopping.now):
                return False
            began = time.time()
        if began is not None and key.started_at <= spec.scheduled_for < began:  # taken over ahead: the instant
            self.rows.began[key] = began  # the row says when it really began (its lateness, its duration)
        return True

    def _taken(self, keys: list[AttemptKey]) -> None:
        """StartsFirst counts the attempts that begin now; those taken over ahead begin at their instant."""
        now = time.time()
        self.starts.taken([k for k in keys if k.scheduled_for <= now])

    def _fenced(self, key: AttemptKey) -> None:
        self.fenced += 1
        self.log.warning("job %s: attempt %d/%d's late result refused (fenced): its lease was lost, another took over",
                         key.job_id, key.attempt, key.max_attempts)

    # --- SIGTERM -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: take no more jobs; the running ones get their grace period. Twice: stop them now."""
        self.stopping.request(self._stop_queue)

    def _stop_queue(self) -> None:
        if self._pg is not None:
            self._pg.stop()

    # --- the process -----------------------------------------------------------------------------

    def stop_orphans(self) -> int:
        """Commands a dead worker of this host left running (SIGKILL, OOM, outside systemd's cgroup
        kill): stopped before this worker takes jobs. Only provably that group (crawlsched.procs)."""
        rows = self.store.db.read(
            "SELECT job_id, attempt, owner_pid, owner_ident, child_pgid, child_ident FROM runs WHERE owner_host = ?"
            " AND owner_id LIKE ? AND child_pgid IS NOT NULL AND (status = 'running' OR finished_at > ?)",
            (HOST, f"{CLAIM_WORKER}@%", time.time() - ORPHAN_WINDOW))
        stopped = 0
        for r in rows:
            if r["owner_pid"] == self.owner.pid or procs.pid_alive(r["owner_pid"], r["owner_ident"]):
                continue  # its worker lives and stops its own commands
            if procs.stop_orphan_group(r["child_pgid"], r["child_ident"]):
                stopped += 1
                self.log.warning("job %s: attempt %d's command was left running by a dead worker (process group %d);"
                                 " stopped it", r["job_id"], r["attempt"], r["child_pgid"])
        return stopped

    def run(self) -> int:
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            started = self._until_reachable(stop, self._start)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not started:
            self.log.info("crawlsched worker stopped before it started (the state database never answered)")
            return 0
        self.keeper.start()
        settle_memory(first=True)  # what the start loaded is frozen: a collection at an instant does not walk it
        self.log.info("crawlsched worker ready: concurrency %d, home %s (pid %d on %s)", self.concurrency, self.home,
                      self.owner.pid, self.owner.host)
        try:
            asyncio.run(self._main())
        finally:
            self.keeper.stop()
            try:
                q.unregister_worker(self.store, self.owner)
            except Exception as exc:  # noqa: BLE001 - the database may be why we stop
                self.log.error("worker: could not remove its registry row: %s", " ".join(str(exc).split()))
            if self.fenced or self.keeper.lost:
                self.log.warning("worker: %d attempt(s) lost their lease, %d late result(s) refused",
                                 self.keeper.lost, self.fenced)
            self.log.info("crawlsched worker stopped")
        return 0

    def _start(self) -> None:
        self.store.open(recover_corrupt=True)  # losing the database later holds this worker's writes until it is back
        self.stop_orphans()
        q.register_worker(self.store, self.owner, concurrency=self.concurrency, home=str(self.home),
                          started_at=time.time())

    def _until_reachable(self, stop: threading.Event, step: Callable[[], None]) -> bool:
        """Run ``step`` until the state database answers (SPEC §10: a worker that loses it keeps
        trying), said once at ERROR; False when SIGTERM/SIGINT came first."""
        said = False
        while not stop.is_set():
            try:
                step()
                if said:
                    self.log.info("worker: state database %s answers again; starting", getattr(self.store, "where", ""))
                return True
            except (StateUnreachable, StorageUnavailable) as exc:
                if not said and not self.store.db.unreachable:  # the store logs its own episode once
                    self.log.error("%s; waiting for it, trying every %g s: the worker starts once it answers"
                                   " (logged once until then)", " ".join(str(exc).split()), STATE_RETRY)
                said = True
                stop.wait(STATE_RETRY)
        return False

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        # procrastinate runs a sync task in the loop's default executor: room for every attempt.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=self.concurrency + 2, thread_name_prefix="attempt"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        quiet_queue_logs(self.log)
        loop.set_exception_handler(partial(loop_trouble, self.log))
        while not self.stopping.asked:
            try:
                await self._serve_queue()
            except Exception as exc:  # noqa: BLE001 - the queue's connection failed: the state is out of reach
                why = " ".join(str(exc).split()) or type(exc).__name__
            else:
                why = "it stopped on a failed connection"
            self._pg = None
            if self.stopping.asked:
                break
            self.log.warning("worker: the queue stopped (%s); it restarts once the state database answers",
                             self.store.db.scrub(why) if hasattr(self.store.db, "scrub") else why)
            while not self.stopping.asked and not await asyncio.to_thread(self.store.db.probe):
                await asyncio.sleep(STATE_RETRY)
            if not self.stopping.asked:
                self.log.info("worker: the queue restarts: the state database answers again")

    async def _serve_queue(self) -> None:
        """procrastinate's worker until it stops: SIGTERM, or a connection it lost (its side tasks,
        the listener and the heartbeat, stop it then; :meth:`_main` starts a new one)."""
        from procrastinate.worker import Worker as QueueWorker

        app = make_app(self.dsn, max_size=max(4, self.concurrency // 2 + 2))
        app.task(name=TASK, queue=QUEUE)(self.attempt)
        async with app.open_async():
            self._pg = QueueWorker(
                app, queues=[QUEUE], name=f"crawlsched@{HOST}/{self.owner.pid}", concurrency=self.concurrency,
                install_signal_handlers=False, delete_jobs="always", shutdown_graceful_timeout=None,
                fetch_job_polling_interval=2.0, update_heartbeat_interval=2.0)  # FETCHED_DEAD judges it
            if self.stopping.asked:
                return
            await self._pg.run()


def run_worker(store: Any, dsn: str, home: Path, log: logging.Logger, *, concurrency: int = 4) -> int:
    """``crawlsched worker``: run queued attempts until SIGTERM; the exit code."""
    return Worker(store, dsn, home, log, concurrency=concurrency).run()
