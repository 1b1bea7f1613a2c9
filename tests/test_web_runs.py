"""The page's monitoring routes (crawlsched.web.runs) through Flask's test client, over a real Daemon and SQLite.

History rows are written through ``State`` as the daemon writes them (attempt rows,
a retry saved with the failed attempt, skipped fires), then read back through the API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from crawlsched.runner import run_dir, run_log
from crawlsched.state import Retry
from helpers.jobs import write_jobs
from test_web import START, env  # noqa: F401 -- the shared fixture and helpers

T0 = START.timestamp()


def attempt(env: Any, job_id: str, scheduled: float, n: int, status: str, message: str, *, of: int = 3,
            http_status: int | None = None, retry_due: float | None = None, trigger: str = "schedule") -> int:
    run_id = env.daemon.state.start_attempt(job_id, scheduled, n, of, trigger=trigger, started_at=scheduled + n * 10,
                                            pid=os.getpid())
    retry = Retry(job_id, scheduled, n + 1, of, retry_due, trigger) if retry_due is not None else None
    env.daemon.state.finish_attempt(run_id, status=status, finished_at=scheduled + n * 10 + 2, message=message,
                                    http_status=http_status, bytes=5 if status == "success" else None, retry=retry)
    return run_id


def flaky_history(env: Any, job_id: str, fires: int) -> None:
    """Each fire (an hour apart): attempt 1 fails with 503, attempt 2 succeeds; fire 3 was skipped too."""
    for i in range(fires):
        at = T0 + i * 3600
        attempt(env, job_id, at, 1, "failed", f"HTTP 503 (fire {i})", http_status=503)
        attempt(env, job_id, at, 2, "success", f"saved 5 bytes (fire {i})", http_status=200)
        if i == 3:
            env.daemon.state.record_not_run(job_id, at + 1800, "skipped", "still running", now=at + 1800)


@pytest.fixture
def job(env: Any) -> str:
    return env.add(name="News", at="09:00", url="https://example.com/news")["job_id"]


def test_runs_lists_runs_newest_first_with_their_attempts(env, job):
    flaky_history(env, job, 3)
    data = env.client.get(f"/api/scheduler/job/{job}/runs").get_json()
    assert [r["status"] for r in data["runs"]] == ["success", "success", "success"]
    newest = data["runs"][0]
    assert [(a["attempt"], a["status"], a["http_status"], a["message"]) for a in newest["attempts"]] == [
        (1, "failed", 503, "HTTP 503 (fire 2)"), (2, "success", 200, "saved 5 bytes (fire 2)")]
    assert newest["trigger"] == "schedule"
    assert newest["attempt_count"] == 2 and newest["max_attempts"] == 3
    assert newest["duration"] == 12.0  # first attempt's start to the last one's end
    assert data["next_before"] is None


def test_a_failed_attempt_whose_retry_is_pending_makes_its_run_retrying(env, job):
    attempt(env, job, T0, 1, "failed", "HTTP 503", http_status=503, retry_due=T0 + 300)
    [run] = env.client.get(f"/api/scheduler/job/{job}/runs").get_json()["runs"]
    assert run["status"] == "retrying"


def test_runs_pages_with_before_and_never_splits_a_run(env, job):
    flaky_history(env, job, 5)  # 5 runs of two attempts, and a skipped fire between them
    seen: list[tuple[str, int]] = []
    before = None
    while True:
        query = "?limit=2" + (f"&before={before}" if before else "")
        data = env.client.get(f"/api/scheduler/job/{job}/runs{query}").get_json()
        for run in data["runs"]:
            seen.append((run["status"], len(run["attempts"])))
        before = data["next_before"]
        if before is None:
            break
    assert sorted(seen) == sorted([("success", 2)] * 5 + [("skipped", 1)])


def test_runs_filters_by_outcome_and_time(env, job):
    flaky_history(env, job, 5)
    skipped = env.client.get(f"/api/scheduler/job/{job}/runs?status=skipped").get_json()["runs"]
    assert [r["status"] for r in skipped] == ["skipped"]
    since = (START.replace(hour=11)).isoformat()  # fires at 08:00, 09:00 … 12:00 UTC
    recent = env.client.get(f"/api/scheduler/job/{job}/runs", query_string={"since": since}).get_json()["runs"]
    assert [r["scheduled_for"] for r in recent] == ["2025-11-08 12:00:00", "2025-11-08 11:30:00", "2025-11-08 11:00:00"]


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("status=ok", "status"), ("since=yesterday", "since"),
                                          ("before=-1", "before")])  # fmt: skip
def test_runs_refuses_a_bad_parameter_naming_it(env, job, query, field):
    response = env.client.get(f"/api/scheduler/job/{job}/runs?{query}")
    assert response.status_code == 422
    assert response.get_json()["error"].startswith(f"{field}: ")


def test_runs_of_an_unknown_job_is_404(env):
    assert env.client.get("/api/scheduler/job/nope/runs").status_code == 404


def test_stats_counts_runs_per_hour_and_the_rates(env, job):
    flaky_history(env, job, 4)
    env.clock.advance(5 * 3600)
    data = env.client.get(f"/api/scheduler/job/{job}/stats?bucket=hour&since=6h").get_json()
    assert data["runs"]["success"] == 4 and data["runs"]["skipped"] == 1
    assert data["attempts"] == {"success": 4, "failed": 4, "interrupted": 0, "running": 0}
    assert data["success_rate"] == 0.5 and data["run_success_rate"] == 1.0
    assert sum(b["success"] for b in data["buckets"]) == 4
    assert [b["success"] for b in data["buckets"] if b["success"]] == [1, 1, 1, 1]


def test_recent_gives_each_card_its_last_runs_and_a_304_when_nothing_changed(env, job):
    flaky_history(env, job, 2)
    first = env.client.get("/api/scheduler/recent")
    strip = first.get_json()["recent"][job]
    assert [(s[1], s[2], s[3], s[5]) for s in strip] == [  # [id, status, scheduled for, attempts, of, message]
        ("success", "2025-11-08 09:00:00", 2, "saved 5 bytes (fire 1)"), ("success", "2025-11-08 08:00:00", 2, "saved 5 bytes (fire 0)")]
    again = env.client.get("/api/scheduler/recent", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    attempt(env, job, T0 + 7200, 1, "failed", "HTTP 500", http_status=500)
    changed = env.client.get("/api/scheduler/recent", headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200
    assert changed.get_json()["recent"][job][0][1] == "failed"


def test_recent_after_a_version_sends_only_the_strips_changed_since(env, job):
    other = env.add(name="Other", at="10:00", url="https://example.com/other")["job_id"]
    first = env.client.get("/api/scheduler/recent").get_json()
    assert first["full"] is True and set(first["recent"]) == {job, other}
    attempt(env, job, T0, 1, "success", "ok")
    delta = env.client.get("/api/scheduler/recent", query_string={"changed_after": first["version"]}).get_json()
    assert delta["full"] is False and list(delta["recent"]) == [job]
    unknown = env.client.get("/api/scheduler/recent", query_string={"changed_after": "another-daemon.3"}).get_json()
    assert unknown["full"] is True and set(unknown["recent"]) == {job, other}


def test_recent_sees_a_running_attempt_finish(env, job):
    env.client.get("/api/scheduler/recent")
    run_id = env.daemon.state.start_attempt(job, T0, 1, 1, trigger="schedule", started_at=T0, pid=os.getpid())
    assert env.client.get("/api/scheduler/recent").get_json()["recent"][job][0][1] == "running"
    env.daemon.state.finish_attempt(run_id, status="success", finished_at=T0 + 1, message="ok")
    assert env.client.get("/api/scheduler/recent").get_json()["recent"][job][0][1] == "success"


# --- the job list, answered again while nothing changed ---------------------------------------


def test_the_job_list_answers_304_while_nothing_it_shows_changed(env, job):
    first = env.client.get("/api/scheduler/jobs")
    assert first.status_code == 200 and first.headers["ETag"]
    again = env.client.get("/api/scheduler/jobs", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("change", ["attempt", "edit", "retry", "clock"])
def test_the_job_list_is_built_again_when_what_it_shows_changes(env, job, change):
    first = env.client.get("/api/scheduler/jobs")
    if change == "attempt":
        attempt(env, job, T0, 1, "failed", "HTTP 500", http_status=500)
    elif change == "edit":
        env.client.patch(f"/api/scheduler/job/{job}", json={"max_retries": 7})
    elif change == "retry":
        env.daemon.state.clear_retry(job)
        attempt(env, job, T0, 1, "failed", "HTTP 500", retry_due=T0 + 300)
    else:
        env.clock.advance(3600)  # past the job's next run (09:00): its next run moves on
    again = env.client.get("/api/scheduler/jobs", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 200
    assert again.get_json()["jobs"][0] != first.get_json()["jobs"][0]


# --- a run's body and log --------------------------------------------------------------------


def saved_body(env: Any, job_id: str, content: bytes) -> int:
    run_id = attempt(env, job_id, T0, 1, "success", "saved", http_status=200)
    folder = run_dir(env.home, env.daemon.store.load().find(job_id), T0)
    folder.mkdir(parents=True)
    (folder / "00-example.com-news.body").write_bytes(content)
    return run_id


def test_a_body_is_served_as_text_never_as_html(env, job):
    run_id = saved_body(env, job, b"<html><script>alert(1)</script></html>")
    [run] = env.client.get(f"/api/scheduler/job/{job}/runs").get_json()["runs"]
    assert run["bodies"] == [{"index": 0, "name": "00-example.com-news.body", "size": 38}]
    response = env.client.get(f"/api/scheduler/job/{job}/runs/{run_id}/body/0")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"] == 'inline; filename="00-example.com-news.body"'
    assert response.headers["X-Crawlsched-Content-Type"] == "text/html"
    assert response.data == b"<html><script>alert(1)</script></html>"


def test_a_large_body_is_cut_where_asked_and_says_its_size(env, job):
    run_id = saved_body(env, job, b"x" * 100_000)
    response = env.client.get(f"/api/scheduler/job/{job}/runs/{run_id}/body/0?max=1000")
    assert len(response.data) == 1000
    assert response.headers["X-Crawlsched-Size"] == "100000" and response.headers["X-Crawlsched-Truncated"] == "1"


def test_a_binary_body_is_an_attachment(env, job):
    run_id = saved_body(env, job, b"%PDF-1.4\x00\x01")
    response = env.client.get(f"/api/scheduler/job/{job}/runs/{run_id}/body/0")
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment;")


def test_a_body_linked_out_of_the_home_is_not_served(env, job, tmp_path_factory):
    secret = tmp_path_factory.mktemp("outside") / "secret"
    secret.write_text("password")
    run_id = attempt(env, job, T0, 1, "success", "saved", http_status=200)
    folder = run_dir(env.home, env.daemon.store.load().find(job), T0)
    folder.mkdir(parents=True)
    (folder / "00-example.com-news.body").symlink_to(secret)
    assert env.client.get(f"/api/scheduler/job/{job}/runs/{run_id}/body/0").status_code == 404


def test_another_jobs_run_is_not_served(env, job):
    run_id = saved_body(env, job, b"mine")
    other = env.add(name="Other", at="10:00", url="https://example.com/other")["job_id"]
    assert env.client.get(f"/api/scheduler/job/{other}/runs/{run_id}/body/0").status_code == 404


@pytest.mark.parametrize("path", ["runs/1/body/..%2F..%2Fjobs.toml", "runs/..%2F1/log", "runs/1/body/-1"])
def test_a_path_in_the_request_reaches_no_file(env, job, path):
    saved_body(env, job, b"mine")
    assert env.client.get(f"/api/scheduler/job/{job}/{path}").status_code == 404


@pytest.mark.parametrize("path", [f"runs/{2**63}/log", f"runs/{10**40}/body/0"])
def test_a_run_id_past_64_bits_is_404_not_a_server_error(env, job, path):
    saved_body(env, job, b"mine")
    assert env.client.get(f"/api/scheduler/job/{job}/{path}").status_code == 404


def test_a_command_jobs_log_is_served_per_attempt(env, job):
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nallow_http_commands = true\n', defaults=None)
    cmd = env.add(name="Cmd", at="09:00", command="echo hi")["job_id"]
    run_id = attempt(env, cmd, T0, 1, "failed", "boom")
    log = run_log(env.home, env.daemon.store.load().find(cmd), T0, 1)
    log.parent.mkdir(parents=True)
    log.write_text("line 1\nboom\n")
    [run] = env.client.get(f"/api/scheduler/job/{cmd}/runs").get_json()["runs"]
    assert run["attempts"][0]["log_size"] == 12
    response = env.client.get(f"/api/scheduler/job/{cmd}/runs/{run_id}/log")
    assert response.data == b"line 1\nboom\n" and response.headers["Content-Type"] == "text/plain; charset=utf-8"


# --- edit -------------------------------------------------------------------------------------


def test_patch_changes_only_the_given_fields(env, job):
    response = env.client.patch(f"/api/scheduler/job/{job}", json={"at": "07:30", "max_retries": 5})
    assert response.status_code == 200, response.get_json()
    data = response.get_json()
    assert data["message"] == "✅ Job 'News' updated"
    assert (data["job"]["schedule"], data["job"]["max_retries"], data["job"]["url"]) == (
        "07:30", 5, ["https://example.com/news"])
    assert 'at = "07:30"' in env.jobs_file.read_text()


def test_patch_with_a_bad_value_names_the_field_and_changes_nothing(env, job):
    before = env.file_bytes()
    response = env.client.patch(f"/api/scheduler/job/{job}", json={"at": "25:00"})
    assert response.status_code == 422
    data = response.get_json()
    assert data["field"] == "at" and data["error"].startswith("at: ")
    assert env.file_bytes() == before


def test_patch_refuses_a_value_only_the_whole_job_can_judge(env, job):
    before = env.file_bytes()
    response = env.client.patch(f"/api/scheduler/job/{job}", json={"start_date": "2030-01-01", "end_date": "2029-01-01"})
    assert response.status_code == 422
    assert env.file_bytes() == before


def test_patch_no_end_removes_the_end_date(env, job):
    env.client.patch(f"/api/scheduler/job/{job}", json={"end_date": "2030-01-01"})
    data = env.client.patch(f"/api/scheduler/job/{job}", json={"no_end": True}).get_json()
    assert data["job"]["end_date"] is None


def test_patch_of_nothing_and_of_an_unknown_field_are_refused(env, job):
    assert env.client.patch(f"/api/scheduler/job/{job}", json={}).status_code == 422
    assert env.client.patch(f"/api/scheduler/job/{job}", json={"colour": "red"}).get_json()["field"] == "colour"


def test_patch_with_a_form_body_is_415(env, job):
    response = env.client.patch(f"/api/scheduler/job/{job}", data="at=07:30",
                                content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_patch_cannot_set_a_command_without_permission(env, job):
    before = env.file_bytes()
    assert env.client.patch(f"/api/scheduler/job/{job}", json={"command": "rm -rf /"}).status_code == 403
    assert env.file_bytes() == before


@pytest.mark.parametrize("body, field", [({"url": "https://example.com/${HOME}"}, "url"),
                                         ({"headers": {"Authorization": "Bearer ${SECRET}"}}, "headers")])
def test_patch_refuses_an_environment_variable_the_job_file_does_not_allow(env, job, body, field):
    before = env.file_bytes()
    response = env.client.patch(f"/api/scheduler/job/{job}", json=body)
    assert response.status_code == 422 and response.get_json()["field"] == field
    assert env.file_bytes() == before


def test_reads_go_on_while_the_job_file_is_broken(env, job):
    attempt(env, job, T0, 1, "success", "ok")
    env.turn()  # the daemon runs the job: its last good file
    env.jobs_file.write_text(env.jobs_file.read_text() + "\n[[jobs]]\nid = 'broken\n")
    assert env.client.get(f"/api/scheduler/job/{job}/runs").status_code == 200
    assert env.client.get(f"/api/scheduler/job/{job}/stats").status_code == 200
    assert job in env.client.get("/api/scheduler/recent").get_json()["recent"]
    response = env.client.patch(f"/api/scheduler/job/{job}", json={"max_retries": 1})
    assert response.status_code == 422 and "jobs.toml" in response.get_json()["error"]


# --- the job list, written again only for the jobs that changed --------------------------------


def _reference_body(env: Any) -> bytes:
    """The job list as ``json.dumps`` writes it whole (what the answer was before it was kept per job)."""
    import json
    from datetime import datetime, timezone

    from crawlsched import render

    jobfile = env.daemon.store.load()
    states = env.daemon.state.job_states([j.id for j in jobfile.jobs])
    now = datetime.fromtimestamp(env.clock.time(), timezone.utc)
    return json.dumps({"success": True, "jobs": [render.job_dict(j, states.get(j.id), now) for j in jobfile.jobs],
                       "config_error": None, "default_crawl": bool(jobfile.defaults.url or jobfile.defaults.command),
                       "scheduler_paused": jobfile.defaults.paused}, ensure_ascii=False, default=str).encode()


def test_the_job_list_writes_again_only_the_job_that_changed_byte_for_byte(env, job):
    ids = [job, env.add(name="Bérita ☕ «überall»", at="10:00", url="https://example.com/a",
                        headers={"X-Key": "secret"})["job_id"],
           env.add(name="Paused", cron="*/5 * * * *", url="https://example.com/b")["job_id"],
           env.add(name="Ends today", at="08:30", url="https://example.com/c", end_date="2025-11-08")["job_id"]]
    env.client.post(f"/api/scheduler/job/{ids[2]}/pause")
    attempt(env, ids[1], T0, 1, "failed", "HTTP 503 «busy»", retry_due=T0 + 300)
    cards = env.app.config["CRAWLSCHED_MONITOR"].api.cards
    first = env.client.get("/api/scheduler/jobs")
    assert first.data == _reference_body(env)
    built = cards.built
    attempt(env, job, T0 + 60, 1, "success", "saved 5 bytes")  # one job's state changes
    again = env.client.get("/api/scheduler/jobs")
    assert again.data == _reference_body(env) and again.data != first.data
    assert cards.built == built + 1
    env.clock.advance(3600)  # past the retry's due time and the last fire of "Ends today": their cards change by themselves
    later = env.client.get("/api/scheduler/jobs")
    assert later.data == _reference_body(env)
    assert [j["status"] for j in later.get_json()["jobs"]][3] == "finished"


# --- the strips after keep_history pruned the history --------------------------------------------


def _strip_fires(env: Any, job_id: str) -> list[str]:
    return [s[2] for s in env.client.get("/api/scheduler/recent").get_json()["recent"][job_id]]


def test_the_strips_drop_the_runs_keep_history_removed(env, job):
    flaky_history(env, job, 5)
    assert len(_strip_fires(env, job)) == 6  # five fires and a skip
    env.daemon.state.prune_history(0, keep_rows=4)  # the newest 4 rows stay: fires 3 (its skip, attempt 2) and 4
    assert _strip_fires(env, job) == ["2025-11-08 12:00:00", "2025-11-08 11:30:00", "2025-11-08 11:00:00"]


def test_the_strips_drop_pruned_runs_even_when_the_oldest_row_is_kept(env, job):
    """The oldest row in the history is another job's newest attempt (never pruned): the
    strips are still checked, within a minute."""
    other = env.add(name="Other", at="10:00", url="https://example.com/other")["job_id"]
    attempt(env, other, T0 - 86400 * 30, 1, "success", "long ago")
    flaky_history(env, job, 3)
    assert len(_strip_fires(env, job)) == 3
    env.daemon.state.prune_history(0, older_than=T0 + 3600)  # fire 0 goes; the other job's only row stays
    env.clock.advance(61)
    assert _strip_fires(env, job) == ["2025-11-08 10:00:00", "2025-11-08 09:00:00"]
    assert _strip_fires(env, other) == ["2025-10-09 08:00:00"]


# --- a removed job's history --------------------------------------------------------------------


def test_a_removed_jobs_history_can_still_be_read(env, job):
    run_id = saved_body(env, job, b"kept after the job went")
    attempt(env, job, T0 + 3600, 1, "failed", "HTTP 503 (later)", http_status=503)
    assert env.client.delete(f"/api/scheduler/job/{job}").status_code == 200
    assert env.client.get(f"/api/scheduler/job/{job}").status_code == 404  # not in the job file
    runs = env.client.get(f"/api/scheduler/job/{job}/runs")
    assert runs.status_code == 200
    data = runs.get_json()
    assert data["removed"] is True and data["job_id"] == job
    messages = [a["message"] for r in data["runs"] for a in r["attempts"]]
    assert messages == ["HTTP 503 (later)", "saved"]
    assert env.client.get(f"/api/scheduler/job/{job}/stats?since=2d").get_json()["removed"] is True
    body = env.client.get(f"/api/scheduler/job/{job}/runs/{run_id}/body/0")
    assert body.status_code == 200 and body.data == b"kept after the job went"


def test_a_job_in_the_file_is_not_marked_removed(env, job):
    assert env.client.get(f"/api/scheduler/job/{job}/runs").get_json()["removed"] is False


def test_an_id_with_no_history_and_no_job_is_still_not_found(env):
    response = env.client.get("/api/scheduler/job/never-was/runs")
    assert response.status_code == 404 and response.get_json()["error"] == 'no job with id or name "never-was"'
