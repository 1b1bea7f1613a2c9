"""Fire times at fixed instants. Offsets are checked by comparing isoformat() strings.

Transition instants used below:
- Europe/Berlin 2025-03-30 01:00 UTC: 02:00 CET -> 03:00 CEST (02:00-02:59 does not exist)
- Europe/Berlin 2025-10-26 01:00 UTC: 03:00 CEST -> 02:00 CET (02:00-02:59 happens twice)
- America/New_York 2025-11-02 06:00 UTC: 02:00 EDT -> 01:00 EST (01:00-01:59 happens twice)
- America/New_York 2025-03-09 07:00 UTC: 02:00 EST -> 03:00 EDT
"""

from datetime import date, datetime, timedelta, timezone

import pytest

from crawlsched import timing
from crawlsched.errors import InvalidValue
from crawlsched.model import Defaults
from crawlsched.schedules import parse_cron
from crawlsched.validate import build_job

UTC = timezone.utc


def job(**kw):
    raw = {"id": "j", "url": "https://example.com/", "timezone": "UTC", **kw}
    return build_job(raw, Defaults())


def local_fires(j, after, n, anchor=None):
    out, t = [], after
    for _ in range(n):
        t = timing.next_fire(j, t, anchor)
        if t is None:
            break
        out.append(t.astimezone(j.tz).isoformat())
    return out


def test_at_is_the_cron_expression_with_one_code_path():
    assert job(at="09:05").cron == "5 9 * * *"
    a = job(at="09:05", timezone="Asia/Jakarta")
    c = job(cron="5 9 * * *", timezone="Asia/Jakarta")
    after = datetime(2025, 11, 7, 12, tzinfo=UTC)
    assert local_fires(a, after, 3) == local_fires(c, after, 3)


def test_jakarta_has_no_dst_and_fires_daily_at_0905():
    j = job(at="09:05", timezone="Asia/Jakarta")
    assert local_fires(j, datetime(2025, 11, 7, 12, tzinfo=UTC), 2) == [
        "2025-11-08T09:05:00+07:00",
        "2025-11-09T09:05:00+07:00",
    ]


def test_berlin_spring_forward_0230_fires_once_right_after_the_jump():
    j = job(at="02:30", timezone="Europe/Berlin")
    assert local_fires(j, datetime(2025, 3, 29, 12, tzinfo=UTC), 3) == [
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
        "2025-04-01T02:30:00+02:00",
    ]


def test_berlin_fall_back_0230_fires_once():
    j = job(at="02:30", timezone="Europe/Berlin")
    assert local_fires(j, datetime(2025, 10, 25, 12, tzinfo=UTC), 2) == [
        "2025-10-26T02:30:00+02:00",
        "2025-10-27T02:30:00+01:00",
    ]


def test_new_york_fall_back_0130_fires_once():
    j = job(at="01:30", timezone="America/New_York")
    assert local_fires(j, datetime(2025, 11, 1, 12, tzinfo=UTC), 2) == [
        "2025-11-02T01:30:00-04:00",
        "2025-11-03T01:30:00-05:00",
    ]


def test_wildcard_hour_fires_in_both_passes_of_the_repeated_hour():
    j = job(cron="30 * * * *", timezone="Europe/Berlin")
    assert local_fires(j, datetime(2025, 10, 25, 23, tzinfo=UTC), 4) == [
        "2025-10-26T01:30:00+02:00",
        "2025-10-26T02:30:00+02:00",
        "2025-10-26T02:30:00+01:00",
        "2025-10-26T03:30:00+01:00",
    ]


