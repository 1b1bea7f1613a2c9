"""Time for tests: a clock that moves only when told, and instants as text."""

from __future__ import annotations

from datetime import datetime


class FakeClock:
    """Wall and monotonic clocks that move only when told; ``jump`` moves the wall clock alone."""

    def __init__(self, start: datetime) -> None:
        self.wall = start.timestamp()
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def jump(self, seconds: float) -> None:
        self.wall += seconds


def iso(ts: float, tz: str = "UTC") -> str:
    """An epoch instant as ISO text in the zone ``tz``."""
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat()
