"""``crawlsched worker``: a procrastinate worker that runs queued attempts with crawlsched's own crawl code.

Each queued job carries an attempt's spec (``spec_to_json``) and the id of its ``running`` row.
Before it crawls, the worker takes the row over (crawlsched.state.queue.take_over: its own owner
id, a lease by the database's clock, the chain's next fencing epoch); a row already closed
(settled while the job waited) drops the job, never crawled. Then :class:`WorkerRunner` (the
daemon's ``AttemptRunner``) runs it: URL or command, limits, redaction, ``${VAR}`` from this
process's environment, bodies and run logs under this worker's home, the retry saved in the
transaction that closes the row. :class:`~crawlsched.workers.leases.LeaseKeeper` renews the
leases; a lost one stops the command's process group at once.

SIGTERM (or SIGINT): no new jobs; running attempts get their grace period (``[defaults]
grace_period``, carried by each job), then are stopped: each is closed ``interrupted`` with the
next attempt due now (given back, as after a local crash), and the worker exits 0. A second
signal stops them at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from crawlsched import procs
from crawlsched.executor import AttemptSpec, spec_from_json
from crawlsched.runner import AttemptRunner
from crawlsched.state import AttemptKey, Owner, Saved
from crawlsched.state import queue as q
from crawlsched.state.leases import HOST
from crawlsched.workers.leases import LeaseKeeper
from crawlsched.workers.queue import QUEUE, TASK, make_app

__all__ = ["CLAIM_WORKER", "Worker", "WorkerRunner", "run_worker"]

CLAIM_WORKER = "worker"  #: the owner kind of a worker's rows
ORPHAN_WINDOW = 24 * 3600.0  #: seconds: attempts this recent are checked for commands a dead worker left
EXIT_AFTER = 15.0  #: seconds after the grace period before a worker whose attempts would not stop exits anyway


class WorkerStore:
    """The runner's store in a worker: its attempt's writes fenced by the row (still running, still
    this worker's: crawlsched.state.queue.finish_owned), the refused ones counted."""

    def __init__(self, store: Any, owner: Owner, on_fenced: Callable[[AttemptKey], None]) -> None:
        self._store = store
        self._owner = owner
        self._on_fenced = on_fenced

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def finish_attempt(self, run: Any, **kwargs: Any) -> Saved:
        key = getattr(run, "key", run)
        saved = q.finish_owned(self._store, key, self._owner, **kwargs)
        if saved is Saved.FENCED:
            self._on_fenced(key)
        return saved

    def set_child(self, run: Any, pgid: int, ident: str | None) -> Saved:
        return q.note_child_owned(self._store, getattr(run, "key", run), self._owner, pgid, ident)


class WorkerRunner(AttemptRunner):
    """The daemon's runner, telling the lease keeper its command's process group and when the crawl ended."""

    def __init__(self, *args: Any, keeper: LeaseKeeper, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keeper = keeper

    def _child_recorder(self, key: AttemptKey) -> Callable[[int], bool]:
        record = super()._child_recorder(key)

        def note(pgid: int) -> bool:
            self.keeper.note_child(key, pgid)
            return record(pgid)

        return note

    def _conclude(self, job: Any, scheduled_for: float, attempt: int, key: AttemptKey, outcome: Any, *args: Any,
                  **kwargs: Any) -> Any:
        self.keeper.closing(key)
        return super()._conclude(job, scheduled_for, attempt, key, outcome, *args, **kwargs)


class Worker:
    """One ``crawlsched worker`` process: its owner id, registry row, leases and procrastinate worker."""

    def __init__(self, store: Any, dsn: str, home: Path, log: logging.Logger, *, concurrency: int = 4) -> None:
        self.store, self.dsn, self.home, self.log = store, dsn, Path(home), log
        self.concurrency = concurrency
        pid = os.getpid()
        self.owner = Owner(CLAIM_WORKER, pid, procs.identity(pid), HOST)
        self.keeper = LeaseKeeper(store, self.owner, log)
        self.fenced = 0  # late results refused: the lease was lost meanwhile
        self.runner = WorkerRunner(WorkerStore(store, self.owner, self._fenced), self.home, log, keeper=self.keeper)
        self.runner.owner = self.owner
        self.stopping_at: float | None = None  # monotonic: when SIGTERM came
        self._pg: Any = None  # procrastinate's worker

    # --- one job -------------------------------------------------------------------------

    def attempt(self, run_id: int, spec: dict[str, Any], grace: float = 30.0) -> None:
        """The ``crawlsched_attempt`` task: take the row over, run the attempt, close it."""
        started = time.time()
        attempt_spec: AttemptSpec = spec_from_json(spec)
        key = q.take_over(self.store, run_id, self.owner, str(self.home), started_at=started)
        if key is None:
            self.log.info("job %s: attempt %d was settled before a worker took it; dropped, not crawled",
                          attempt_spec.job_id, attempt_spec.attempt)
            return
        held = self.keeper.hold(run_id, key, grace)
        if self.stopping_at is not None:
            self._arm_grace(held)
        try:
            self.runner.run_started(attempt_spec, key, cancel=held.cancel)
        except Exception:
            self.log.exception("attempt %d of job %s failed inside crawlsched", attempt_spec.attempt, attempt_spec.job_id)
        finally:
            self.keeper.release(run_id)

    def _fenced(self, key: AttemptKey) -> None:
        self.fenced += 1
        self.log.warning("job %s: attempt %d/%d's late result refused (fenced): its lease was lost, another took over",
                         key.job_id, key.attempt, key.max_attempts)

    # --- SIGTERM -------------------------------------------------------------------------------

    def _arm_grace(self, held: Any) -> None:
        assert self.stopping_at is not None
        left = max(0.0, self.stopping_at + held.grace - time.monotonic())
        timer = threading.Timer(left, held.cancel.set)
        timer.daemon = True
        timer.start()

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: take no more jobs; the running ones get their grace period. Twice: stop them now."""
        if self.stopping_at is not None:
            self.log.warning("worker: stopping now: %d running attempt(s) are given back", len(self.keeper.running()))
            for held in self.keeper.running():
                held.cancel.set()
            return
        self.stopping_at = time.monotonic()
        running = self.keeper.running()
        self.log.info("worker: stopping: no new attempts; %d running attempt(s) get their grace period", len(running))
        for held in running:
            self._arm_grace(held)
        longest = max([h.grace for h in running], default=0.0)
        guard = threading.Timer(longest + EXIT_AFTER, self._exit_anyway)
        guard.daemon = True
        guard.start()
        if self._pg is not None:
            self._pg.stop()

    def _exit_anyway(self) -> None:
        self.log.error("worker: attempts did not stop after their grace period; exiting")
        logging.shutdown()
        os._exit(1)

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
        self.stop_orphans()
        q.register_worker(self.store, self.owner, concurrency=self.concurrency, home=str(self.home),
                          started_at=time.time())
        self.keeper.start()
        self.log.info("crawlsched worker ready: concurrency %d, home %s (pid %d on %s)", self.concurrency, self.home,
                      self.owner.pid, self.owner.host)
        try:
            asyncio.run(self._main())
        finally:
            self.keeper.stop()
            try:
                q.unregister_worker(self.store, self.owner)
            except Exception as exc:  # noqa: BLE001 - the database may be why we stop
                self.log.error("worker: could not remove its registry row: %s", exc)
            if self.fenced or self.keeper.lost:
                self.log.warning("worker: %d attempt(s) lost their lease, %d late result(s) refused",
                                 self.keeper.lost, self.fenced)
            self.log.info("crawlsched worker stopped")
        return 0

    async def _main(self) -> None:
        from procrastinate.worker import Worker as QueueWorker

        loop = asyncio.get_running_loop()
        # procrastinate runs a sync task in the loop's default executor: room for every attempt.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=self.concurrency + 2, thread_name_prefix="attempt"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        app = make_app(self.dsn, max_size=max(4, self.concurrency // 2 + 2))
        app.task(name=TASK, queue=QUEUE)(self.attempt)
        async with app.open_async():
            self._pg = QueueWorker(
                app, queues=[QUEUE], name=f"crawlsched@{HOST}/{self.owner.pid}", concurrency=self.concurrency,
                install_signal_handlers=False, delete_jobs="always", shutdown_graceful_timeout=None,
                fetch_job_polling_interval=2.0, update_heartbeat_interval=2.0)  # FETCHED_DEAD judges it
            if self.stopping_at is not None:
                return
            await self._pg.run()


def run_worker(store: Any, dsn: str, home: Path, log: logging.Logger, *, concurrency: int = 4) -> int:
    """``crawlsched worker``: run queued attempts until SIGTERM; the exit code."""
    return Worker(store, dsn, home, log, concurrency=concurrency).run()
