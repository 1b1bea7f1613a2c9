"""Scenarios 3-5: the wall clock jumps, daylight saving in the loop, and the host's zone changes.

Anchors: Vixie cron / cronie on clock changes (a jump forward of less than 3 h runs the skipped
fixed-time jobs once, a jump back does not repeat them); cronie's DST rule (a fixed time in a
repeated hour fires in the first pass only, a wildcard hour in both); systemd timers'
``OnCalendar=… Europe/Berlin`` (a timer keeps its own zone whatever the host's is).

The fake-clock jump and DST tests of tests/test_daemon_loop.py are referenced in
docs/RELIABILITY.md, not repeated; these add what they do not cover.

Transition instants used below:
- Europe/Berlin 2025-10-26 01:00 UTC: 03:00 CEST -> 02:00 CET (02:00-02:59 twice)
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crawlsched.daemon import Daemon, InlineExecutor
from crawlsched.state import State
from crawlsched.store import JobStore
from helpers.clock import FakeClock, iso
from helpers.history import rows
from helpers.jobs import write_jobs
from helpers.loop import make_daemon, quiet_logger, run_until
from helpers.process import cli, DaemonProcess, wait_for

UTC = timezone.utc


def test_berlin_fall_back_0230_fires_once_in_the_first_pass(home):
    (home / "jobs.toml").write_text(
        '[[jobs]]\nid = "b"\nname = "b"\nat = "02:30"\ncommand = "true"\ntimezone = "Europe/Berlin"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 10, 25, 12, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 10, 27, 12, 0, tzinfo=UTC))
    assert [iso(r[1], "Europe/Berlin") for r in rows(home)] == [
        "2025-10-26T02:30:00+02:00",  # the first pass only
        "2025-10-27T02:30:00+01:00",
    ]


def test_berlin_fall_back_wildcard_hour_fires_in_both_passes(home):
    (home / "jobs.toml").write_text(
        '[[jobs]]\nid = "w"\nname = "w"\ncron = "30 * * * *"\ncommand = "true"\ntimezone = "Europe/Berlin"\n'
        "start_date = 2025-01-01\n")
    clock = FakeClock(datetime(2025, 10, 25, 23, 15, tzinfo=UTC))  # 01:15 CEST
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 10, 26, 2, 0, tzinfo=UTC))
    assert [iso(r[1], "Europe/Berlin") for r in rows(home)] == [
        "2025-10-26T01:30:00+02:00",
        "2025-10-26T02:30:00+02:00",
        "2025-10-26T02:30:00+01:00",
    ]


def test_daemon_started_in_the_second_pass_does_not_refire_the_first_pass(home):
    # America/New_York 2025-11-02 06:00 UTC: 02:00 EDT -> 01:00 EST. "50 1 * * *" fired at 01:50 EDT;
    # a daemon (re)started at 01:45 EST must wait for tomorrow, not fire 01:50 EDT again and again.
    (home / "jobs.toml").write_text(
        '[[jobs]]\nid = "n"\nname = "n"\ncron = "50 1 * * *"\ncommand = "true"\ntimezone = "America/New_York"\n'
        "start_date = 2025-01-01\n")
    clock = FakeClock(datetime(2025, 11, 2, 5, 40, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 2, 6, 0, tzinfo=UTC))
    d.shutdown()
    clock.advance(45 * 60)  # 01:45 EST, the second pass
    d2 = make_daemon(home, clock)
    d2.start()
    run_until(d2, clock, datetime(2025, 11, 3, 12, 0, tzinfo=UTC))
    assert [iso(r[1], "America/New_York") for r in rows(home)] == [
        "2025-11-02T01:50:00-04:00",
        "2025-11-03T01:50:00-05:00",
    ]


# --- the schedule-library duties after a real wall-clock jump (time-machine moves time.time) ---

def _real_clock_daemon(home: Path) -> Daemon:
    store = JobStore(home / "jobs.toml", cache_dir=home / ".cache")
    return Daemon(store, State(home / "crawlsched.db"), home, quiet_logger(), executor=InlineExecutor(),
                  notify=lambda _m: False, duties=True)


def _turns(d: Daemon, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        wait = d.turn()
        time.sleep(min(wait, 0.1, max(0.0, end - time.monotonic())))


@pytest.mark.slow
@pytest.mark.parametrize("jump", [timedelta(days=-1), timedelta(hours=-1), timedelta(hours=5)],
                         ids=["back-1-day", "back-1-hour", "forward-5h"])
def test_heartbeat_and_file_polling_keep_running_after_a_wall_clock_jump(home, jump, monkeypatch):
    import time_machine

    from crawlsched import duties as duties_module

    monkeypatch.setattr(duties_module, "HEARTBEAT_EVERY", 2)  # the duty's interval, shortened for the test
    write_jobs(home, "")
    with time_machine.travel(datetime(2025, 11, 8, 9, 0, tzinfo=UTC), tick=True) as traveller:
        d = _real_clock_daemon(home)
        d.start()
        _turns(d, 0.5)
        traveller.shift(jump)
        jumped_at = time.time()
        _turns(d, 0.3)
        longest = max(job.interval * {"seconds": 1, "minutes": 60}[job.unit] for job in d.duties.scheduler.jobs)
        assert d.duties.idle_seconds is not None and d.duties.idle_seconds <= longest  # rebuilt, not a day away
        # Heartbeats continue on the new clock ...
        _turns(d, 3)
        beat = State(home / "crawlsched.db").open().daemon().heartbeat
        assert jumped_at <= beat <= time.time()
        # ... and so does polling the job file: a job written now is loaded within a few seconds.
        write_jobs(home, '[[jobs]]\nid = "late"\nname = "late"\ncron = "0 0 1 1 *"\ncommand = "true"\n')
        _turns(d, 3)
        assert "late" in d.jobs
        d.shutdown()


# --- the host's zone changes under the daemon ---------------------------------------------

@pytest.mark.slow
def test_a_changed_host_zone_moves_no_job(home):
    write_jobs(home, '[[jobs]]\nid = "berlin"\nname = "berlin"\nat = "09:05"\ncommand = "true"\ntimezone = "Europe/Berlin"\n',
               defaults="")
    added = cli(home, "add", "Tokyo made", "--at", "07:30", "--command", "true", env={"TZ": "Asia/Tokyo"}, check=True)
    assert added.returncode == 0
    assert 'timezone = "Asia/Tokyo"' in (home / "jobs.toml").read_text()  # `add` writes the zone explicitly
    seen = []
    for tz in ("Asia/Tokyo", "America/Los_Angeles"):
        d = DaemonProcess(home, env={"TZ": tz}).start()
        try:
            listed = json.loads(cli(home, "list", "--json", env={"TZ": tz}, check=True).stdout)["jobs"]
            status = wait_for(lambda: json.loads(cli(home, "status", "--json", env={"TZ": tz}).stdout), 10, "status")
        finally:
            assert d.stop() == 0
        seen.append(({j["id"]: (j["timezone"], j["next_run"], j["next_run_iso"]) for j in listed},
                     datetime.fromisoformat(status["next_run_iso"])))
    assert seen[0] == seen[1]
    assert seen[0][0]["berlin"][0] == "Europe/Berlin" and seen[0][0]["berlin"][1].endswith("09:05:00")
    assert seen[0][0]["tokyo-made"][0] == "Asia/Tokyo" and seen[0][0]["tokyo-made"][1].endswith("07:30:00")
