"""``list --json``'s fast encoder writes the very bytes of ``json.dumps`` over ``render.job_dict``."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from crawlsched import listing, render
from crawlsched.jobcache import FileKey
from crawlsched.jobfile import parse_text
from crawlsched.state import JobState, Retry, Run

NOW = datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc)
TEXT = '''
[defaults]
timezone = "Europe/Berlin"
max_retries = 2
retry_delay = 30.0

[[jobs]]
id = "plain"
name = "Plain"
at = "09:05"
url = "https://user:secret@example.com/a"

[[jobs]]
id = "every"
name = "Every ten — ünïcode \\"quoted\\""
every = "10m"
command = "echo hi"
headers = { Authorization = "Bearer x", X-A = "1" }
end_date = 2030-01-01
retry_backoff = 1.5
user_agent = "bot/1"
verify = false
keep_runs = 7
on_failure = "echo failed"

[[jobs]]
id = "cron-jkt"
name = "Cron in Jakarta"
cron = "*/15 1-3 * * 1-5"
timezone = "Asia/Jakarta"
url = ["https://a.example/", "https://b.example/"]
created_at = 2026-01-02T03:04:05
paused = true

[[jobs]]
id = "done"
name = "Done"
at = "10:00"
start_date = 2020-01-01
end_date = 2020-01-02
command = "true"
created_at = 2026-01-02T03:04:05+07:00
timeout = 12.5
max_bytes = 1000

[[jobs]]
id = "twin-a"
at = "09:05"
command = "true"

[[jobs]]
id = "twin-b"
at = "09:05"
command = "true"
paused = true

[[jobs]]
id = "twin-c"
at = "09:05"
command = "true"
end_date = 2030-01-01

[[jobs]]
id = "failing"
every = "10m"
command = "false"
start_date = 2027-01-01
'''

STATES = {
    "plain": JobState("plain", first_seen=1.0, anchor=None, last_attempt=Run(
        1, "plain", 1_774_000_000.0, 1, 3, "schedule", "success", started_at=1_774_000_001.5,
        finished_at=1_774_000_003.0, message="ok\n200 — fine")),
    "every": JobState("every", first_seen=1.0, anchor=1_774_700_000.0, last_attempt=Run(
        2, "every", 1_774_700_000.0, 1, 3, "schedule", "failed", started_at=1_774_700_000.2, message=None),
        retry=Retry("every", 1_774_700_000.0, 2, 3, 1_774_745_000.0, "schedule")),
    "cron-jkt": JobState("cron-jkt", running=True),
    "twin-b": JobState("twin-b", first_seen=5.0),
    "failing": JobState("failing", first_seen=1.0, anchor=1_798_761_600.0, last_attempt=Run(
        3, "failing", 1_774_000_000.0, 2, 2, "manual", "interrupted", started_at=1_774_000_000.0, message="killed")),
}


def _expected(jobfile, states, sort, error=None):
    jobs = render.sort_jobs([render.job_dict(j, states.get(j.id), NOW) for j in jobfile.jobs], sort)
    payload = {"success": True, "jobs": jobs}
    if error is not None:
        payload["config_error"] = error
    return json.dumps(payload, ensure_ascii=False, default=str)


@pytest.mark.parametrize("sort", render.SORT_KEYS)
@pytest.mark.parametrize("states", [{}, STATES], ids=["no-history", "history"])
def test_the_fast_list_json_is_byte_for_byte_json_dumps_of_the_job_dicts(sort, states):
    jobfile = parse_text(TEXT, "jobs.toml", "UTC")
    assert listing.jobs_json(jobfile, states, NOW, sort) == _expected(jobfile, states, sort)


def test_the_fast_list_json_carries_the_config_error_and_an_empty_file():
    empty = parse_text("", "jobs.toml", "UTC")
    assert listing.jobs_json(empty, {}, NOW, "file") == _expected(empty, {}, "file")
    jobfile = parse_text(TEXT, "jobs.toml", "UTC")
    got = listing.jobs_json(jobfile, STATES, NOW, "next", extra=[("config_error", "jobs.toml:3: bad")])
    assert got == _expected(jobfile, STATES, "next", error="jobs.toml:3: bad")


def test_the_kept_rows_serve_only_the_version_and_zone_they_were_made_for(tmp_path):
    text = "".join(f'\n[[jobs]]\nid = "j{i}"\nat = "08:00"\ncommand = "true"\n' for i in range(1000))  # zone: the machine's
    jobfile = parse_text(text, "jobs.toml", "UTC")
    path = tmp_path / "jobs.toml"
    key = FileKey(1, 2, 3, 4, 5)
    assert listing.kept_rows(tmp_path, path, key, "UTC") is None
    first = listing.jobs_json(jobfile, STATES, NOW, "file", key=key, machine_tz="UTC", cache_dir=tmp_path, path=path)
    rows = listing.kept_rows(tmp_path, path, key, "UTC")
    assert rows is not None and len(rows) == 1000
    assert first == listing.rows_json(rows, STATES, NOW, "file") == _expected(jobfile, STATES, "file")
    assert listing.rows_json(rows, STATES, NOW, "name") == _expected(jobfile, STATES, "name")
    # Another version, or another zone (the same file read into jobs of another zone): not theirs.
    assert listing.kept_rows(tmp_path, path, FileKey(1, 2, 3, 4, 6), "UTC") is None
    assert listing.kept_rows(tmp_path, path, key, "Asia/Tokyo") is None
    assert listing.kept_rows(tmp_path, tmp_path / "other.toml", key, "UTC") is None
