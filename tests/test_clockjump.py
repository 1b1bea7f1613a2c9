"""A wall-clock jump against the monotonic clock (crawlsched.clockjump), with both clocks injected."""

from __future__ import annotations

import pytest

from crawlsched.clockjump import JUMP_TOLERANCE, JumpWatch


class Clocks:
    def __init__(self) -> None:
        self.wall, self.mono = 1_800_000_000.0, 500.0

    def tick(self, seconds: float, *, jump: float = 0.0) -> float:
        self.mono += seconds
        self.wall += seconds + jump
        return self.wall


@pytest.fixture
def clocks():
    return Clocks()


def test_the_first_look_is_never_a_jump(clocks):
    assert JumpWatch(lambda: clocks.mono).jumped(clocks.wall + 3600) is None


def test_time_that_passes_on_both_clocks_is_no_jump(clocks):
    watch = JumpWatch(lambda: clocks.mono)
    watch.reset(clocks.wall)
    assert watch.jumped(clocks.tick(3600)) is None


@pytest.mark.parametrize("jump", [-3600.0, -JUMP_TOLERANCE, JUMP_TOLERANCE, 86400.0],
                         ids=["back-an-hour", "back-at-tolerance", "forward-at-tolerance", "forward-a-day"])
def test_a_jump_is_its_size_and_is_reported_once(clocks, jump):
    watch = JumpWatch(lambda: clocks.mono)
    watch.reset(clocks.wall)
    assert watch.jumped(clocks.tick(10, jump=jump)) == pytest.approx(jump)
    assert watch.jumped(clocks.tick(10)) is None  # the new offset is the reference now


def test_drift_below_the_tolerance_is_no_jump(clocks):
    watch = JumpWatch(lambda: clocks.mono)
    watch.reset(clocks.wall)
    assert watch.jumped(clocks.tick(60, jump=JUMP_TOLERANCE / 2)) is None


def test_a_reset_after_a_long_start_is_where_the_clocks_agree_from(clocks):
    watch = JumpWatch(lambda: clocks.mono)
    watch.jumped(clocks.wall)
    clocks.tick(30, jump=5)  # the start read `now` before this: it must not count
    watch.reset(clocks.wall)
    assert watch.jumped(clocks.tick(1)) is None
