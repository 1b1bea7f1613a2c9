"""Catch-up and coalesce arithmetic at fixed instants: no database, no daemon, no clock.

Transition instants used below:
- Europe/Berlin 2025-03-30 01:00 UTC: 02:00 CET -> 03:00 CEST (02:00-02:59 does not exist)
- America/New_York 2025-11-02 06:00 UTC: 02:00 EDT -> 01:00 EST (01:00-01:59 happens twice)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from crawlsched import catchup
from crawlsched.catchup import CATCH_UP_ALL_LIMIT, LastRun, Rowed, Seen
from crawlsched.model import Defaults
from crawlsched.validate import build_job

UTC = timezone.utc
T0 = datetime(2025, 11, 1, 0, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
SLACK = 60.0  # the daemon's HEARTBEAT_SLACK


def job(**kw):
    raw = {"id": "j", "name": "j", "command": "true", "timezone": "UTC", **kw}
    return build_job(raw, Defaults())


def at(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def local(ts: float, tz: str) -> str:
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat()


def down_a_week(catch_up: str, every: str = "5m", down: float = 7 * DAY):
    """An ``every`` job seen (and anchored) at T0, handled until T0 + 60 s, the daemon back ``down`` later."""
    j = job(every=every, catch_up=catch_up)
    now = T0 + 60 + down
    return catchup.catch_up(j, now, LastRun(handled_until=T0 + 60), Seen(T0, T0, T0), T0, heartbeat_slack=SLACK)


def test_catch_up_latest_runs_the_newest_fire_and_records_the_rest_as_one_missed_row():
    plan = down_a_week("latest")
    assert plan.runs == [T0 + 7 * DAY] and plan.newest == T0 + 7 * DAY
    assert plan.missed.count == 7 * 24 * 12 - 1
    assert (plan.missed.first, plan.missed.last) == (T0 + 300, T0 + 7 * DAY - 300)
    assert plan.missed.message == ("missed 2015 fires while the daemon was down (2025-11-01 00:05:00 to"
                                   " 2025-11-07 23:55:00); catch_up = latest")
    assert plan.extra_missed == ()


def test_catch_up_none_runs_nothing_and_records_every_fire_missed():
    plan = down_a_week("none")
    assert plan.runs == []
    assert plan.missed.count == 7 * 24 * 12 and plan.missed.last == T0 + 7 * DAY
    assert plan.newest == T0 + 7 * DAY  # the job's last fire: the next one is planned after it


def test_catch_up_all_runs_the_newest_100_oldest_first_and_the_older_ones_are_missed():
    plan = down_a_week("all")
    assert len(plan.runs) == CATCH_UP_ALL_LIMIT == 100
    assert plan.runs == [T0 + 7 * DAY - 300 * i for i in range(99, -1, -1)]
    assert plan.missed.count == 7 * 24 * 12 - 100
    assert plan.missed.last == plan.runs[0] - 300


def test_catch_up_all_with_fewer_than_100_fires_runs_them_all():
    plan = down_a_week("all", down=3600)
    assert plan.runs == [T0 + 300 * i for i in range(1, 13)] and plan.missed is None


def test_catch_up_latest_ignores_a_fire_older_than_24h():
    plan = down_a_week("latest", every="3d", down=4 * DAY + 3600)
    assert plan.runs == []
    assert plan.missed.count == 1 and plan.missed.first == T0 + 3 * DAY


def test_catch_up_latest_runs_a_fire_just_inside_24h():
    j = job(every="3d", catch_up="latest")
    now = T0 + 4 * DAY  # the fire of T0 + 3 d is exactly 24 h old
    plan = catchup.catch_up(j, now, LastRun(handled_until=T0 + 60), Seen(T0, T0, T0), T0, heartbeat_slack=SLACK)
    assert plan.runs == [T0 + 3 * DAY] and plan.missed is None


def test_a_job_no_daemon_saw_before_has_nothing_missed():
    j = job(every="5m")
    previous = LastRun(handled_until=T0)
    assert catchup.catch_up(j, T0 + DAY, previous, None, None, heartbeat_slack=SLACK) is None
    assert catchup.catch_up(j, T0 + DAY, previous, Seen(None, None, None), None, heartbeat_slack=SLACK) is None


def test_only_fires_after_the_job_was_first_seen_count():
    j = job(at="09:05", start_date="2025-01-01")
    seen_at = at(2025, 11, 5, 12, 0)  # seen by a daemon after the previous one handled its fires
    plan = catchup.catch_up(j, at(2025, 11, 8, 12, 0), LastRun(handled_until=T0), Seen(seen_at), None,
                            heartbeat_slack=SLACK)
    assert plan.missed.first == at(2025, 11, 6, 9, 5) and plan.missed.count == 2
    assert plan.runs == [at(2025, 11, 8, 9, 5)]


def test_nothing_is_owed_when_the_previous_daemon_handled_everything_until_now():
    j = job(every="5m")
    assert catchup.catch_up(j, T0 + 100, LastRun(handled_until=T0 + 100), Seen(T0, T0, T0), T0,
                            heartbeat_slack=SLACK) is None


def test_a_daemon_of_an_older_version_counts_from_its_last_heartbeat_less_the_slack():
    j = job(every="5m", catch_up="none")
    previous = LastRun(handled_until=None, stopped_at=None, heartbeat=T0 + 3600)
    # Its last fire (T0 + 3600) was handled: the count starts after the later of it and heartbeat - slack.
    plan = catchup.catch_up(j, T0 + 7200, previous, Seen(T0, T0, T0 + 3600), T0, heartbeat_slack=SLACK)
    assert plan.missed.first == T0 + 3900 and plan.missed.count == 12
    stopped = LastRun(handled_until=None, stopped_at=T0 + 3000, heartbeat=T0 + 3600)
    plan = catchup.catch_up(j, T0 + 7200, stopped, Seen(T0, T0, None), T0, heartbeat_slack=SLACK)
    assert plan.missed.first == T0 + 3000  # stopped_at wins over the heartbeat; 60 s slack back is 2940


def test_a_fire_that_waited_for_a_worker_has_no_row_and_is_recorded_missed_on_its_own():
    j = job(every="5m", catch_up="latest")
    # handled until T0 + 60; the fire of T0 + 300 never got a row, T0 + 600 and T0 + 900 did (skipped, run).
    rowed = Rowed(frozenset({T0 + 600, T0 + 900}))
    plan = catchup.catch_up(j, T0 + 1000, LastRun(handled_until=T0 + 60), Seen(T0, T0, T0), T0,
                            heartbeat_slack=SLACK, rowed=rowed)
    assert plan.runs == [] and plan.missed is None  # after the newest row nothing is due yet
    assert [(m.count, m.first, m.last) for m in plan.extra_missed] == [(1, T0 + 300, T0 + 300)]
    assert plan.extra_missed[0].message.endswith("it waited for a worker when the daemon stopped")
    assert plan.newest == T0 + 300


def test_holes_are_one_missed_row_per_stretch_and_never_cover_a_rowed_fire():
    j = job(every="5m", catch_up="none")
    rowed = Rowed(frozenset({T0 + 900}), ranges=((T0 + 1500, T0 + 1800),))
    plan = catchup.catch_up(j, T0 + 2000, LastRun(handled_until=T0 + 60), Seen(T0, T0, T0), T0,
                            heartbeat_slack=SLACK, rowed=rowed)
    assert [(m.first, m.last, m.count) for m in plan.extra_missed] == [(T0 + 300, T0 + 600, 2), (T0 + 1200, T0 + 1200, 1)]


def test_with_catch_up_all_the_holes_run_before_the_downtime_fires():
    j = job(every="5m", catch_up="all")
    rowed = Rowed(frozenset({T0 + 600}))
    plan = catchup.catch_up(j, T0 + 1300, LastRun(handled_until=T0 + 60), Seen(T0, T0, T0), T0,
                            heartbeat_slack=SLACK, rowed=rowed)
    assert plan.runs == [T0 + 300, T0 + 900, T0 + 1200] and plan.extra_missed == ()


def test_with_catch_up_all_holes_and_downtime_fires_together_run_the_newest_100():
    j = job(every="5m", catch_up="all")
    rowed = Rowed(frozenset({T0 + 1200}))  # T0 + 300, 600 and 900 never got a row
    now = T0 + 1200 + 150 * 300
    plan = catchup.catch_up(j, now, LastRun(handled_until=T0 + 60), Seen(T0, T0, T0), T0,
                            heartbeat_slack=SLACK, rowed=rowed)
    assert plan.runs == [now - 300 * i for i in range(99, -1, -1)]
    assert plan.missed.count == 50 and plan.missed.last == plan.runs[0] - 300


def test_catch_up_across_berlin_spring_forward_runs_the_0230_fire_at_0300_once():
    j = job(at="02:30", timezone="Europe/Berlin", start_date="2025-01-01")
    plan = catchup.catch_up(j, at(2025, 3, 30, 12, 0), LastRun(handled_until=at(2025, 3, 29, 12, 0)),
                            Seen(at(2025, 3, 1, 0, 0)), None, heartbeat_slack=SLACK)
    assert [local(t, "Europe/Berlin") for t in plan.runs] == ["2025-03-30T03:00:00+02:00"]
    assert plan.missed is None


def test_catch_up_across_new_york_fall_back_counts_the_0130_fire_once():
    j = job(at="01:30", timezone="America/New_York", start_date="2025-01-01", catch_up="none")
    plan = catchup.catch_up(j, at(2025, 11, 2, 12, 0), LastRun(handled_until=at(2025, 11, 1, 12, 0)),
                            Seen(at(2025, 10, 1, 0, 0)), None, heartbeat_slack=SLACK)
    assert plan.missed.count == 1 and local(plan.missed.first, "America/New_York") == "2025-11-02T01:30:00-04:00"


def test_coalesce_runs_the_newest_due_fire_and_counts_the_older_ones_missed():
    j = job(every="10m")
    anchor = at(2025, 11, 8, 8, 0)
    newest, missed = catchup.coalesce(j, at(2025, 11, 8, 8, 10), at(2025, 11, 8, 10, 0, 30), anchor)
    assert newest == at(2025, 11, 8, 10, 0)
    assert (missed.count, missed.first, missed.last) == (11, at(2025, 11, 8, 8, 10), at(2025, 11, 8, 9, 50))
    assert missed.message == "missed 11 fires (2025-11-08 08:10:00 to 2025-11-08 09:50:00): the daemon woke late"


def test_coalesce_of_a_daily_job_woken_hours_late_runs_its_fire_once_and_misses_none():
    j = job(at="09:05", start_date="2025-01-01")
    assert catchup.coalesce(j, at(2025, 11, 8, 9, 5), at(2025, 11, 8, 14, 0), None) == (at(2025, 11, 8, 9, 5), None)


@pytest.mark.parametrize("late", [timedelta(seconds=1), timedelta(minutes=9, seconds=59)])
def test_coalesce_before_the_next_fire_keeps_the_scheduled_one(late):
    j = job(every="10m")
    scheduled = at(2025, 11, 8, 8, 10)
    assert catchup.coalesce(j, scheduled, scheduled + late.total_seconds(), at(2025, 11, 8, 8, 0)) == (scheduled, None)


def test_a_missed_stretch_of_one_fire_says_fire_not_fires():
    j = job(every="10m")
    _, missed = catchup.coalesce(j, at(2025, 11, 8, 8, 10), at(2025, 11, 8, 8, 20), at(2025, 11, 8, 8, 0))
    assert missed.count == 1 and missed.message.startswith("missed 1 fire (")


def test_rowed_holds_instants_and_ranges():
    rowed = Rowed(frozenset({5.0}), ((10.0, 20.0),))
    assert rowed.holds(5.0) and rowed.holds(10.0) and rowed.holds(20.0) and not rowed.holds(21.0)
    assert rowed.newest() == 20.0 and Rowed().newest() is None


def test_with_catch_up_all_holes_beyond_the_newest_100_are_recorded_missed_not_dropped():
    j = job(every="5m", catch_up="all")
    rowed = Rowed(frozenset({T0 + 1200}))  # T0 + 300, 600 and 900 waited for a worker and never got a row
    now = T0 + 1200 + 150 * 300  # then 150 fires of downtime: the newest 100 run, the rest are missed
    plan = catchup.catch_up(j, now, LastRun(handled_until=T0 + 60), Seen(T0, T0, T0), T0,
                            heartbeat_slack=SLACK, rowed=rowed)
    assert len(plan.runs) == CATCH_UP_ALL_LIMIT
    assert [(m.count, m.first, m.last) for m in plan.extra_missed] == [(3, T0 + 300, T0 + 900)]
