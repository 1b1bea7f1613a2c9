"""What the loop waits on: a self-pipe that a signal handler, a worker or the web API can set.

A signal handler takes no lock: one landing while the main thread holds a
``threading.Event``'s lock would deadlock the loop. So the loop waits on a
non-blocking pipe with ``select``, and ``Waker.wait(precise=True)`` finishes
a wait for a fire with short selects (docs/BENCHMARKS.md: select wakes up to
0.1 % of its timeout late).
"""

from __future__ import annotations

import os
import select
import time

__all__ = ["PRECISE_WAIT", "SPIN", "Waker", "wait_step"]

PRECISE_WAIT = 0.05  # seconds: a select this short wakes within the 50 µs timer slack (Waker.wait)
SPIN = 0.0003  # seconds: a wait for a fire spins this last part instead of sleeping (Waker.wait)


class Waker:
    """What the loop waits on: a non-blocking self-pipe, safe to set from a signal handler.

    ``set`` is one ``write`` of a byte and takes no lock (a ``threading.Event``
    does, and a signal handler that runs while the main thread holds it inside
    ``wait`` or ``clear`` would deadlock). ``wait`` is a ``select`` on the read
    end: no polling.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        try:
            os.write(self._w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake is pending anyway) or closed

    def wait(self, timeout: float | None = None, precise: bool = False) -> bool:
        """Until set (True) or ``timeout`` seconds passed (False).

        Linux lets ``select`` wake up to 0.1 % of its timeout late (0.5 % when
        niced): 2 ms on a 2 s wait, which is fire lateness. A futex wait (what
        ``threading.Event`` uses) has only the 50 µs timer slack. So a
        ``precise`` wait (for a fire) is cut: a select that ends safely short
        of the deadline, then short ones (see ``wait_step``) whose slack is the
        50 µs floor, and its last ``SPIN`` is spun (a wake-up from sleep
        costs 0.1-0.2 ms on a VM). Other waits (duties, the 60 s re-check) are one select:
        an idle daemon wakes no more often than it must.
        """
        if timeout is None or not precise:
            ready, _, _ = select.select([self._r], [], [], timeout)
            return bool(ready)
        monotonic = time.monotonic
        deadline = monotonic() + timeout
        remaining = max(0.0, timeout)
        while remaining > SPIN:
            ready, _, _ = select.select([self._r], [], [], wait_step(remaining - SPIN))
            if ready:
                return True
            remaining = deadline - monotonic()
        # The last ``SPIN`` seconds are spun, not slept: a sleeping thread on this kind of VM
        # wakes 0.1-0.2 ms after its timer (docs/BENCHMARKS.md). At most SPIN of CPU a fire.
        while monotonic() < deadline:
            pass
        ready, _, _ = select.select([self._r], [], [], 0)  # a wake that came meanwhile is seen
        return bool(ready)

    def clear(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def __del__(self) -> None:  # the last reference: no thread can write any more
        for fd in (getattr(self, "_r", None), getattr(self, "_w", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def wait_step(remaining: float) -> float:
    """How long the next ``select`` of a wait with ``remaining`` seconds left may last.

    Short waits go to the end. A longer one stops ``max(1 %, 20 ms)`` short of
    the deadline, out of reach of select's late wake (at most 0.5 %), so the
    wait ends with a select of at most ~50 ms: two or three selects in all.
    """
    if remaining <= PRECISE_WAIT:
        return remaining
    return remaining - max(remaining * 0.01, PRECISE_WAIT / 2.5)
