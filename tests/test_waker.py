"""The loop's wake-up (``crawlsched.waker``): safe from a signal handler, precise for a fire."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from crawlsched import waker as waker_mod
from crawlsched.waker import Waker
from helpers.clock import FakeClock
from helpers.jobs import write_jobs
from helpers.loop import make_daemon
from test_daemon_loop import UTC


def test_a_signal_landing_while_the_wait_holds_its_lock_does_not_deadlock(tmp_path):
    write_jobs(tmp_path, "")
    d = make_daemon(tmp_path, FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC)))
    done = threading.Event()

    def main_thread_in_wait():
        lock = getattr(d.wake, "_cond", None)  # threading.Event's lock, held inside wait()/clear()
        if lock is not None:
            with lock:
                d._on_usr1(10, None)  # a Python signal handler runs in the thread that holds it
        else:
            d._on_usr1(10, None)
        done.set()

    t = threading.Thread(target=main_thread_in_wait, daemon=True)
    t.start()
    t.join(2)
    assert done.is_set(), "the signal handler deadlocked"
    assert d.requests_pending
    assert d.wake.wait(0)  # the loop wakes
    d.wake.clear()
    assert not d.wake.wait(0)


@pytest.mark.parametrize("timeout", [0.001, 0.03, 0.05, 0.051, 0.3, 1.7, 10.0, 29.99, 60.0])
@pytest.mark.parametrize("late_fraction", [0.001, 0.005])  # Linux select: 0.1 % late, 0.5 % when niced
def test_a_long_wait_ends_with_a_short_select(timeout, late_fraction):
    """Model select as waking late by its worst case; the wait must end in a few selects, the
    last one short enough for the 50 µs slack, and no select may run past the deadline."""
    remaining, steps = timeout, []
    while remaining > 0:
        step = waker_mod.wait_step(remaining)
        steps.append(step)
        assert 0 < step <= remaining
        late = max(step * late_fraction, 50e-6)
        if step < remaining:  # a cut step must not overshoot, even at its latest wake
            assert step + late < remaining
        remaining -= step + late
    assert steps[-1] <= waker_mod.PRECISE_WAIT
    assert len(steps) <= 4


def test_the_waker_wakes_at_once_when_set_and_never_before_its_timeout():
    waker = Waker()
    threading.Timer(0.05, waker.set).start()
    t = time.monotonic()
    assert waker.wait(30)  # set by the timer thread: far before the 30 s
    assert time.monotonic() - t < 25
    waker.clear()
    t = time.monotonic()
    assert not waker.wait(0.12, precise=True)  # cut into several selects, still not a moment early
    assert time.monotonic() - t >= 0.12


def test_a_precise_wait_spins_its_last_fraction_of_a_millisecond_instead_of_sleeping(monkeypatch):
    """Waking a sleeping thread costs 0.1-0.2 ms on a VM: a wait for a fire sleeps only until
    ``SPIN`` before its deadline and spins the rest, still seeing a wake that comes meanwhile."""
    calls: list[tuple[float, float]] = []  # (time left when the wait read the clock, its select's timeout)
    real_select = waker_mod.select.select
    real_monotonic = time.monotonic
    waker = Waker()
    deadline = 0.0
    set_after_sleeping = False
    reads: list[float] = []  # the clock as the wait read it: its first read + its timeout is its deadline

    def monotonic() -> float:
        reads.append(real_monotonic())
        return reads[-1]

    def select(r, w, x, timeout=None):  # time left by the wait's own clock reads, so load cannot skew it
        calls.append((reads[0] + deadline - reads[-1], timeout))
        ready = real_select(r, w, x, timeout)
        if timeout and set_after_sleeping:
            waker.set()  # a worker's outcome arrives while the loop spins
        return ready

    monkeypatch.setattr(waker_mod.select, "select", select)
    monkeypatch.setattr(waker_mod.time, "monotonic", monotonic)
    deadline = 0.12  # the wait's timeout
    assert not waker.wait(0.12, precise=True)
    assert reads[-1] >= reads[0] + deadline  # never a moment early
    sleeps = [(left, timeout) for left, timeout in calls if timeout]
    assert sleeps and all(timeout <= left - waker_mod.SPIN + 1e-4 for left, timeout in sleeps)
    set_after_sleeping = True
    reads.clear()
    deadline = 0.03
    assert waker.wait(0.03, precise=True)  # seen by the spin, not lost until the next wait
