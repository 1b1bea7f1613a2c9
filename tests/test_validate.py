"""The validators (crawlsched/validate.py): single values, and a whole job or [defaults] table.

Each refusal names the field and the value (a secret is never echoed); each accepted value
comes back in its one written form. The number, duration and date bounds are in test_model.py.
"""

from __future__ import annotations

import pytest

from crawlsched.errors import InvalidValue
from crawlsched.model import CatchUp
from crawlsched.validate import (
    build_defaults,
    build_job,
    check_catch_up,
    check_headers,
    check_id,
    check_name,
    check_timezone,
    check_url,
    parse_at,
    parse_cron,
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
