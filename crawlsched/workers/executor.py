"""``WorkersExecutor``: the daemon's side of ``executor = "workers"`` (crawlsched.executor.Executor).

The loop hands a scheduled fire out ``lead`` seconds (:data:`QUEUE_AHEAD`) before its instant;
the worker takes the row over just before the instant (crawlsched.workers.worker: ``TAKE_OVER_LEAD``)
and begins the crawl at it, and ``recall`` withdraws (closes ``skipped``) the attempts not yet
taken over whose job was paused or removed meanwhile (a changed job's runs as it was queued: the
edit applies from its next fire).

``submit`` writes the attempt's ``running`` row (owned by the queue, with a lease) and defers its
procrastinate job in one transaction (crawlsched.state.queue.start_queued); a burst's attempts
share one transaction. A worker takes the row over, crawls and closes it; closing a queued row
records it in ``attempt_outcomes`` and NOTIFYs ``crawlsched_outcomes`` (a trigger, in the
same transaction). A listener thread LISTENs and calls ``wake``; ``results`` drains the closed
rows with the retries they saved, as ``AttemptOutcome``\\ s.

The same thread keeps the queue's side of the leases, once a second: it renews the queue's
lease on rows whose job still waits for a live worker, and settles the rows whose lease lapsed
(a worker killed, frozen or cut off): ``interrupted``, with the next attempt due now when one
is left, the chain's epoch bumped so that the late worker's writes are refused (``FENCED``);
a command the dead worker left running on this host is stopped first.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection

from crawlsched import logs, procs
from crawlsched.executor import AttemptOutcome, AttemptSpec, ChainKey, OutcomeKind, spec_to_json
from crawlsched.model import RunStatus
from crawlsched.state import Retry, Run, StorageUnavailable
from crawlsched.state import queue as q
from crawlsched.state.leases import HOST
from crawlsched.state.takeover import recall_ahead
from crawlsched.workers.queue import OUTCOMES_CHANNEL, defer

if TYPE_CHECKING:
    from crawlsched.runner import AttemptRunner

__all__ = ["CHECK_EVERY", "QUEUE_AHEAD", "WorkersExecutor"]

# Seconds: a scheduled fire is queued this long before its instant (the planner hands it out early:
# crawlsched.scheduler), so that the queueing commit, the workers' fetches and their threads are
# done when it comes; the worker's task spawns a command held at its gate, takes the row over just
# before the instant and lets the command go at it (crawlsched.workers.takeover).
QUEUE_AHEAD = 2.0
RECALLED = "skipped: the job was paused or removed before its instant (its attempt was queued ahead)"
CHECK_EVERY = 1.0  #: seconds between the queue's lease checks (renew the waiting rows, settle the lapsed)
DRAIN_EVERY = 5.0  #: seconds: drain even without a NOTIFY (one lost while the listener reconnected)
LIVE_WORKER = 30.0  #: seconds: a worker whose heartbeat is older counts for no capacity
# Seconds: a procrastinate worker whose heartbeat (every 2 s: crawlsched.workers.worker) is older
# than a worker's lease is dead, and so holds no job it fetched: a killed worker's fetched rows are
# settled as soon as the rows it had taken over (SPEC §10: lease + 5 s), not after the queue's lease.
FETCHED_DEAD = q.WORKER_TTL

# Queued rows whose job waits for a worker, or was fetched by a worker that is alive (it takes the
# row over within milliseconds): the queue's lease is renewed.
_WAITING = (
    "SELECT r.id FROM runs r JOIN procrastinate_jobs j ON j.id = r.queue_job"
    " LEFT JOIN procrastinate_workers w ON w.id = j.worker_id"
    " WHERE r.status = 'running' AND r.owner_id = ? AND (j.status = 'todo'"
    " OR (j.status = 'doing' AND w.last_heartbeat > now() - make_interval(secs => ?)))"
)
# Queued rows (still the queue's: never taken over) that no worker will take over: their job a
# dead worker fetched (its heartbeat stopped, or its registration is gone), or their job ended or
# is gone (its task failed before the take-over: the database restarted under it). Settled at once,
# inside the settling write.
_FETCHED_BY_DEAD = (
    "SELECT r2.id FROM runs r2 LEFT JOIN procrastinate_jobs j ON j.id = r2.queue_job"
    " LEFT JOIN procrastinate_workers w ON w.id = j.worker_id"
    " WHERE r2.status = 'running' AND r2.queue_job IS NOT NULL AND (j.id IS NULL"
    " OR j.status NOT IN ('todo', 'doing') OR (j.status = 'doing'"
    " AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => ?))))"
)
INTERRUPTED = "interrupted: the worker running it stopped (its lease lapsed)"


class WorkersExecutor:
    """Attempts go to the queue in the state's PostgreSQL database; ``crawlsched worker``s run them."""

    def __init__(self, state: Any, log: logging.Logger | None = None, *, grace_period: float = 30.0,
                 check_every: float = CHECK_EVERY, lead: float = QUEUE_AHEAD) -> None:
        self.state = state
        self.lead = lead  # seconds: fires are handed out (queued) this long before their instant
        self.log = log or logging.getLogger("crawlsched")
        self.grace_period = grace_period  # the attempts' SIGTERM grace in a worker ([defaults] grace_period)
        self.check_every = check_every
        self.runner: AttemptRunner | None = None
        self.wake: Callable[[], None] = lambda: None
        self._local: list[AttemptOutcome] = []  # decided here: skipped, missed, duplicate
        self._inflight: dict[int, AttemptSpec] = {}  # run id -> spec: queued, outcome not drained yet
        self._burst: list[AttemptSpec] | None = None
        self._pending = True  # a closed row may wait in attempt_outcomes: drain at the next results()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._capacity = 0
        self.settled = 0  # rows settled after their lease lapsed (for tests and status)
        self._listen_failing = False

    # --- the loop's side -------------------------------------------------------------

    def start(self, runner: AttemptRunner, wake: Callable[[], None]) -> None:
        self.runner = runner
        self.wake = wake
        self.log = runner.log
        self._thread = threading.Thread(target=self._listen, name="workers-listen", daemon=True)
        self._thread.start()

    def submit(self, spec: AttemptSpec) -> None:
        if self._burst is not None:
            self._burst.append(spec)
        else:
            self._queue([spec])

    def begin_burst(self) -> None:
        self._burst = []

    def end_burst(self) -> None:
        specs, self._burst = self._burst, None
        if specs:
            self._queue(specs)

    def results(self) -> list[AttemptOutcome]:
        out, self._local = self._local, []
        if self._pending:
            self._pending = False
            try:
                closed = q.drain_closed(self.state)
            except StorageUnavailable:
                self._pending = True
                closed = []
            for run, retry in closed:
                self._inflight.pop(run.id, None)
                out.append(_outcome(run, retry))
        return out

    def has_results(self) -> bool:
        return bool(self._local) or self._pending

    def cancel(self, key: ChainKey) -> None:
        """Nothing to tell the worker: a retry its attempt saves is voided when the outcome comes back
        (``Chains.follow`` clears it for a job removed or paused meanwhile)."""

    def recall(self, keep: Callable[[AttemptSpec], bool]) -> int:
        """Withdraw the attempts queued ahead of their instant that ``keep`` no longer wants (their job
        paused or removed): rows still the queue's and not yet due are closed ``skipped``
        (crawlsched.state.takeover.recall_ahead); their outcomes end the chains. How many."""
        runner = self.runner
        now = runner.clock() if runner is not None else time.time()
        ids = [run_id for run_id, spec in self._inflight.items() if spec.scheduled_for > now and not keep(spec)]
        if not ids:
            return 0
        closed = recall_ahead(self.state, ids, RECALLED, finished_at=now)
        for run_id in closed:
            spec = self._inflight[run_id]
            self.log.warning("job %s: its fire at %s is skipped: paused or removed before its instant",
                             spec.job_id, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(spec.scheduled_for)) + "Z")
        if closed:
            self._notify()
        return len(closed)

    def unstarted(self) -> Collection[ChainKey]:
        """None: a queued attempt has its row (``running``, the queue's) from the moment it is queued."""
        return ()

    @property
    def capacity(self) -> int:
        """The workers' concurrency, summed over those with a fresh heartbeat (as of the last check)."""
        return self._capacity

    def resize(self, size: int) -> None:
        """Each worker has its own ``--concurrency``: nothing to resize here."""

    def shutdown(self, grace: float, cancel_wait: float, on_wait: Callable[[], None] | None = None) -> None:
        """Stop listening (nothing to wait for here: ``on_wait`` is not called). Queued and running attempts stay with the workers: their rows and leases are in
        the state, and the next leading daemon drains (or settles) them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.check_every + 1)

    # --- queueing ------------------------------------------------------------------------

    def _queue(self, specs: list[AttemptSpec]) -> None:
        runner = self.runner
        assert runner is not None, "start() the executor first"
        started = runner.clock()
        attempts = [{"job_id": s.job_id, "scheduled_for": s.scheduled_for, "attempt": s.attempt,
                     "max_attempts": s.max_attempts, "trigger": s.trigger,
                     "payload": {"spec": spec_to_json(s), "grace": self.grace_period}} for s in specs]
        try:
            done = q.start_queued(self.state, attempts, runner.owner, defer, started_at=started)
        except StorageUnavailable:
            message = "missed: the state database could not be written when it was due"
            for s in specs:
                self.state.record_not_run(s.job_id, s.scheduled_for, RunStatus.MISSED.value, message, now=runner.clock(),
                                          missed_count=1, first_missed=s.scheduled_for, last_missed=s.scheduled_for)
                self._local.append(AttemptOutcome(s.job_id, s.scheduled_for, s.attempt, OutcomeKind.MISSED,
                                                  RunStatus.MISSED, message))
            self.wake()
            return
        for spec, result in zip(specs, done):
            if result.run_id is not None:
                self._inflight[result.run_id] = spec
            elif result.fenced:
                self.log.warning("attempt %d of job %s not queued: this daemon no longer leads", spec.attempt, spec.job_id)
                self._local.append(AttemptOutcome(spec.job_id, spec.scheduled_for, spec.attempt, OutcomeKind.DUPLICATE,
                                                  None, "not queued: this daemon no longer leads"))
            elif result.busy is not None:
                self._local.append(runner._skip_busy(spec, result.busy))
            else:
                self.log.warning("attempt %d of job %s exists already; not running it twice", spec.attempt, spec.job_id)
                self._local.append(AttemptOutcome(spec.job_id, spec.scheduled_for, spec.attempt, OutcomeKind.DUPLICATE,
                                                  None, "attempt exists already"))
        if self._local:
            self.wake()

    # --- the listener thread ---------------------------------------------------------------

    def _listen(self) -> None:
        import psycopg

        dsn = self.state.db.dsn
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5, application_name="crawlsched-listen") as conn:
                    conn.execute(f"LISTEN {OUTCOMES_CHANNEL}")
                    if self._listen_failing:
                        self._listen_failing = False
                        self.log.info("workers: listening for finished attempts again")
                    self._notify()  # anything closed while we were not listening
                    drained = time.monotonic()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.check_every):
                            self._notify()
                        self._check()
                        if time.monotonic() - drained >= DRAIN_EVERY:
                            drained = time.monotonic()
                            self._notify()
            except Exception as exc:  # noqa: BLE001 - the database went away: listen again
                if not self._listen_failing:
                    self._listen_failing = True
                    self.log.error("workers: cannot listen for finished attempts (%s); trying again",
                                   " ".join(str(exc).split()) or type(exc).__name__)
                self._stop.wait(1.0)

    def _notify(self) -> None:
        self._pending = True
        self.wake()

    def _check(self) -> None:
        """Renew the queue's leases on the rows still waiting; settle the lapsed ones; count the workers."""
        try:
            waiting = [int(r[0]) for r in self.state.db.read(_WAITING, (q.QUEUE_OWNER.id, FETCHED_DEAD))]
            q.renew_queued(self.state, waiting)
            settled = q.settle_lapsed(self.state, self._decide, orphaned=_FETCHED_BY_DEAD, params=(FETCHED_DEAD,))
            self._capacity = sum(int(w["concurrency"]) for w in q.list_workers(self.state)
                                 if w["heartbeat"] is not None and w["heartbeat"] > self.state.db.clock() - LIVE_WORKER)
        except StorageUnavailable:
            return
        if settled:
            self.settled += len(settled)
            self._after_settle(settled)
            self._notify()

    def _decide(self, run: Run) -> tuple[str, str, Retry | None, str | None]:
        """A lapsed attempt: complete when all its bodies are in place (and reachable here), else
        interrupted, with the next attempt due now when one is left (as after a local crash)."""
        spec = self._inflight.get(run.id)
        job = spec.job if spec is not None else None
        if job is not None and job.urls and run.run_home:
            from crawlsched.crawl import bodies_complete, url_output
            from crawlsched.runner import run_dir

            folder = run_dir(Path(run.run_home), job, run.scheduled_for, run.trigger)
            try:
                if folder.is_dir() and bodies_complete(job.urls, folder):
                    return (RunStatus.SUCCESS.value, "completed before its worker stopped (all bodies in place)", None,
                            url_output(job.urls, folder))
            except OSError:
                pass
        retry = None
        if run.attempt < run.max_attempts and run.trigger != "run":
            retry = Retry(run.job_id, run.scheduled_for, run.attempt + 1, run.max_attempts, time.time(), run.trigger)
        return RunStatus.INTERRUPTED.value, INTERRUPTED, retry, None

    def _after_settle(self, settled: list[Run]) -> None:
        ids = [r.queue_job for r in settled if r.queue_job is not None]
        if ids:
            try:  # procrastinate does not retry stalled jobs itself: they end here, failed
                with self.state.db.write() as c:
                    c.execute(f"UPDATE procrastinate_jobs SET status = 'failed' WHERE status = 'doing'"
                              f" AND id IN ({','.join('?' * len(ids))})", tuple(ids))
            except Exception:  # noqa: BLE001 - cosmetic: the attempt rows are what counts
                pass
        for run in settled:
            if run.owner_host == HOST and procs.stop_orphan_group(run.child_pgid, run.child_ident):
                self.log.warning("job %s: attempt %d left its command running (process group %d); stopped it",
                                 run.job_id, run.attempt, run.child_pgid)
            if run.attempt < run.max_attempts and run.trigger != "run":
                self.log.warning("job %s: attempt %d/%d was interrupted (its worker's lease lapsed: the worker was"
                                 " killed, frozen or cut off); the chain continues", run.job_id, run.attempt,
                                 run.max_attempts)
            else:
                logs.log_final_failure(self.log, run.job_id, f"attempt {run.attempt}/{run.max_attempts} was interrupted:"
                                       " its worker's lease lapsed")


def _outcome(run: Run, retry: Retry | None) -> AttemptOutcome:
    try:
        status: RunStatus | None = RunStatus(run.status)
    except ValueError:
        status = None
    return AttemptOutcome(run.job_id, run.scheduled_for, run.attempt, OutcomeKind.RAN, status, run.message or "",
                          retry_due=retry.due_at if retry is not None else None)
