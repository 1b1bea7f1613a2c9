"""Attempts handed out before their instant begin at it: commands let go together, a precise wait.

An attempt whose command was spawned ahead of its instant (crawlsched.crawl.command.Prepared,
held at its gate) waits in :meth:`GoAheads.release` until it is let go: one thread (the first
to wait, the "timer") sleeps until the earliest instant held and writes every go-ahead due then,
in one loop, so a burst's commands are let go within a millisecond of each other instead of
each waiting for its own thread to wake. :func:`wait_until` is the plain wait of an attempt
with nothing held (a URL job). Used by the daemon's own executor (crawlsched.local_executor)
and by a worker (crawlsched.workers.worker).
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any, Callable

__all__ = ["GoAheads", "wait_until"]


def wait_until(instant: float, stop: threading.Event | None = None, clock: Callable[[], float] = time.time) -> bool:
    """Sleep until the wall clock reaches ``instant``; False when ``stop`` was set first."""
    while True:
        left = instant - clock()
        if left <= 0:
            return True
        if stop is not None:
            if stop.wait(left):
                return False
        else:
            time.sleep(left)


class GoAheads:
    """Commands held at their gate, let go at their instant: one thread writes every go-ahead
    that is due, in one loop, then wakes the others.

    Measured (docs/SCALING.md): when each of a burst's 50 threads per process woke at the instant
    to write its own go-ahead, the go-aheads were spread over the Python work of the threads that
    had already started (log lines, the wait), under one GIL. Here one thread sleeps until the
    earliest instant held (the "timer"); the others sleep until it has let them go."""

    def __init__(self, clock: Callable[[], float] = time.time, *, pause_collector: bool = False) -> None:
        self._clock = clock
        self._pause = pause_collector  # a process of its own (a worker): no collection while a release is timed
        self._cond = threading.Condition(threading.Lock())
        self._held: list[tuple[float, Any]] = []
        self._timer = False  # a thread is sleeping until the earliest instant
        self._stopped = False

    def release(self, instant: float, child: Any) -> bool:
        """Block until ``child`` (``.go()``, ``.released``) was let go, at ``instant`` or just after:
        True. False when :meth:`stop` came first: it was not let go (the caller abandons it)."""
        with self._cond:
            if self._stopped:
                return False
            self._held.append((instant, child))
            if self._timer:
                self._cond.notify_all()  # the timer looks again: this instant may be earlier than its
            while not child.released and not self._stopped:
                if self._timer:
                    self._cond.wait()
                    continue
                self._timer = True
                paused = self._pause and gc.isenabled()
                if paused:  # a collection the waiting threads' allocations trigger would delay the go-aheads
                    gc.disable()
                try:
                    while not child.released and not self._stopped:
                        left = min(i for i, _ in self._held) - self._clock()
                        if left > 0:
                            self._cond.wait(left)
                            continue
                        self._go_due()
                finally:
                    if paused:
                        gc.enable()
                    self._timer = False
                    self._cond.notify_all()  # let go, or another thread times what is left
            if child.released:
                return True
            self._held = [h for h in self._held if h[1] is not child]
            return False

    def stop(self) -> None:
        """The worker stops now: nothing held is let go any more (each ``release`` answers False)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _go_due(self) -> None:
        now, left = self._clock(), []
        for instant, child in self._held:
            if instant <= now:
                child.go()
            else:
                left.append((instant, child))
        self._held = left
        self._cond.notify_all()
