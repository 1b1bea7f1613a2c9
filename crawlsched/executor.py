"""Where attempts run: the executor interface, its two implementations, and the burst gate.

The loop only ever calls ``submit`` and ``shutdown`` (SPEC §10): ``WarmPool``
is the daemon's own, ``InlineExecutor`` runs attempts in the caller's thread
for tests with a fake clock, and a second implementation (Celery workers)
would be handed to the ``Daemon`` the same way.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Protocol


class Executor(Protocol):
    """Runs attempts (SPEC §10: a second implementation could hand them to Celery workers)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


class InlineExecutor:
    """Runs each attempt at once in the caller's thread: for tests with a fake clock."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # pragma: no cover - surfaced through the future
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


class WarmPool(ThreadPoolExecutor):
    """A pool of ``size`` threads, every one of them started before the constructor returns.

    A thread created during a burst waits for the GIL behind busy workers
    before it runs, which shows as lateness. A subclass, not a wrapper: ``submit``
    stays the pool's own, with nothing in front of it on the burst's path.
    """

    def __init__(self, size: int) -> None:
        super().__init__(max_workers=size, thread_name_prefix="crawl")
        self.size = size
        barrier = threading.Barrier(size + 1)
        for _ in range(size):
            self.submit(_wait_at, barrier)
        try:
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass


def _wait_at(barrier: threading.Barrier) -> None:
    try:
        barrier.wait(timeout=10)
    except threading.BrokenBarrierError:
        pass


class Burst:
    """Attempts fired in the same turn start together.

    Each worker takes its start time, then waits here until the loop has
    handed out the whole burst (or 50 ms passed). Without it, the first
    workers' I/O (SQLite, process spawns) holds the GIL while the loop is
    still dispatching, and the last attempts of a burst of 200 start a
    hundred milliseconds late.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = 0
        self.lock = threading.Lock()
        self.all_in = threading.Event()
        self.go = threading.Event()

    def arrive(self) -> None:
        with self.lock:
            self.count += 1
            if self.count >= self.size:
                self.all_in.set()

    def arrive_and_wait(self) -> None:
        self.arrive()
        self.go.wait(0.2)

    def release(self, timeout: float = 0.05) -> None:
        self.all_in.wait(timeout)
        self.go.set()
