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
from crawlsched.state import State
from crawlsched.store import JobStore
from daemon_helpers import FakeClock

UTC = timezone.utc


def write_jobs(home: Path, body: str) -> None:
    (home / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\n\n' + body)


def make_daemon(home: Path, clock: FakeClock) -> Daemon:
    log = logging.getLogger("crawlsched.test")
    store = JobStore(home / "jobs.toml", cache_dir=home / ".cache")
    state = State(home / "crawlsched.db")
    return Daemon(store, state, home, log, clock=clock.time, monotonic=clock.monotonic,
                  executor=InlineExecutor(), notify=lambda _msg: False, duties=False)


def run_until(daemon: Daemon, clock: FakeClock, until: datetime) -> None:
    """Drive turns, moving the fake clock to each due time, up to ``until``."""
    end = until.timestamp()
    for _ in range(10_000):
        wait = daemon.turn()
        daemon.collect()
        nxt = clock.time() + max(wait, 0.001)
        if nxt > end:
            clock.advance(end - clock.time())
            daemon.turn()
            daemon.collect()
            return
        clock.advance(nxt - clock.time())
    raise AssertionError("loop did not reach the end time")


def rows(home: Path, where: str = "1=1") -> list[tuple]:
    con = sqlite3.connect(home / "crawlsched.db")
    try:
        return con.execute(
            f"SELECT job_id, scheduled_for, attempt, status, trigger, missed_count FROM runs WHERE {where} ORDER BY id"
        ).fetchall()
    finally:
        con.close()


def iso(ts: float, tz: str = "UTC") -> str:
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


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
    con = sqlite3.connect(home / "crawlsched.db")
    assert "next run is due" in con.execute("SELECT message FROM runs ORDER BY id LIMIT 1").fetchone()[0]


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
    assert State(home / "crawlsched.db").daemon()["config_ok"] == 0
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
