"""A jump of the wall clock, seen against the monotonic clock (NTP stepping it, an admin, a suspend).

Their difference stays put while the machine runs; when it changes by more than
``JUMP_TOLERANCE`` seconds between two looks, the wall clock jumped by that change. The daemon
then re-plans (crawlsched.plan.Planner.clock_jumped). Both clocks are injected.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["JUMP_TOLERANCE", "JumpWatch"]

JUMP_TOLERANCE = 2.0  #: seconds of disagreement between wall and monotonic clocks that count as a jump


class JumpWatch:
    """The wall clock's offset from the monotonic clock, as last seen."""

    def __init__(self, monotonic: Callable[[], float], tolerance: float = JUMP_TOLERANCE) -> None:
        self.monotonic, self.tolerance = monotonic, tolerance
        self.offset: float | None = None

    def reset(self, now: float) -> None:
        """``now`` (the wall clock, read just now) is where the clocks agree from: after a long
        start, which would otherwise read as a jump forward."""
        self.offset = now - self.monotonic()

    def jumped(self, now: float) -> float | None:
        """The jump since the last look, in seconds (forward > 0); None when there was none."""
        offset = now - self.monotonic()
        previous, self.offset = self.offset, offset
        if previous is None:
            return None
        delta = offset - previous
        return delta if abs(delta) >= self.tolerance else None
