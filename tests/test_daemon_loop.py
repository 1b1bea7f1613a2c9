"""The loop's step logic with a fake clock and an inline executor: no sleeping.

Transition instants used below:
- Europe/Berlin 2025-03-30 01:00 UTC: 02:00 CET -> 03:00 CEST
- America/New_York 2025-11-02 06:00 UTC: 02:00 EDT -> 01:00 EST (01:00-01:59 twice)
"""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crawlsched.daemon import Daemon, InlineExecutor
from crawlsched.executor import AttemptOutcome, AttemptSpec
from crawlsched.state import State
from helpers.clock import FakeClock, iso
from helpers.history import rows, runs
from helpers.jobs import write_jobs
from helpers.loop import make_daemon, run_until

UTC = timezone.utc


class HandExecutor(InlineExecutor):
    """Queues specs; the test runs them (``run_queued``) and hands their outcomes over (``resolve``) when it wants."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[AttemptSpec] = []
        self.done: list[AttemptOutcome] = []
        self.shutdowns: list[tuple[float, float]] = []

    def submit(self, spec: AttemptSpec) -> None:
        self.queued.append(spec)

    def run_queued(self) -> None:
        self.done += [self.run(spec) for spec in self.queued]
        self.queued = []

    def resolve(self) -> None:
        for outcome in self.done:
            self.deliver(outcome)
        self.done = []

    def unstarted(self) -> list:
        return [spec.key for spec in self.queued]

    def shutdown(self, grace: float, cancel_wait: float, on_wait=None) -> None:
        self.shutdowns.append((grace, cancel_wait))  # the queued specs stay unstarted: never begun


def hand_daemon(home: Path, clock: FakeClock, executor: InlineExecutor, grace: float | None = None) -> Daemon:
    d = make_daemon(home, clock, executor=executor)
    d.grace = grace
    return d


def messages(home: Path) -> list[str]:
    return [r["message"] or "" for r in runs(home)]


def test_jobs_fire_in_due_order_and_not_before(home):
    write_jobs(home, '[[jobs]]\nid = "b"\nname = "b"\nat = "09:06"\ncommand = "true"\nstart_date = 2025-01-01\n\n'
                     '[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    assert rows(home) == []
    run_until(d, clock, datetime(2025, 11, 8, 9, 7, tzinfo=UTC))
    assert [(r[0], iso(r[1])) for r in rows(home)] == [
        ("a", "2025-11-08T09:05:00+00:00"),
        ("b", "2025-11-08T09:06:00+00:00"),
    ]


def test_retry_waits_retry_delay_and_stops_after_max_attempts(home):
    write_jobs(home, '[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "false"\nstart_date = 2025-01-01\n'
                     'max_retries = 2\nretry_delay = 60\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 5, 59, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed")]
    run_until(d, clock, datetime(2025, 11, 8, 9, 6, 0, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed"), (2, "failed")]
    run_until(d, clock, datetime(2025, 11, 8, 12, 0, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert State(home / "crawlsched.db").retries() == []


def test_no_retry_is_scheduled_past_the_next_regular_fire(home):
    write_jobs(home, '[[jobs]]\nid = "f"\nname = "f"\nevery = "10m"\ncommand = "false"\n'
                     'max_retries = 3\nretry_delay = 900\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 25, tzinfo=UTC))
    got = rows(home)
    assert [(r[2], r[3]) for r in got] == [(1, "failed"), (1, "failed"), (1, "failed")]
    assert "next run is due" in runs(home)[0]["message"]


def test_a_fire_during_a_retry_wait_is_skipped(home):
    write_jobs(home, '[[jobs]]\nid = "f"\nname = "f"\nevery = "10m"\ncommand = "false"\n'
                     'max_retries = 1\nretry_delay = 300\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    # No retry may pass the next fire, so shorten the gap between fires instead: a manual fire.
    run_until(d, clock, datetime(2025, 11, 8, 9, 1, tzinfo=UTC))
    d.fire(d.jobs["f"], clock.time(), "manual")
    got = rows(home)
    assert got[-1][3] == "skipped" and got[-1][2] == 0


def test_interval_job_fires_at_first_sight_then_every_interval(home):
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "15m"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, 0, 500_000, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 31, tzinfo=UTC))
    assert [iso(r[1]) for r in rows(home)] == [
        "2025-11-08T09:00:01+00:00",
        "2025-11-08T09:15:01+00:00",
        "2025-11-08T09:30:01+00:00",
    ]


def _down_and_up(home: Path, catch_up: str, every: str = "5m", down: timedelta = timedelta(days=7)) -> list[tuple]:
    write_jobs(home, f'[[jobs]]\nid = "e"\nname = "e"\nevery = "{every}"\ncommand = "true"\ncatch_up = "{catch_up}"\n')
    clock = FakeClock(datetime(2025, 11, 1, 0, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 1, 0, 1, tzinfo=UTC))
    d.shutdown()
    before = len(rows(home))
    clock.advance(down.total_seconds())
    d2 = make_daemon(home, clock)
    d2.start()
    d2.turn()
    d2.collect()
    for _ in range(200):
        d2.turn()
        d2.collect()
    return rows(home)[before:]


def test_seven_days_of_5_minutes_down_is_one_run_and_one_missed_row(home):
    got = _down_and_up(home, "latest")
    missed = [r for r in got if r[3] == "missed"]
    ran = [r for r in got if r[2] > 0]
    assert len(missed) == 1 and missed[0][5] == 7 * 24 * 12 - 1
    assert len(ran) == 1 and ran[0][4] == "catch_up"


def test_catch_up_none_runs_nothing(home):
    got = _down_and_up(home, "none")
    assert [r[3] for r in got] == ["missed"]
    assert got[0][5] == 7 * 24 * 12


def test_catch_up_all_runs_at_most_100_oldest_first(home):
    got = _down_and_up(home, "all")
    ran = [r for r in got if r[2] > 0]
    missed = [r for r in got if r[3] == "missed"]
    assert len(ran) == 100
    assert [r[1] for r in ran] == sorted(r[1] for r in ran)
    assert missed[0][5] == 7 * 24 * 12 - 100


def test_catch_up_latest_ignores_fires_older_than_24h(home):
    got = _down_and_up(home, "latest", every="3d", down=timedelta(days=4, hours=1))
    assert [r[3] for r in got] == ["missed"]


def test_first_start_in_a_home_has_nothing_missed(home):
    write_jobs(home, '[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 12, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    d.turn()
    assert rows(home) == []


def test_berlin_spring_forward_0230_fires_once_just_after_the_jump(home):
    write_jobs(home, '[[jobs]]\nid = "b"\nname = "b"\nat = "02:30"\ncommand = "true"\ntimezone = "Europe/Berlin"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 3, 29, 12, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 3, 31, 12, 0, tzinfo=UTC))
    assert [iso(r[1], "Europe/Berlin") for r in rows(home)] == [
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ]


def test_new_york_fall_back_0130_fires_once(home):
    write_jobs(home, '[[jobs]]\nid = "n"\nname = "n"\nat = "01:30"\ncommand = "true"\ntimezone = "America/New_York"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 1, 12, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 2, 12, 0, tzinfo=UTC))
    assert [iso(r[1], "America/New_York") for r in rows(home)] == ["2025-11-02T01:30:00-04:00"]


def test_every_10_minutes_keeps_real_interval_across_fall_back(home):
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "10m"\ncommand = "true"\ntimezone = "America/New_York"\n')
    clock = FakeClock(datetime(2025, 11, 2, 5, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 2, 7, 0, tzinfo=UTC))
    times = [r[1] for r in rows(home)]
    assert len(times) == 13
    assert {b - a for a, b in zip(times, times[1:])} == {600.0}


@pytest.mark.parametrize("hours", [2, 5])
def test_clock_jump_forward_fires_a_daily_job_once(home, hours):
    write_jobs(home, '[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 8, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    d.turn()
    clock.jump(hours * 3600)
    run_until(d, clock, datetime(2025, 11, 8, 15, 0, tzinfo=UTC))
    assert [iso(r[1]) for r in rows(home)] == ["2025-11-08T09:05:00+00:00"]


def test_clock_jump_forward_2h_coalesces_interval_fires(home):
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "10m"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 8, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 8, 0, 30, tzinfo=UTC))
    clock.jump(2 * 3600)
    d.turn()
    d.collect()
    got = rows(home)
    assert [r[3] for r in got] == ["success", "missed", "success"]
    assert got[1][5] == 11


def test_a_slow_start_is_not_taken_for_a_clock_jump(home, caplog):
    """Recovery and loading can take seconds (a killed run to settle, 100,000 jobs): real time, not a jump."""
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "10m"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 8, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    load = d.store.load

    def slow_load(*args, **kwargs):
        jobfile = load(*args, **kwargs)
        clock.advance(5)  # wall and monotonic move together: time passing, no jump
        return jobfile

    d.store.load = slow_load
    d._apply = (lambda apply: lambda *a, **k: (apply(*a, **k), clock.advance(5))[0])(d._apply)
    with caplog.at_level(logging.WARNING, logger="crawlsched.test"):
        d.start()
        d.turn()
    assert not [r.getMessage() for r in caplog.records if "jumped" in r.getMessage()]


def test_clock_jump_back_one_day_no_duplicate_and_no_stall(home):
    write_jobs(home, '[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n\n'
                     '[[jobs]]\nid = "e"\nname = "e"\nevery = "10m"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 10, tzinfo=UTC))
    daily = [r for r in rows(home) if r[0] == "a"]
    assert len(daily) == 1
    clock.jump(-86400)
    before = len([r for r in rows(home) if r[0] == "e"])
    run_until(d, clock, datetime(2025, 11, 7, 9, 40, tzinfo=UTC))
    # The interval job kept firing every 10 real minutes after the jump ...
    assert len([r for r in rows(home) if r[0] == "e"]) - before == 3
    # ... and the daily job did not fire 09:05 again on the repeated day.
    run_until(d, clock, datetime(2025, 11, 8, 9, 10, tzinfo=UTC))
    assert len([r for r in rows(home) if r[0] == "a"]) == 1


def test_stale_running_row_becomes_interrupted_and_the_chain_continues(home):
    write_jobs(home, '[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n'
                     'max_retries = 2\nretry_delay = 60\n')
    state = State(home / "crawlsched.db").open()
    sched = datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()
    dead_pid = 2**22 + 12345  # above pid_max: never alive
    state.start_attempt("f", sched, 1, 3, trigger="schedule", started_at=sched, pid=dead_pid)
    state.close()
    clock = FakeClock(datetime(2025, 11, 8, 9, 6, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 7, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "interrupted"), (2, "success")]


def test_a_removed_job_gets_no_further_retries(home):
    write_jobs(home, '[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "false"\nstart_date = 2025-01-01\n'
                     'max_retries = 2\nretry_delay = 60\n\n[[jobs]]\nid = "k"\nname = "k"\nat = "10:00"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 5, 30, tzinfo=UTC))
    assert d.chains["f"].retry_due is not None
    write_jobs(home, '[[jobs]]\nid = "k"\nname = "k"\nat = "10:00"\ncommand = "true"\n')
    d.reload(force=True)
    run_until(d, clock, datetime(2025, 11, 8, 9, 30, tzinfo=UTC))
    assert [(r[0], r[2], r[3]) for r in rows(home)] == [("f", 1, "failed")]
    assert State(home / "crawlsched.db").retries() == []


def test_a_broken_file_keeps_the_last_good_jobs(home):
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "10m"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    (home / "jobs.toml").write_text("[[jobs]\nbroken")
    assert d.reload(force=True) is False
    assert d.config_error and "jobs.toml:1" in d.config_error
    assert State(home / "crawlsched.db").daemon().config_ok == 0
    run_until(d, clock, datetime(2025, 11, 8, 9, 21, tzinfo=UTC))
    assert len(rows(home)) == 3
    write_jobs(home, '[[jobs]]\nid = "e2"\nname = "e2"\nevery = "10m"\ncommand = "true"\n')
    assert d.reload(force=True) is True
    assert set(d.jobs) == {"e2"}


def test_nothing_is_done_per_turn_for_jobs_that_are_not_due(home):
    body = "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nat = "23:{i % 60:02d}"\ncommand = "true"\n\n' for i in range(500))
    write_jobs(home, body)
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    heap_before = list(d.heap)
    wait = d.turn()
    assert d.heap == heap_before  # an idle turn touches no job
    assert 0 < wait <= 60


# --- a saved retry never swallows the next regular run ---------------------------------------------

def test_a_saved_retry_overtaken_by_the_next_fire_is_dropped_and_the_fire_is_caught_up(home):
    write_jobs(home, '[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "false"\nstart_date = 2025-01-01\n'
                     'max_retries = 2\nretry_delay = 300\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 6, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed")]
    assert len(State(home / "crawlsched.db").retries()) == 1  # due 09:10
    d.shutdown()
    clock.advance((datetime(2025, 11, 9, 10, 6, tzinfo=UTC) - datetime(2025, 11, 8, 9, 6, tzinfo=UTC)).total_seconds())
    d2 = make_daemon(home, clock)
    d2.start()
    for _ in range(5):
        d2.turn()
        d2.collect()
    got = rows(home)
    day1 = datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()
    day2 = datetime(2025, 11, 9, 9, 5, tzinfo=UTC).timestamp()
    assert [(r[2], r[3]) for r in got if r[1] == day1] == [(1, "failed")]  # no attempt 2, 25 h late
    assert [(r[2], r[4]) for r in got if r[1] == day2] == [(1, "catch_up")]  # today's run is not swallowed
    assert "(next run is due)" in messages(home)[0]


# --- one failing step does not kill the loop ----------------------------------------------------------

def test_a_database_error_in_a_step_is_logged_and_the_loop_goes_on(home, monkeypatch, caplog):
    write_jobs(home, '[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()

    def broken(now):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(d.state, "take_requests", broken)
    d.requests_pending = True
    with caplog.at_level("ERROR", logger="crawlsched.test"):
        wait = d.turn()
    assert 0 < wait <= 1.0  # tried again soon, not in a tight loop
    assert any("run-now requests" in r.getMessage() and r.exc_info for r in caplog.records)
    monkeypatch.undo()
    run_until(d, clock, datetime(2025, 11, 8, 9, 6, tzinfo=UTC))
    assert [r[3] for r in rows(home)] == ["success"]


def test_a_failing_fire_is_popped_replanned_and_does_not_spin(home, monkeypatch):
    write_jobs(home, '[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n\n'
                     '[[jobs]]\nid = "b"\nname = "b"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    clock.advance(1)
    real = d.fire

    def fire(job, *args, **kwargs):
        if job.id == "a":
            raise sqlite3.OperationalError("database is locked")
        return real(job, *args, **kwargs)

    monkeypatch.setattr(d, "fire", fire)
    d.turn()
    d.collect()
    assert d.turn() > 1  # nothing left due: no tight loop
    assert [r[0] for r in rows(home)] == ["b"]  # the other job of the turn still ran
    assert d.planned["a"] == datetime(2025, 11, 9, 9, 5, tzinfo=UTC).timestamp()  # and "a" has its next fire
    assert "a" not in d.chains


# --- shutdown: attempts not begun are dropped first, the grace goes to the executor ---------------------

def test_shutdown_cancels_queued_attempts_before_the_grace_period(home):
    import time

    from crawlsched import shutdown as shutdown_mod

    write_jobs(home, "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nat = "09:05"\ncommand = "true"\n\n' for i in range(3)))
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    ex = HandExecutor()
    d = hand_daemon(home, clock, ex, grace=5)
    d.start()
    clock.advance(1)
    d.turn()
    assert len(ex.queued) == 3
    t0 = time.monotonic()
    d.shutdown()
    assert time.monotonic() - t0 < 1.0  # not the 5 s grace: nothing had begun
    assert ex.shutdowns == [(5, shutdown_mod.CANCEL_WAIT)]  # one shared grace, then the bounded cancel wait
    assert rows(home) == []  # none started; handled_until makes the next start catch them up
    assert State(home / "crawlsched.db").daemon().handled_until <= datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()


@pytest.mark.slow
def test_shutdown_interrupts_attempts_still_running_after_the_grace(home):
    import time

    from crawlsched.local_executor import LocalExecutor

    write_jobs(home, "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nat = "09:05"\ncommand = "sleep 30"\n\n'
                             for i in range(3)))
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    d = hand_daemon(home, clock, LocalExecutor(3), grace=0.3)
    d.start()
    clock.advance(1)
    d.turn()
    deadline = time.monotonic() + 10
    while len(rows(home)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    d.shutdown()
    assert time.monotonic() - t0 < 3  # grace 0.3 once, then their process groups are stopped
    assert [r[3] for r in rows(home)] == ["interrupted"] * 3


# --- a missing job file keeps the last good jobs --------------------------------------------------------

FAILING = ('[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "false"\nstart_date = 2025-01-01\n'
           'max_retries = 2\nretry_delay = 60\n')


def failing_job_waiting_for_its_retry(home: Path) -> tuple[Daemon, FakeClock]:
    """Job ``f`` failed its 09:05 attempt 1 and waits for attempt 2 (09:06); the clock is at 09:05:30."""
    write_jobs(home, FAILING)
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 5, 30, tzinfo=UTC))
    return d, clock


def test_a_missing_job_file_keeps_the_jobs_and_their_retries_until_it_is_back(home):
    d, clock = failing_job_waiting_for_its_retry(home)
    assert d.chains["f"].retry_due is not None
    text = (home / "jobs.toml").read_text()
    (home / "jobs.toml").unlink()
    assert d.reload(force=True) is False
    clock.advance(1)
    d.reload()
    clock.advance(1)
    d.reload()  # the poll path, after STABLE_FOR
    assert set(d.jobs) == {"f"} and "f" in d.chains
    assert d.config_error == "jobs.toml: the file is missing"
    row = State(home / "crawlsched.db").daemon()
    assert row.config_ok == 0 and row.config_error == "jobs.toml: the file is missing"
    assert len(State(home / "crawlsched.db").retries()) == 1
    (home / "jobs.toml").write_text(text)
    clock.advance(1)
    d.reload()
    clock.advance(1)
    assert d.reload() is True
    assert d.config_error is None and State(home / "crawlsched.db").daemon().config_ok == 1
    assert "f" in d.chains  # the same job: its retry goes on


# --- an interval job fires once at its first instant ------------------------------------------------------

def test_an_interval_job_started_exactly_on_its_anchor_fires_once_there(home):
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "15m"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    anchor = d.anchors["e"]
    clock.advance(anchor - clock.time())
    d.turn()
    d.collect()
    assert d.planned["e"] == anchor + 900  # not the anchor a second time
    assert d.fired == 1
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "15m"\ncommand = "true"\nmax_retries = 1\n')
    d.reload(force=True)  # the changed job is re-planned at the same instant
    assert d.planned["e"] == anchor + 900
    d.turn()
    d.collect()
    assert d.fired == 1
    run_until(d, clock, datetime(2025, 11, 8, 9, 10, tzinfo=UTC))
    assert [r[1] for r in rows(home)] == [anchor]


# --- the daemon does not import the web -------------------------------------------------------------------

def test_the_daemon_module_does_not_depend_on_the_web():
    import inspect

    import crawlsched.daemon as daemon_mod
    from crawlsched.cli import daemon as cli_daemon

    assert "crawlsched.web" not in inspect.getsource(daemon_mod)
    assert not hasattr(daemon_mod, "run_daemon")
    assert callable(cli_daemon.run_daemon)


# --- the loop's wait: precise only for a fire --------------------------------------------------------------

def test_only_a_wait_for_a_fire_is_cut_into_precise_selects(home):
    write_jobs(home, '[[jobs]]\nid = "soon"\nname = "soon"\nat = "09:05"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 50, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    assert d.turn() == pytest.approx(10.0)
    assert d.wake_for_fire, "the next wake is the 09:05 fire"
    d.reloads.recheck_at = clock.monotonic() + 3  # a duty (the job file's re-check) comes first
    assert d.turn() == pytest.approx(3.0)
    assert not d.wake_for_fire
    d.reloads.recheck_at = None
    clock.advance(10)
    d.turn()  # fires 09:05; the next fire is tomorrow
    assert not d.wake_for_fire, "a 60 s re-check of the clock needs no precision"


# --- garbage collection: never in the middle of a burst ----------------------------------------------------

def test_a_burst_is_handed_out_with_the_collector_paused_and_it_is_back_after(home, monkeypatch):
    import gc

    write_jobs(home, "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nat = "09:05"\ncommand = "true"\n' for i in range(3)))
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    executor = HandExecutor()
    d = hand_daemon(home, clock, executor)
    d.start()
    seen: list[bool] = []
    real_submit = executor.submit

    def submit(spec):
        seen.append(gc.isenabled())
        if len(seen) == 2:
            raise RuntimeError("a fire failing inside crawlsched")
        return real_submit(spec)

    monkeypatch.setattr(executor, "submit", submit)
    clock.advance(1)
    assert gc.isenabled()
    assert d.fire_due(clock.time()) == 3
    assert seen == [False, False, False], "no collection while the burst is handed out"
    assert gc.isenabled(), "and the collector is back after it, a failing fire included"
    assert "j1" not in d.chains  # never handed over: a later fire starts a new chain


def test_a_burst_is_handed_to_the_executor_as_one(home, monkeypatch):
    write_jobs(home, "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nat = "09:05"\ncommand = "true"\n' for i in range(3)))
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    executor = HandExecutor()
    d = hand_daemon(home, clock, executor)
    d.start()
    calls: list[str] = []
    monkeypatch.setattr(executor, "begin_burst", lambda: calls.append("begin"))
    monkeypatch.setattr(executor, "end_burst", lambda: calls.append("end"))
    real_submit = executor.submit
    monkeypatch.setattr(executor, "submit", lambda spec: calls.append(spec.job_id) or real_submit(spec))
    clock.advance(1)
    assert d.fire_due(clock.time()) == 3
    assert calls == ["begin", "j0", "j1", "j2", "end"]
    write_jobs(home, '[[jobs]]\nid = "one"\nname = "one"\nat = "09:06"\ncommand = "true"\n')
    d.reload(force=True)
    calls.clear()
    clock.advance(60)
    assert d.fire_due(clock.time()) == 1
    assert calls == ["begin", "one", "end"]  # gated too: its next fire is planned after it started


def test_a_started_daemon_has_written_its_parse_cache_for_the_next_start(home):
    from crawlsched.jobcache import CACHE_MIN_BYTES

    body = "".join(f'[[jobs]]\nid = "j{i}"\nevery = "1h"\ncommand = "true"\n\n' for i in range(CACHE_MIN_BYTES // 40))
    (home / "jobs.toml").write_text(body)
    daemon = make_daemon(home, FakeClock(datetime(2025, 1, 1, tzinfo=timezone.utc)))
    daemon.start()
    assert list((home / ".cache").glob("jobs-*.pickle")), "the next start reads the jobs from the cache"
    assert daemon.store.load().jobs == tuple(daemon.jobs.values())
    daemon.shutdown()


def test_a_daemon_that_owns_its_process_loads_and_plans_its_jobs_with_the_collector_paused(home, monkeypatch):
    import gc

    write_jobs(home, '[[jobs]]\nid = "a"\nevery = "1h"\ncommand = "true"\n')
    daemon = make_daemon(home, FakeClock(datetime(2025, 1, 1, tzinfo=timezone.utc)))
    daemon.owns_process = True
    monkeypatch.setattr(daemon, "_settle_memory", lambda: None)  # no freeze of the test process
    seen = []
    real_load, real_apply = daemon.store.load, daemon._apply
    monkeypatch.setattr(daemon.store, "load", lambda **kw: seen.append(("load", gc.isenabled())) or real_load(**kw))
    monkeypatch.setattr(daemon, "_apply", lambda *a, **kw: seen.append(("apply", gc.isenabled())) or real_apply(*a, **kw))
    daemon.start()
    assert seen == [("load", False), ("apply", False)] and gc.isenabled()
    daemon.shutdown()


def test_a_reload_that_changes_the_state_or_executor_is_applied_at_the_next_start_and_said(home, caplog):
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "10m"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "10m"\ncommand = "true"\n',
               defaults='timezone = "UTC"\nstate = "postgresql://crawlsched:hunter2@db.internal/crawlsched"\n')
    with caplog.at_level(logging.WARNING, logger="crawlsched.test"):
        assert d.reload(force=True) is True
        assert d.reload(force=True) is True  # said once per change, not at every reload
    said = [r.getMessage() for r in caplog.records if "restart" in r.getMessage()]
    assert len(said) == 1, said
    assert "postgresql://crawlsched@db.internal/crawlsched" in said[0] and str(home / "crawlsched.db") in said[0]
    assert "hunter2" not in " ".join(r.getMessage() for r in caplog.records)
    assert set(d.jobs) == {"e"}, "the jobs are applied; only the state waits for the restart"


def test_the_start_settles_memory_as_a_first_load_and_a_reload_as_a_replacement(home, monkeypatch):
    import crawlsched.reloads as reloads_module

    write_jobs(home, '[[jobs]]\nid = "a"\nevery = "1h"\ncommand = "true"\n')
    daemon = make_daemon(home, FakeClock(datetime(2025, 1, 1, tzinfo=timezone.utc)))
    settled = []
    monkeypatch.setattr(reloads_module, "settle", lambda whole, first=False: settled.append(first))  # no freeze here
    daemon.start()
    write_jobs(home, '[[jobs]]\nid = "b"\nevery = "1h"\ncommand = "true"\n')
    assert daemon.reload(force=True)
    assert settled == [True, False]  # a reload unfreezes, so that the jobs it replaced can be collected
    daemon.shutdown()


@pytest.mark.parametrize("count, said", [(1, "ready: 1 job, home"), (2, "ready: 2 jobs, home")])
def test_the_ready_line_counts_its_jobs_in_good_english(home, caplog, count, said):
    write_jobs(home, "".join(f'[[jobs]]\nid = "e{n}"\nname = "e{n}"\nevery = "10m"\ncommand = "true"\n\n' for n in range(count)))
    d = make_daemon(home, FakeClock(datetime(2025, 11, 8, 8, 0, tzinfo=UTC)))
    with caplog.at_level(logging.INFO, logger="crawlsched.test"):
        d.start()
    assert [r.getMessage() for r in caplog.records if said in r.getMessage()]
    d.shutdown()
