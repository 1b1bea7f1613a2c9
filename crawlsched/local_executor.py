"""The daemon's own executor: a warm pool of threads in this process, and the burst gate.

Both are why a burst of 200 fires starts within a few milliseconds
(docs/BENCHMARKS.md): every worker thread is started before the first fire
(a thread created during a burst waits for the GIL behind busy workers), and
the attempts of one burst start together (:class:`Burst`). Specs wait in a
``SimpleQueue``; outcomes go to a ``deque`` the loop drains, and the loop's
wake-up is called after each one. Nothing but the spec crosses into a worker.

A fire is handed out ``LEAD`` seconds before its instant (the scheduler's
``lead``; only a fire whose job has nothing in flight: crawlsched.plan.Planner.leads).
Its worker writes its ``running`` row then and, for a command, spawns it held at
its gate; at the instant one thread lets every command due then go, in one loop
(crawlsched.goaheads.GoAheads), instead of each of a burst's threads waking in turn
to start its own. A URL attempt waits for its instant in its thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Collection

from crawlsched.executor import AttemptOutcome, AttemptSpec, ChainKey, OutcomeKind
from crawlsched.goaheads import Ahead, GoAheads

if TYPE_CHECKING:
    from crawlsched.runner import AttemptRunner

__all__ = ["Burst", "LocalExecutor"]

WARM_TIMEOUT = 10.0  # seconds: how long starting the workers may take before the first fire goes on without them
WAIT_STEP = 0.2  # seconds: while a stop waits for running attempts, their ended outcomes are taken this often
#: Seconds before its instant a fire is handed out (as a worker's queue does: QUEUE_AHEAD): the
#: spawns and row writes of a burst of 200 took 0.65-0.9 s on 2 cores, 1.1 s and more under load
#: (docs/BENCHMARKS.md); one not ready at its instant begins as soon as it is.
LEAD = 2.0


class Burst:
    """Attempts handed out in the same turn start together.

    Each worker takes its start time, then waits here until the loop has
    handed out the whole burst (or 50 ms passed). Without it, the first
    workers' I/O (SQLite, process spawns) holds the GIL while the loop is
    still dispatching, and the last attempts of a burst of 200 start a
    hundred milliseconds late. Its size is known when the burst is closed.

    A worker's wait is one blocking ``Lock.acquire`` (each passes the lock on
    to the next as it leaves), not an ``Event``: the GIL is held from a
    worker's start time until it blocks, and the next worker's start waits for
    it, so a condition variable's Python-level bookkeeping per waiter would add
    up over the burst (docs/BENCHMARKS.md).
    """

    def __init__(self) -> None:
        self.size: int | None = None
        self.count = 0
        self.lock = threading.Lock()
        self.all_in = threading.Lock()  # held until the last attempt of the burst arrived
        self.all_in.acquire()
        self.go = threading.Lock()  # held until the loop releases the burst
        self.go.acquire()

    def arrive(self) -> None:
        with self.lock:
            self.count += 1
            if self.size is not None and self.count == self.size:
                self.all_in.release()

    def arrive_and_wait(self) -> None:
        self.arrive()
        if self.go.acquire(True, 0.2):
            self.go.release()  # on to the next waiter

    def close(self, size: int) -> None:
        """All ``size`` attempts of the burst are handed out."""
        with self.lock:
            self.size = size
            if self.count >= size:
                self.all_in.release()

    def release(self, timeout: float = 0.05) -> None:
        self.all_in.acquire(True, timeout)
        self.go.release()


class LocalExecutor:
    """``size`` worker threads, every one started before the constructor returns."""

    def __init__(self, size: int, log: logging.Logger | None = None, *, lead: float = LEAD) -> None:
        self.log = log or logging.getLogger("crawlsched")
        self.lead = lead  # the scheduler hands fires out this early (crawlsched.scheduler.Scheduler.lead)
        self.go_aheads = GoAheads(pause_collector=True)
        self.runner: AttemptRunner | None = None
        self.wake: Callable[[], None] = lambda: None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._results: deque[AttemptOutcome] = deque()
        self._waiting: dict[int, AttemptSpec] = {}  # id(spec) -> spec: handed over, not begun
        self._cancelled: set[ChainKey] = set()
        self._stop = threading.Event()  # set after the grace period: running attempts are interrupted
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._gate: Burst | None = None
        self._in_burst = 0
        self._threads: list[threading.Thread] = []
        self._size = 0
        self._names = 0
        self.resize(size)

    # --- the loop's side -------------------------------------------------------

    def start(self, runner: AttemptRunner, wake: Callable[[], None]) -> None:
        self.runner = runner
        self.wake = wake
        self.log = runner.log
        self.go_aheads = GoAheads(runner.clock, pause_collector=True)  # the instants are the runner's clock's

    def submit(self, spec: AttemptSpec) -> None:
        self._waiting[id(spec)] = spec
        gate = self._gate
        if gate is not None:
            self._in_burst += 1
        self._queue.put((spec, gate))

    def results(self) -> list[AttemptOutcome]:
        out = []
        pop = self._results.popleft
        try:
            while True:
                out.append(pop())
        except IndexError:
            pass
        if self._cancelled:  # a cancel that came after its attempt ended: nothing is left to cancel
            for outcome in out:
                self._cancelled.discard(outcome.key)
        return out

    def has_results(self) -> bool:
        return bool(self._results)

    def cancel(self, key: ChainKey) -> None:
        self._cancelled.add(key)

    def unstarted(self) -> Collection[ChainKey]:
        return [spec.key for spec in list(self._waiting.values())]

    @property
    def capacity(self) -> int:
        return self._size

    def resize(self, size: int) -> None:
        """Start the missing workers (and wait until they run), or retire the extra ones
        after the attempts handed out before (running ones finish)."""
        self._threads = [t for t in self._threads if t.is_alive()]
        if size > self._size:
            barrier = threading.Barrier(size - self._size + 1)
            for _ in range(size - self._size):
                # A daemon thread: an idle worker never keeps the process from exiting (``shutdown``
                # is what waits for the running ones, with its grace).
                thread = threading.Thread(target=self._work, args=(barrier,), name=f"crawl_{self._names}", daemon=True)
                self._names += 1
                thread.start()
                self._threads.append(thread)
            try:
                barrier.wait(timeout=WARM_TIMEOUT)
            except threading.BrokenBarrierError:
                pass
        else:
            for _ in range(self._size - size):
                self._queue.put(None)
        self._size = size

    def begin_burst(self) -> None:
        self._gate = Burst()
        self._in_burst = 0

    def end_burst(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.close(self._in_burst)
            gate.release()

    def shutdown(self, grace: float, cancel_wait: float, on_wait: Callable[[], None] | None = None) -> None:
        """Drop what has not begun, give the running attempts one shared ``grace``, then interrupt them;
        ``on_wait`` every ``WAIT_STEP`` while they run."""
        try:
            while True:
                self._queue.get_nowait()  # its spec stays in `_waiting`: never begun
        except queue.Empty:
            pass
        for _ in self._threads:
            self._queue.put(None)
        with self._busy_lock:
            running = self._busy
        if running:
            self.log.info("stopping: waiting up to %gs for %d running attempt(s)", grace, running)
            if not self._join(grace, on_wait):
                with self._busy_lock:
                    still = self._busy
                self.log.warning("stopping: cancelling %d attempt(s) still running after %gs", still, grace)
                self._stop.set()
                self.go_aheads.stop()  # a command still held for its instant never starts
                self._join(cancel_wait, on_wait)

    def _join(self, seconds: float, on_wait: Callable[[], None] | None = None) -> bool:
        """Wait up to ``seconds`` in all for every worker to end, calling ``on_wait`` every
        ``WAIT_STEP`` meanwhile; whether they all did."""
        deadline = time.monotonic() + seconds
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                thread.join(min(WAIT_STEP, max(0.0, deadline - time.monotonic())))
                if on_wait is not None:
                    on_wait()
        return not any(t.is_alive() for t in self._threads)

    # --- a worker ----------------------------------------------------------------

    def _work(self, barrier: threading.Barrier) -> None:
        try:
            barrier.wait(timeout=WARM_TIMEOUT)
        except threading.BrokenBarrierError:
            pass
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            spec, gate = item
            started = self.runner.clock() if self.runner is not None else time.time()  # before any I/O: lateness
            with self._busy_lock:
                self._busy += 1
            self._waiting.pop(id(spec), None)
            ahead = None
            if spec.scheduled_for > started and self.runner is not None:  # handed out before its instant
                if gate is not None:
                    gate.arrive()  # it begins at its instant, not with the burst's hand-out
                ahead = Ahead(spec.scheduled_for, self.runner.prepare(spec, self.go_aheads), self.go_aheads,
                              self._stop, self.runner.clock)
            elif gate is not None:
                gate.arrive_and_wait()
            try:
                self._results.append(self._run(spec, started, ahead))
                self.wake()
            finally:
                if ahead is not None:
                    ahead.abandon()  # (nothing once it was let go)
                with self._busy_lock:
                    self._busy -= 1

    def _run(self, spec: AttemptSpec, started: float, ahead: Ahead | None = None) -> AttemptOutcome:
        key = spec.key
        cancelled = self._cancelled
        try:
            assert self.runner is not None, "start() the executor first"
            return self.runner.run(spec, started_at=started, cancel=self._stop,
                                   still_wanted=lambda: key not in cancelled, ahead=ahead)
        except BaseException as exc:  # never without an outcome: the loop would wait for it forever
            self.log.exception("attempt %d of job %s failed inside crawlsched", spec.attempt, spec.job_id)
            return AttemptOutcome(spec.job_id, spec.scheduled_for, spec.attempt, OutcomeKind.CRASHED, None,
                                  f"internal error: {type(exc).__name__}")
        finally:
            cancelled.discard(key)
