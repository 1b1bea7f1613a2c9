"""The types of crawlsched/model.py: what a Job works out from its own fields, the JobFile,
and the enums stored by their values."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from crawlsched.durations import MAX_SECONDS
from crawlsched.model import CatchUp, Defaults, JobFile, JobStatus, RunStatus, ScheduleKind, Trigger
from crawlsched.validate import build_job

UTC = timezone.utc


def job(**keys):
    return build_job({"id": "j", "command": "true", "timezone": "UTC", **keys}, Defaults())


def test_more_retries_than_the_bound_with_a_big_backoff_never_overflows():
    j = job(at="09:05", max_retries=1000, retry_backoff=100, retry_delay=300)
    assert j.retry_wait(1) == 300
    assert j.retry_wait(1000) == MAX_SECONDS  # 300 × 100^999 is no float: capped at the bound



def test_each_retry_waits_the_delay_times_the_backoff_up_to_the_max_delay():
    j = job(at="09:05", max_retries=5, retry_delay=60, retry_backoff=2, retry_max_delay=300)
    assert [j.retry_wait(n) for n in range(1, 6)] == [60, 120, 240, 300, 300]
    assert job(at="09:05", max_retries=2, retry_delay=60).retry_wait(2) == 60  # no backoff: the same delay


@pytest.mark.parametrize("keys, kind, cron, text, every", [
    ({"at": "9:05"}, ScheduleKind.AT, "5 9 * * *", "09:05", None),
    ({"cron": "0 10 * * 1"}, ScheduleKind.CRON, "0 10 * * 1", "0 10 * * 1", None),
    ({"every": "15m"}, ScheduleKind.EVERY, None, "every 15m", 900),
])
def test_a_job_knows_its_schedule_as_cron_text_and_seconds(keys, kind, cron, text, every):
    j = job(**keys)
    assert (j.kind, j.cron, j.schedule_text, j.every_seconds) == (kind, cron, text, every)


def test_a_job_file_finds_a_job_by_id_before_by_name():
    a = job(at="09:05", name="b")
    b = build_job({"id": "b", "name": "other", "command": "true", "timezone": "UTC", "at": "09:05"}, Defaults())
    jf = JobFile(Defaults(), (a, b))
    assert jf.find("b") is b  # the id wins over a's name "b"
    assert jf.find("other") is b and jf.find("j") is a and jf.find("nothing") is None


@pytest.mark.parametrize("enum, values", [
    (RunStatus, {"running", "success", "failed", "skipped", "missed", "interrupted"}),
    (Trigger, {"schedule", "catch_up", "manual", "run"}),
    (CatchUp, {"latest", "none", "all"}),
    (JobStatus, {"paused", "finished", "running", "retrying", "success", "failed", "active"}),
])
def test_the_enums_are_their_stored_values(enum, values):
    assert {m.value for m in enum} == values
    assert all(m == m.value and enum(m.value) is m for m in enum)  # compare and load by the stored text


def test_a_job_built_at_a_fixed_instant_keeps_its_created_at():
    at = datetime(2025, 11, 8, 9, 0, tzinfo=UTC)
    assert job(at="09:05", created_at=at).created_at == at


def test_max_seconds_is_ten_years():
    assert MAX_SECONDS == 10 * 365 * 86400


def test_a_trigger_formats_as_its_value_so_it_names_a_manual_runs_folder():
    from crawlsched.crawl.runs import run_name
    from crawlsched.model import Trigger

    assert f"{Trigger.MANUAL}" == "manual" and str(Trigger.CATCH_UP) == "catch_up"
    assert run_name(1762567500.123, Trigger.MANUAL) == run_name(1762567500.123, "manual") == "20251108T020500_123Z-manual"