@pytest.mark.parametrize(
    "tz,after",
    [
        pytest.param("Europe/Berlin", datetime(2025, 3, 30, 0, 30, tzinfo=UTC), id="berlin-spring"),
        pytest.param("Europe/Berlin", datetime(2025, 10, 26, 0, 30, tzinfo=UTC), id="berlin-fall"),
        pytest.param("America/New_York", datetime(2025, 11, 2, 5, 30, tzinfo=UTC), id="ny-fall"),
    ],
)
def test_every_10_minutes_keeps_its_real_interval_across_dst(tz, after):
    anchor = datetime(2025, 1, 1, tzinfo=UTC)
    j = job(every="10m", timezone=tz)
    fires = list(timing.fires_between(j, after, after + timedelta(hours=2), anchor))
    assert len(fires) == 12
    assert all(b - a == timedelta(minutes=10) for a, b in zip(fires, fires[1:]))


def test_start_in_the_future_first_fire_is_on_the_start_day():
    j = job(at="09:05", timezone="Asia/Jakarta", start_date=date(2025, 11, 8))
    assert local_fires(j, datetime(2025, 1, 1, tzinfo=UTC), 1) == ["2025-11-08T09:05:00+07:00"]


def test_end_date_is_inclusive_and_then_nothing():
    j = job(at="09:05", timezone="Asia/Jakarta", start_date=date(2025, 12, 30), end_date=date(2025, 12, 31))
    assert local_fires(j, datetime(2025, 12, 1, tzinfo=UTC), 5) == [
        "2025-12-30T09:05:00+07:00",
        "2025-12-31T09:05:00+07:00",
    ]
    assert timing.is_finished(j, datetime(2025, 12, 31, 3, tzinfo=UTC))
    assert not timing.is_finished(j, datetime(2025, 12, 31, 1, tzinfo=UTC))


def test_leap_day_cron_fires_only_on_leap_years():
    j = job(cron="0 12 29 2 *")
    assert local_fires(j, datetime(2025, 1, 1, tzinfo=UTC), 2) == [
        "2028-02-29T12:00:00+00:00",
        "2032-02-29T12:00:00+00:00",
    ]


def test_daily_job_across_leap_day():
    j = job(at="00:00")
    assert local_fires(j, datetime(2028, 2, 28, 1, tzinfo=UTC), 2) == [
        "2028-02-29T00:00:00+00:00",
        "2028-03-01T00:00:00+00:00",
    ]


@pytest.mark.parametrize("dow,expected_day", [("0", 7), ("7", 7), ("1", 8)], ids=["0-sunday", "7-sunday", "1-monday"])
def test_cron_day_of_week_numbers(dow, expected_day):
    # 2025-12-06 is a Saturday: the next Sunday is the 7th, the next Monday the 8th.
    j = job(cron=f"0 10 * * {dow}")
    fire = timing.next_fire(j, datetime(2025, 12, 6, 12, tzinfo=UTC))
    assert fire.day == expected_day


def test_impossible_cron_is_refused():
    with pytest.raises(InvalidValue) as err:
        parse_cron("0 0 31 2 *")
    assert "cron" in str(err.value) and "0 0 31 2 *" in str(err.value)


def test_next_fire_is_strictly_after():
    j = job(at="09:05")
    t = datetime(2025, 11, 8, 9, 5, tzinfo=UTC)
    assert timing.next_fire(j, t).isoformat() == "2025-11-09T09:05:00+00:00"
    assert timing.next_fire(j, t - timedelta(microseconds=1)) == t


def test_prev_fire_includes_the_instant_itself():
    j = job(at="09:05")
    t = datetime(2025, 11, 8, 9, 5, tzinfo=UTC)
    assert timing.prev_fire(j, t) == t
    assert timing.prev_fire(j, t - timedelta(seconds=1)) == t - timedelta(days=1)


def test_every_anchor_is_the_first_fire():
    anchor = datetime(2025, 11, 8, 10, 0, 0, tzinfo=UTC)
    j = job(every="15m")
    assert timing.next_fire(j, anchor - timedelta(seconds=1), anchor) == anchor
    assert timing.next_fire(j, anchor, anchor) == anchor + timedelta(minutes=15)


