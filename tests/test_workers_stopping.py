"""A worker's SIGTERM (crawlsched.workers.stopping): grace periods from the first signal, everything at the second."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from crawlsched.state import AttemptKey, Owner
from crawlsched.workers.leases import LeaseKeeper
from crawlsched.workers.stopping import Stopping
from crawlsched.workers.takeover import GoAheads

LOG = logging.getLogger("test-stopping")


def _key(n: int) -> AttemptKey:
    return AttemptKey(f"job-{n}", 1000.0, 1, 3, "schedule", 1000.0)


@pytest.fixture
def exits():
    made: list[Stopping] = []
    yield made
    for stopping in made:  # a guard left running would exit the test process
        if stopping.guard is not None:
            stopping.guard.cancel()


def _stopping(exits, *graces: float, exit_after: float = 60.0, exit=None) -> tuple[Stopping, LeaseKeeper, list]:
    keeper = LeaseKeeper(None, Owner("worker", 1, None, "host"), LOG)
    held = [keeper.hold(n, _key(n), grace) for n, grace in enumerate(graces)]
    stopping = Stopping(LOG, keeper, GoAheads(), exit_after=exit_after, exit=exit or (lambda: None))
    exits.append(stopping)
    return stopping, keeper, held


def test_the_first_signal_stops_the_queue_and_cancels_each_attempt_when_its_grace_ends(exits):
    stopping, _, (short, long) = _stopping(exits, 0.05, 30.0)
    stopped = threading.Event()
    stopping.request(stopped.set)
    assert stopping.asked and stopped.is_set() and not stopping.now.is_set()
    assert short.cancel.wait(2.0)
    assert not long.cancel.is_set()


def test_an_attempt_begun_after_the_signal_has_only_what_is_left_of_its_grace(exits):
    stopping, keeper, _ = _stopping(exits)
    stopping.request(lambda: None)
    time.sleep(0.1)
    late = keeper.hold(9, _key(9), 0.05)
    stopping.arm(late)
    assert late.cancel.wait(0.05)  # its 50 ms were spent before it began


def test_the_second_signal_cancels_everything_and_lets_no_held_command_go(exits):
    stopping, _, held = _stopping(exits, 30.0, 30.0)
    calls = []
    stopping.request(lambda: calls.append("queue"))
    stopping.request(lambda: calls.append("queue"))
    assert calls == ["queue"]  # the queue is stopped once
    assert stopping.now.is_set() and all(h.cancel.is_set() for h in held)
    assert stopping.go_aheads.release(time.time() + 10, object()) is False


def test_a_worker_whose_attempts_would_not_stop_exits_past_the_longest_grace(exits):
    exited = threading.Event()
    stopping, _, _ = _stopping(exits, 0.05, 0.1, exit_after=0.1, exit=exited.set)
    began = time.monotonic()
    stopping.request(lambda: None)
    assert exited.wait(2.0) and time.monotonic() - began >= 0.2 - 0.01
