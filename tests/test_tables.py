"""The tables and status lines people read (crawlsched.tables), built from render's dicts."""

from __future__ import annotations



from crawlsched import render, tables
from crawlsched.state import JobState
from helpers.records import NOW, job, run, text


def test_the_jobs_table_keeps_name_status_next_and_last_when_narrow():
    jobs = [render.job_dict(job(), JobState("daily", last_attempt=run("failed", message="HTTP 503 " * 10)), NOW)]
    wide = text(tables.jobs_table(jobs, now=NOW, width=200, plain=True, machine_tz="UTC"), 200)
    assert "Crawl Pagi (daily)" in wide and "failed" in wide and "in 1h" in wide and "HTTP 503" in wide
    narrow = text(tables.jobs_table(jobs, now=NOW, width=40, plain=True, machine_tz="UTC"), 40)
    assert all(len(line) <= 40 for line in narrow.splitlines())
    assert "failed" in narrow and "in 1h" in narrow and "1h ago" in narrow and "HTTP" not in narrow
    assert "Crawl Pagi" in narrow or "daily" in narrow


def test_an_empty_jobs_table_says_how_to_add_one():
    assert "crawlsched add" in text(tables.jobs_table([], now=NOW, plain=True, machine_tz="UTC"))


def test_the_runs_table_shows_attempts_and_a_dash_for_fires_that_did_not_run():
    runs = [render.run_dict(run("skipped", attempt=0, message="still running")), render.run_dict(run("failed"))]
    out = text(tables.runs_table(runs, now=NOW, plain=True, machine_tz="UTC"))
    lines = [line for line in out.splitlines() if "daily" in line]
    assert "-" in lines[0].split() and "skipped" in lines[0] and "1/4" in lines[1] and "failed" in lines[1]
    alone = text(tables.runs_table(runs, now=NOW, plain=True, show_job=False, machine_tz="UTC"))
    assert "daily" not in alone


def test_show_lists_header_names_with_values_hidden():
    d = render.job_dict(job(headers={"Authorization": "Bearer s3cret"}), None, NOW)
    out = text(tables.job_details(d, now=NOW, plain=True, machine_tz="UTC"))
    assert "Authorization (values hidden)" in out and "s3cret" not in out
    assert "09:05 (UTC, this machine)" in out and "3 × 300s" in out


def test_status_lines_for_a_stopped_daemon_and_a_broken_file():
    lines = tables.status_lines({"running": False, "next_job": None, "config_ok": False,
                                 "config_error": "jobs.toml:3: bad", "jobs_file": "/x/jobs.toml"})
    assert lines == ["daemon: not running", "next: nothing scheduled", "config: ERROR jobs.toml:3: bad",
                     "jobs file: /x/jobs.toml"]
