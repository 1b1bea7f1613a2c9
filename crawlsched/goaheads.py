"""Attempts handed out before their instant begin at it: commands let go together, a precise wait.

An attempt whose command was spawned ahead of its instant (crawlsched.crawl.command.Prepared,
held at its gate) waits in :meth:`GoAheads.release` until it is let go: one thread (the first
to wait, the "timer") sleeps until the earliest instant held and writes every go-ahead due then,
in one loop, so a burst's commands are let go within a millisecond of each other instead of
each waiting for its own thread to wake. :func:`wait_until` is the plain wait of an attempt
with nothing held (a URL job). Used by the daemon's own executor (crawlsched.local_executor,
through :class:`Ahead`) and by a worker (crawlsched.workers.worker).
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any, Callable

__all__ = ["Ahead", "GoAheads", "wait_until"]

#: Seconds a shared gate at its instant waits for a command spawned at it whose thread is still
#: writing its row; past that, the command is killed at its gate (nothing of it ran) and spawned again.
ARRIVE_WAIT = 0.02
ARRIVE_STEP = 0.001  #: seconds between looks meanwhile
FORGET_AFTER = 10.0  #: seconds after its instant an unopened shared gate nobody reads is closed
#: Seconds before the instant the timer stops sleeping and spins (as the daemon's loop does for a
#: fire: crawlsched.waker.SPIN): at most this much CPU per instant.
SPIN = 0.0005


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
        self._gates: dict[float, Any] = {}  # instant -> its SharedGate, until it opens

    def gate(self, instant: float) -> Any:
        """The shared gate (crawlsched.crawl.command.SharedGate) of the commands due at ``instant``:
        spawned at it, they are let go by one write. None once stopped."""
        from crawlsched.crawl.command import SharedGate

        with self._cond:
            if self._stopped:
                return None
            self._forget_gates(self._clock() - FORGET_AFTER)
            gate = self._gates.get(instant)
            if gate is None or gate.sealed:
                gate = self._gates[instant] = SharedGate()
            return gate

    def _forget_gates(self, before: float) -> None:
        """Gates of instants long past that no held command reads any more (their commands failed to
        start, or were abandoned): closed."""
        for instant in [i for i in self._gates if i < before]:
            if not self._gates[instant].held_elsewhere([]):
                self._gates.pop(instant).close()

    def release(self, instant: float, child: Any) -> bool:
        """Block until ``child`` (``.go()``, ``.released``) was let go, at ``instant`` or just after:
        True. False when :meth:`stop` came first: it was not let go (the caller abandons it)."""
        with self._cond:
            if self._stopped:
                return False
            if child.released:  # evicted from its shared gate before it came here (crawl.command.SharedGate)
                return True
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
                        if left > SPIN:
                            self._cond.wait(left - SPIN)
                            continue
                        if left > 0:  # the last moment is spun: a wake from sleep is 0.1-2 ms late on a VM
                            end = time.monotonic() + left
                            while time.monotonic() < end:
                                pass
                        if self._go_due():  # a shared gate waits for a command spawned at it to be held
                            self._cond.wait(ARRIVE_STEP)
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
        """The worker stops now: nothing held is let go any more (each ``release`` answers False);
        the shared gates close (a command held at one exits without running)."""
        with self._cond:
            self._stopped = True
            for gate in self._gates.values():
                gate.close()
            self._gates.clear()
            self._cond.notify_all()

    def _go_due(self) -> bool:
        """Let go every held command that is due: one write per shared gate, one per command of its
        own gate. True when a shared gate is waiting for a command spawned at it to be held."""
        now, left = self._clock(), []
        shared: dict[int, tuple[Any, list[tuple[float, Any]]]] = {}
        for instant, child in self._held:
            if instant > now:
                left.append((instant, child))
            elif getattr(child, "shared", None) is None:
                child.go()
            else:
                shared.setdefault(id(child.shared), (child.shared, []))[1].append((instant, child))
        waiting = False
        for gate, held in shared.values():
            children = [c for _, c in held]
            gate.seal()  # no command is spawned at it from now on
            missing = gate.held_elsewhere(children)
            if missing and now - min(i for i, _ in held) < ARRIVE_WAIT:
                left.extend(held)  # spawned at it, its thread not here yet (its row's write): it comes
                waiting = True
                continue
            for child in missing:
                child.evict()  # never let go: its attempt spawns it again (no line of ours goes to it)
            gate.open_all(children)
            for instant, _ in held:
                if self._gates.get(instant) is gate:
                    del self._gates[instant]
        self._held = left
        self._cond.notify_all()
        return waiting


class Ahead:
    """An attempt handed out before its instant: its command spawned and held at its gate (``child``,
    None for a URL job or one that could not be spawned ahead), begun by :meth:`begin` at the instant."""

    def __init__(self, instant: float, child: Any, go_aheads: GoAheads, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.instant, self.child, self.go_aheads, self.stop, self.clock = instant, child, go_aheads, stop, clock

    def begin(self) -> float | None:
        """Block until the instant; when the attempt began (its command let go, or the wait over):
        None when the executor stopped first (nothing began; a held command is abandoned). A
        command evicted from its shared gate is spawned the usual way (``child`` None then)."""
        if self.child is not None:
            if not self.go_aheads.release(self.instant, self.child):
                self.abandon()
                return None
            if getattr(self.child, "evicted", False):
                self.child = None
                return self.clock()
            return self.child.went_at
        if not wait_until(self.instant, self.stop, self.clock):
            return None
        return self.clock()

    def abandon(self) -> None:
        """It will not begin (its row could not be written, or it was given back): the held command's
        gate exits without running it. Nothing once it was let go."""
        if self.child is not None:
            self.child.abandon()
