"""The validators (crawlsched/validate.py): single values, and a whole job or [defaults] table.

Each refusal names the field and the value (a secret is never echoed); each accepted value
comes back in its one written form.

SPEC §7: an interval or delay beyond 10 years, a date beyond 9999-12-30, a
number beyond 2^53 are refused where they are built, naming the field, the
value and what is allowed: never an OverflowError or a ValueError later.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import pytest

from crawlsched.durations import MAX_INT, MAX_SECONDS, HugeNumber, check_int, check_seconds, parse_duration, parse_every
from crawlsched.errors import InvalidValue
from crawlsched.model import CatchUp, Defaults
from crawlsched.schedules import check_date, check_timezone, parse_at, parse_cron
from crawlsched.urls import check_url
from crawlsched.validate import (
    build_defaults,
    build_job,
    check_catch_up,
    check_headers,
    check_id,
    check_name,
    slug_id,
)

# --- validators match the whole text (no "$" before a final newline) --------------------


@pytest.mark.parametrize("bad", ["daily\n", "daily\r\n", "\ndaily"])
def test_check_id_refuses_a_trailing_newline(bad):
    with pytest.raises(InvalidValue):
        check_id(bad)
    assert check_id("daily") == "daily"


@pytest.mark.parametrize("bad", ["09:05\n", "9:05\n"])
def test_parse_at_refuses_a_trailing_newline(bad):
    with pytest.raises(InvalidValue):
        parse_at(bad)
    assert parse_at("9:05") == "09:05"


def test_check_headers_refuses_a_header_name_with_a_trailing_newline():
    with pytest.raises(InvalidValue):
        check_headers({"X-Api\n": "v"})
    assert check_headers({"X-Api": "v"}) == {"X-Api": "v"}


# --- times, schedules, zones ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["24:00", "09:60", "9", "nine", "", 905, None])
def test_a_time_of_day_outside_00_00_to_23_59_is_refused_by_name(bad):
    with pytest.raises(InvalidValue) as info:
        parse_at(bad, "at")
    assert info.value.field == "at" and "HH:MM" in str(info.value)


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "0 0 31 2 *", "@fortnightly"])
def test_a_cron_expression_that_cannot_fire_or_is_not_five_fields_is_refused(bad):
    with pytest.raises(InvalidValue) as info:
        parse_cron(bad)
    assert info.value.field == "cron"


def test_a_cron_expression_is_written_with_single_spaces():
    assert parse_cron("  5   9 * *  1-5 ") == "5 9 * * 1-5"


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "/etc/localtime", "../UTC", "UTC\x00", 7])
def test_a_zone_that_is_no_iana_name_is_refused(bad):
    with pytest.raises(InvalidValue) as info:
        check_timezone(bad)
    assert info.value.field == "timezone" and "IANA" in str(info.value)


def test_a_known_zone_is_kept_as_written():
    assert check_timezone("Asia/Jakarta") == "Asia/Jakarta"


# --- urls, names, ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["ftp://example.com/", "example.com", "http://", "http://[bad", "http://h:0/",
                                 "http://h/a b", ""])
def test_what_is_not_an_http_url_is_refused(bad):
    with pytest.raises(InvalidValue) as info:
        check_url(bad)
    assert info.value.field == "url" and "http(s) URL" in str(info.value)


def test_a_refused_url_shows_its_password_masked():
    with pytest.raises(InvalidValue) as info:
        check_url("ftp://user:hunter2@example.com/")
    assert "hunter2" not in str(info.value) and "user:***@" in str(info.value)


def test_a_url_with_a_variable_in_its_host_is_allowed_until_run_time():
    assert check_url("https://${HOST}/x") == "https://${HOST}/x"


@pytest.mark.parametrize("bad", ["", "   ", "a\tb", "x" * 201, 5])
def test_a_name_that_is_empty_too_long_or_has_control_characters_is_refused(bad):
    with pytest.raises(InvalidValue) as info:
        check_name(bad)
    assert info.value.field == "name"


def test_a_name_is_kept_stripped():
    assert check_name("  Crawl Pagi  ") == "Crawl Pagi"


@pytest.mark.parametrize("name, slug", [("Crawl Pagi Hari", "crawl-pagi-hari"), ("Café  Ñandú!", "cafe-nandu"),
                                        ("日本", "job"), ("--x--", "x"), ("a" * 80, "a" * 48)])
def test_an_id_made_from_a_name_is_lower_case_ascii_and_valid(name, slug):
    assert slug_id(name) == slug
    assert check_id(slug_id(name)) == slug


def test_headers_that_hold_a_line_break_are_refused_without_echoing_the_value():
    with pytest.raises(InvalidValue) as info:
        check_headers({"Authorization": "Bearer s3cret\r\nX: y"})
    assert info.value.field == "headers.Authorization" and "s3cret" not in str(info.value)


@pytest.mark.parametrize("value", ["latest", "none", "all"])
def test_catch_up_is_one_of_latest_none_all(value):
    assert check_catch_up(value) is CatchUp(value)


def test_an_unknown_catch_up_is_refused_saying_what_is_allowed():
    with pytest.raises(InvalidValue, match="latest, none, all"):
        check_catch_up("some")


# --- a whole job ----------------------------------------------------------------------------------


def test_a_job_needs_exactly_one_schedule():
    defaults = build_defaults({"timezone": "UTC", "url": "https://example.com/"})
    with pytest.raises(InvalidValue):
        build_job({"id": "a", "name": "a"}, defaults)
    with pytest.raises(InvalidValue):
        build_job({"id": "a", "name": "a", "at": "09:00", "every": "1h"}, defaults)
    assert build_job({"id": "a", "name": "a", "every": "1h"}, defaults).spec == "1h"


def test_a_job_takes_the_defaults_it_does_not_set():
    defaults = build_defaults({"timezone": "Asia/Jakarta", "url": "https://example.com/", "max_retries": 4})
    job = build_job({"id": "a", "name": "a", "at": "09:00"}, defaults)
    assert (job.timezone, job.max_retries, job.urls) == ("Asia/Jakarta", 4, ("https://example.com/",))
    own = build_job({"id": "b", "name": "b", "at": "09:00", "max_retries": 0, "timezone": "UTC"}, defaults)
    assert (own.timezone, own.max_retries) == ("UTC", 0)


# --- bounds (SPEC §7) ------------------------------------------------------------------------------

UTC = timezone.utc
TEN_YEARS = 10 * 365 * 86400


def job(**keys):
    return build_job({"id": "j", "command": "true", "timezone": "UTC", **keys}, Defaults())


# --- durations: one parser for --every, --retry-delay, --retry-max-delay, --timeout -----------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("1.5", 1.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800),
    ("1d 2h", 93600), (" 15m ", 900), ("0.5m", 30), (300, 300), (2.5, 2.5),
], ids=lambda v: repr(v))
def test_a_duration_is_seconds_or_a_number_with_units(text, seconds):
    assert parse_duration(text, "retry_delay") == seconds


@pytest.mark.parametrize("text", ["soon", "5x", "m5", "", "1h-30m", "-5m", "nan", "inf", "1e3m", "5 m s", True, None, [5]],
                         ids=lambda v: repr(v))
def test_a_duration_that_is_no_duration_is_refused_by_name(text):
    with pytest.raises(InvalidValue) as exc:
        parse_duration(text, "timeout")
    assert str(exc.value).startswith("timeout: ")


def test_a_bare_number_of_seconds_is_an_interval_too():
    assert job(every="90").every_seconds == 90
    assert job(every="90").spec == "90s"


@pytest.mark.parametrize("value", ["3000000000d", "3651d", "87601h", TEN_YEARS + 1, float(TEN_YEARS) + 0.5,
                                   "9" * 4000 + "d", 10 ** 4000, 1e400, math.inf, "1" * 5000 + "s"],
                         ids=["3e9-days", "3651d", "87601h", "ten-years-and-a-second", "float", "4000-digit-text",
                              "4000-digit-int", "1e400", "inf", "5000-digit-text"])
def test_an_interval_beyond_ten_years_is_refused_where_it_is_built(value):
    with pytest.raises(InvalidValue) as exc:
        parse_every(value)
    message = str(exc.value)
    assert message.startswith("every: ") and "ten years" in message and len(message) < 300


def test_an_interval_of_exactly_ten_years_is_allowed():
    assert parse_every(f"{TEN_YEARS}s") == TEN_YEARS == MAX_SECONDS
    assert parse_every("3650d") == TEN_YEARS


@pytest.mark.parametrize("field", ["retry_delay", "retry_max_delay", "timeout"])
@pytest.mark.parametrize("value", [TEN_YEARS + 1, 1e400, math.inf, 10 ** 4000, "1e400", HugeNumber(5000)],
                         ids=["ten-years-and-a-second", "1e400", "inf", "4000-digit-int", "1e400-text", "5000-digit"])
def test_a_delay_beyond_ten_years_is_refused_in_jobs_and_defaults(field, value):
    with pytest.raises(InvalidValue, match=rf"^{field}: .* ten years"):
        job(at="09:05", **{field: value})
    with pytest.raises(InvalidValue, match=rf"^defaults\.{field}: .* ten years"):
        build_defaults({field: value})


def test_a_grace_period_beyond_ten_years_is_refused():
    with pytest.raises(InvalidValue, match=r"^defaults\.grace_period: .* ten years"):
        build_defaults({"grace_period": 1e400})


@pytest.mark.parametrize("value", [float("nan"), "nan"])
def test_nan_is_no_number_of_seconds(value):
    with pytest.raises(InvalidValue, match="^retry_delay: "):
        check_seconds("retry_delay", value)


# --- whole numbers: at most 2^53 ------------------------------------------------------------------

@pytest.mark.parametrize("field", ["max_bytes", "keep_runs"])
@pytest.mark.parametrize("value", [2 ** 53 + 1, 2 ** 63, 2 ** 64, 10 ** 30, 10 ** 4000, HugeNumber(5000), "1" * 5000],
                         ids=["2^53+1", "2^63", "2^64", "1e30-int", "4000-digits", "5000-digits", "5000-digit-text"])
def test_a_whole_number_beyond_2_to_the_53_is_refused(field, value):
    with pytest.raises(InvalidValue) as exc:
        job(at="09:05", **{field: value})
    message = str(exc.value)
    assert message.startswith(f"{field}: ") and str(MAX_INT) in message and len(message) < 300


def test_2_to_the_53_itself_is_allowed():
    assert job(at="09:05", max_bytes=MAX_INT).max_bytes == 2 ** 53


@pytest.mark.parametrize("value", [1e30, 5.0, math.inf, "٣", "²", "--5", "5 5"], ids=repr)
def test_what_is_not_a_whole_number_is_refused_as_such(value):
    with pytest.raises(InvalidValue, match="^max_bytes: .*whole number"):
        check_int("max_bytes", value, 1)


def test_a_huge_number_is_shown_by_its_length_not_its_digits():
    with pytest.raises(InvalidValue) as exc:
        check_int("max_bytes", 10 ** 4200, 1)
    assert "4201-digit number" in str(exc.value)


# --- dates: 1900-01-01 to 9999-12-30 -----------------------------------------------------------------

@pytest.mark.parametrize("field", ["start_date", "end_date"])
@pytest.mark.parametrize("value", [date(9999, 12, 31), "9999-12-31", date(1, 1, 1), "0001-01-01"],
                         ids=["9999-12-31", "9999-12-31-text", "0001-01-01", "0001-01-01-text"])
def test_a_date_out_of_bounds_is_refused(field, value):
    with pytest.raises(InvalidValue) as exc:
        job(at="09:05", **{field: value})
    message = str(exc.value)
    assert message.startswith(f"{field}: ") and "9999-12-30" in message


def test_a_created_at_out_of_bounds_is_refused():
    with pytest.raises(InvalidValue, match="^created_at: "):
        job(at="09:05", created_at=datetime(9999, 12, 31, 23, 59, tzinfo=UTC))


def test_check_date_keeps_what_is_in_bounds():
    assert check_date("end_date", "9999-12-30") == date(9999, 12, 30)
    assert check_date("start_date", date(1900, 1, 1)) == date(1900, 1, 1)


# --- cron macros --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("macro", "expr"), [
    ("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@Daily", "0 0 * * *"),
])
def test_a_cron_macro_means_what_it_means_to_cron(macro, expr):
    from crawlsched import timing

    assert parse_cron(macro) == macro.lower()
    j = job(cron=macro)
    assert j.schedule_text == macro.lower()
    assert j.cron == expr
    after = datetime(2025, 11, 8, 9, 30, tzinfo=UTC)
    assert timing.next_fire(j, after) == timing.next_fire(job(cron=expr), after)


@pytest.mark.parametrize("macro", ["@reboot", "@every", "@fortnightly"])
def test_an_unknown_or_unsupported_macro_is_refused_by_name(macro):
    with pytest.raises(InvalidValue) as exc:
        parse_cron(macro)
    assert str(exc.value).startswith(f'cron: "{macro}"') and "@daily" in str(exc.value)


@pytest.mark.parametrize("value", ["Authorization: Bearer s3cret", ["Authorization: Bearer s3cret"]], ids=["text", "array"])
def test_headers_that_are_no_table_are_refused_without_echoing_them(value):
    from crawlsched.validate import check_headers

    with pytest.raises(InvalidValue) as caught:
        check_headers(value)
    message = str(caught.value)
    assert message.startswith("headers: ") and "must be a table of header names" in message
    assert "s3cret" not in message, message


# --- JobBuilder: tables alike validated once, with build_job's jobs and errors ----------------

BUILDER_DEFAULTS = build_defaults({"command": "true", "timezone": "UTC"})


def _error(fn, *args):
    try:
        fn(*args)
    except InvalidValue as exc:
        return exc.field, str(exc)
    return None


def test_tables_alike_build_the_jobs_build_job_builds():
    from crawlsched.validate import JobBuilder

    build = JobBuilder(BUILDER_DEFAULTS, "UTC")
    tables = [{"id": f"j{i}", "name": f"Job {i}", "cron": f"{i % 3} 3 * * *", "start_date": date(2025, 1, 1),
               "created_at": datetime(2025, 1, 1, 10, i, tzinfo=timezone.utc)} for i in range(9)]
    tables += [{"id": "k1", "cron": "0 3 * * *", "start_date": date(2025, 1, 1)},  # no name: the id
               {"id": "k2", "cron": "0 3 * * *", "start_date": date(2025, 1, 1)},
               {"id": "k3", "cron": "0 3 * * *", "url": ["https://example.org/"]},
               {"id": "k4", "cron": "0 3 * * *", "url": ["https://example.org/"]}]
    for table in tables:
        job, expected = build(table), build_job(table, BUILDER_DEFAULTS, "UTC")
        assert job == expected
        assert job.explicit == expected.explicit and job.created_at == expected.created_at


@pytest.mark.parametrize("bad", [{"id": "Bad Id"}, {"name": ""}, {"name": "a\nb"}, {"created_at": "yesterday"},
                                 {"created_at": 5}, {"name": "x" * 201}])
def test_a_table_like_a_good_one_but_bad_gets_build_jobs_error(bad):
    from crawlsched.validate import JobBuilder

    build = JobBuilder(BUILDER_DEFAULTS, "UTC")
    good = {"id": "j1", "name": "Job 1", "cron": "0 3 * * *", "created_at": "2025-01-01 10:00:00"}
    build(good)
    table = {**good, "id": "j2", "name": "Job 2", **bad}
    assert _error(build, table) == _error(build_job, table, BUILDER_DEFAULTS, "UTC") is not None


@pytest.mark.parametrize("first, second", [(1, True), (True, 1), (0, False), (False, 0), ("1", 1)])
def test_equal_values_of_other_types_are_not_taken_for_each_other(first, second):
    from crawlsched.validate import JobBuilder

    build = JobBuilder(BUILDER_DEFAULTS, "UTC")
    _error(build, {"id": "j1", "cron": "0 3 * * *", "paused": first})
    table = {"id": "j2", "cron": "0 3 * * *", "paused": second}
    assert _error(build, table) == _error(build_job, table, BUILDER_DEFAULTS, "UTC")
    if _error(build_job, table, BUILDER_DEFAULTS, "UTC") is None:
        assert build(table) == build_job(table, BUILDER_DEFAULTS, "UTC")


def test_defaults_take_a_postgresql_state_and_an_executor():
    d = build_defaults({"state": "postgresql://crawlsched@db.internal/crawlsched", "executor": "workers"})
    assert (d.state, d.executor) == ("postgresql://crawlsched@db.internal/crawlsched", "workers")
    assert (build_defaults({}).state, build_defaults({}).executor) == (None, "local")


@pytest.mark.parametrize(("raw", "expect"), [
    ({"executor": "celery"}, ['defaults.executor: "celery"', '"local"', '"workers"']),
    ({"executor": True}, ["defaults.executor: true", '"local"']),
    ({"state": "sqlite:///x.db"}, ['defaults.state: "sqlite:///x.db"', "postgresql://"]),
    ({"state": "mysql://u:hunter2@db/x"}, ["defaults.state", "not shown"]),
])  # fmt: skip
def test_a_bad_state_or_executor_in_defaults_is_refused(raw, expect):
    with pytest.raises(InvalidValue) as caught:
        build_defaults(raw)
    for text in expect:
        assert text in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("bad", [0, 0.5, -1, 101, 1e308, "nan", "inf", float("nan"), 10**400, "fast", True])
def test_a_retry_backoff_outside_1_to_100_is_refused_as_a_multiplier_never_as_seconds(bad):
    from crawlsched.errors import InvalidValue
    from crawlsched.validate import build_defaults

    with pytest.raises(InvalidValue) as info:
        build_defaults({"retry_backoff": bad})
    message = str(info.value)
    assert message.startswith("defaults.retry_backoff: ") and message.endswith("must be a multiplier from 1 to 100 (1 = fixed delay)")
    assert "second" not in message


@pytest.mark.parametrize("good, value", [(1, 1.0), (2.5, 2.5), ("3", 3.0), (100, 100.0)])
def test_a_retry_backoff_from_1_to_100_is_kept(good, value):
    from crawlsched.validate import build_defaults

    assert build_defaults({"retry_backoff": good}).retry_backoff == value


@pytest.mark.parametrize("bad, said", [
    (None, "name: missing: every job has a name"),
    ("", 'name: "" must be a non-empty text'),
    ("new\u200bs", "must be printable text: no control or invisible characters"),
    ("a\ud800b", "must be printable text: no control or invisible characters"),
    ("tab\there", "must be printable text: no control or invisible characters"),
])
def test_a_bad_name_is_refused_saying_what_is_wrong_with_it(bad, said):
    from crawlsched.errors import InvalidValue
    from crawlsched.validate import check_name

    with pytest.raises(InvalidValue) as info:
        check_name(bad)
    assert said in str(info.value)