def test_count_of_seven_days_of_five_minutes_without_walking():
    anchor = datetime(2025, 11, 1, tzinfo=UTC)
    j = job(every="5m")
    n = timing.count_fires(j, anchor, anchor + timedelta(days=7), anchor)
    assert n == 7 * 24 * 12


def test_first_fire_on_sight_rounds_up_to_whole_seconds():
    j = job(every="1m")
    assert timing.first_fire_on_sight(j, datetime(2025, 1, 1, 0, 0, 0, 300, tzinfo=UTC)).isoformat() == "2025-01-01T00:00:01+00:00"


def test_machine_timezone_reads_tz():
    assert timing.machine_timezone({"TZ": "Asia/Jakarta"}) in ("Asia/Jakarta",)
    assert timing.machine_timezone({"TZ": "Not/AZone"}) != "Not/AZone"


def test_known_fires_saved_by_one_process_give_the_same_answers_in_another():
    j = job(cron="7 3 * * *", timezone="Europe/Berlin")
    after = datetime(2025, 3, 29, 12, 0, 30, tzinfo=UTC)
    first = timing.next_fire(j, after)
    _, known = timing.known_fires()
    assert known[(j.cron, "Europe/Berlin")] == (datetime(2025, 3, 29, 12, 0, tzinfo=UTC).timestamp(), first.timestamp())
    timing._known.clear()
    timing._cron_after_minute.cache_clear()
    timing.learn_fires(known)
    # Inside the known interval the saved answer is used; it is the exact answer.
    later = datetime(2025, 3, 30, 0, 59, tzinfo=UTC)
    assert timing.next_fire(j, later) == first
    assert timing._cron_after_minute.cache_info().currsize == 0
    # At the fire itself the interval ends: the next one is computed, not taken from the memo.
    assert timing.next_fire(j, first).isoformat() == "2025-03-31T01:07:00+00:00"


def test_learn_fires_ignores_malformed_entries():
    timing.learn_fires({("x", "UTC"): (5.0, 1.0), "bad": (1.0, 2.0)})  # type: ignore[dict-item]
    assert ("x", "UTC") not in timing._known and "bad" not in timing._known


# --- the end of the calendar: the last allowed date (9999-12-30) in the zones furthest from UTC -------------

@pytest.mark.parametrize("tz", ["Pacific/Kiritimati", "Etc/GMT+12", "UTC"])  # UTC+14, UTC-12
def test_a_cron_job_whose_next_fire_is_past_year_9999_has_none(tz):
    j = job(cron="0 0 1 1 *", start_date=date(9999, 12, 30), end_date=date(9999, 12, 30), timezone=tz)
    assert timing.next_fire(j, datetime(2025, 1, 1, tzinfo=UTC)) is None
    assert timing.window(j)[1] is not None
    open_ended = job(cron="0 0 1 1 *", start_date=date(9999, 12, 30), timezone=tz)
    assert timing.next_fire(open_ended, datetime(2025, 1, 1, tzinfo=UTC)) is None  # 10000-01-01 is no date
    assert timing.is_finished(j, datetime(2025, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("tz", ["Pacific/Kiritimati", "Etc/GMT+12", "UTC"])
def test_an_interval_job_whose_next_fire_is_past_year_9999_has_none(tz):
    e = job(every="3650d", start_date=date(9999, 12, 30), timezone=tz)
    first = timing.next_fire(e, datetime(2025, 1, 1, tzinfo=UTC))
    assert first is not None and first.astimezone(e.tz).date() == date(9999, 12, 30)
    assert timing.next_fire(e, first) is None  # the next would be in year 10009
    assert timing.count_fires(e, first - timedelta(days=1), first) == 1


def test_prev_fire_that_would_be_before_year_1_is_none():
    # 0001-01-01 00:00 at UTC+14 is 0000-12-31 10:00 UTC: no datetime holds it.
    j = job(cron="0 0 1 1 *", timezone="Etc/GMT-14")
    assert timing.prev_fire(j, datetime(1, 1, 1, 12, tzinfo=UTC)) is None
