"""What a person and a program see (crawlsched/render.py): job and run dicts, status, sort orders.

Pure functions of a job, its history and ``now``: no files, no database, no clock.
"""

from __future__ import annotations

import pytest

from crawlsched import render, tables
from crawlsched.validate import build_defaults
from crawlsched.state import JobState, Retry
from helpers.records import NOW, T, job, run



# --- a job's status (SPEC §5: the first that applies wins) ---------------------------------------


@pytest.mark.parametrize("fields, state, status", [
    ({}, None, "active"),
    ({}, JobState("daily", last_attempt=run("success")), "success"),
    ({}, JobState("daily", last_attempt=run("interrupted")), "failed"),
    ({}, JobState("daily", last_attempt=run("failed"), retry=Retry("daily", T - 3600, 2, 4, T + 60, "schedule")), "retrying"),
    ({}, JobState("daily", last_attempt=run("failed"), running=True), "running"),
    ({"end_date": "2025-11-07", "start_date": "2025-11-01"}, JobState("daily", running=True), "finished"),
    ({"paused": True, "end_date": "2025-11-07", "start_date": "2025-11-01"}, JobState("daily", running=True), "paused"),
])
def test_a_jobs_status_is_the_first_that_applies(fields, state, status):
    assert render.view(job(**fields), state, NOW).status.value == status


def test_a_job_never_seen_by_the_daemon_is_due_now_not_one_interval_later():
    every = job(at=None, every="1h")
    assert render.view(every, None, NOW).next_run == NOW


# --- the JSON of a job and of a run ------------------------------------------------------------------


def test_a_job_dict_masks_url_passwords_and_shows_header_names_only():
    d = render.job_dict(job(url="https://u:hunter2@example.com/?token=abc&page=2", headers={"Authorization": "Bearer x"}),
                        None, NOW)
    assert d["url"] == ["https://u:***@example.com/?token=***&page=2"]
    assert d["headers"] == ["Authorization"] and "Bearer" not in repr(d)
    assert (d["id"], d["name"], d["kind"], d["status"]) == ("daily", "Crawl Pagi", "at", "active")
    assert d["next_run_iso"] == "2025-11-08T09:05:00+00:00"


def test_a_job_dict_writes_whole_seconds_as_integers():
    d = render.job_dict(job(retry_delay=300.0, timeout=30.5), None, NOW)
    assert d["retry_delay"] == 300 and isinstance(d["retry_delay"], int) and d["timeout"] == 30.5


def test_a_retrying_job_dict_says_when_and_which_attempt_comes_next():
    retry = Retry("daily", T - 3600, 2, 4, T + 240, "schedule")
    d = render.job_dict(job(), JobState("daily", last_attempt=run("failed", message="HTTP 503"), retry=retry), NOW)
    assert (d["status"], d["attempt"], d["next_retry_iso"], d["last_message"]) == (
        "retrying", 2, "2025-11-08T08:04:00+00:00", "HTTP 503")
    assert tables.status_text(d, NOW) == "retrying 2/4 in 4m"
    late = render.job_dict(job(), JobState("daily", retry=Retry("daily", T, 2, 4, T - 300, "schedule")), NOW)
    assert tables.status_text(late, NOW) == "retrying 2/4 due 5m ago"


def test_a_run_dict_is_in_the_jobs_zone_and_shows_missed_fields_only_for_missed_fires():
    jakarta = job(timezone="Asia/Jakarta")
    d = render.run_dict(run("success"), jakarta)
    assert d["started_at_iso"] == "2025-11-08T14:00:00+07:00" and "missed_count" not in d
    missed = render.run_dict(run("missed", attempt=0, missed_count=3, first_missed=T - 7200, last_missed=T - 3600))
    assert (missed["missed_count"], missed["first_missed_iso"]) == (3, "2025-11-08T06:00:00+00:00")
    assert missed["started_at"] is None


def test_the_success_rate_counts_attempts_not_skipped_or_missed_fires():
    runs = [run("success"), run("failed"), run("interrupted"), run("skipped", attempt=0), run("missed", attempt=0)]
    assert render.success_rate(runs) == pytest.approx(1 / 3)
    assert render.success_rate([run("skipped", attempt=0)]) is None


def test_defaults_dict_hides_header_values_and_url_passwords():
    d = render.defaults_dict(build_defaults({"url": "https://u:p@h/", "headers": {"X-Api": "s3cret"}, "retry_delay": 60.0}))
    assert d["url"] == ["https://u:***@h/"] and d["headers"] == ["X-Api"] and d["retry_delay"] == 60
    assert "s3cret" not in repr(d)


def test_the_added_message_is_the_seeds_word_for_word():
    assert render.ADDED.format(name="Crawl Pagi") == "✅ Job 'Crawl Pagi' berhasil ditambahkan"


# --- sorting ------------------------------------------------------------------------------------------


def _dicts():
    ok = render.job_dict(job(id="b", name="B"), JobState("b", last_attempt=run("success")), NOW)
    bad = render.job_dict(job(id="a", name="a", at="23:00"), JobState("a", last_attempt=run("failed")), NOW)
    paused = render.job_dict(job(id="c", name="C", at="08:30", paused=True), None, NOW)
    return [ok, bad, paused]


@pytest.mark.parametrize("key, order", [("file", ["b", "a", "c"]), ("status", ["a", "b", "c"]),
                                        ("name", ["a", "b", "c"]), ("next", ["c", "b", "a"])])
def test_jobs_sort_by_each_key(key, order):
    assert [j["id"] for j in render.sort_jobs(_dicts(), key)] == order


def test_an_unknown_sort_key_is_refused_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="file, next, name, status, last"):
        render.sort_jobs(_dicts(), "size")


# --- tables for people --------------------------------------------------------------------------------
