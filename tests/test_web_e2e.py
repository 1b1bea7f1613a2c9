"""The real daemon as a subprocess with ``--http``: the page and API over the same files as the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers.history import runs
from helpers.jobs import write_jobs
from helpers.process import cli, free_port
from helpers.process import HttpDaemon as Daemon
from helpers.process import wait_for as wait_until  # one deadline poller for every real-process test
from helpers.servers import Pages

requests = pytest.importorskip("requests")



@pytest.fixture
def target() -> Iterator[str]:
    server = Pages({}, default=(200, b"<html>news</html>", None))
    yield server.url("/news")
    server.close()


@pytest.fixture
def home(home: Path) -> Path:
    """The shared home, holding a job file of UTC defaults alone."""
    write_jobs(home, '[defaults]\ntimezone = "UTC"\n', defaults=None)
    return home


def test_add_then_run_now_through_the_real_daemon(home, target):
    daemon = Daemon(home)
    try:
        daemon.wait_ready()
        added = requests.post(f"{daemon.base}/api/scheduler/job/add", timeout=5, json={
            "name": "Crawl Pagi Hari", "hour": 23, "minute": 59, "max_retries": 3, "retry_delay": 300, "url": target})
        assert added.status_code == 200, added.text
        assert added.json()["message"] == "✅ Job 'Crawl Pagi Hari' berhasil ditambahkan"
        job_id = added.json()["job_id"]
        ran = requests.post(f"{daemon.base}/api/scheduler/run-now", json={"job_id": job_id}, timeout=5)
        assert ran.status_code == 200, ran.text
        deadline = time.monotonic() + 10
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = requests.get(f"{daemon.base}/api/scheduler/job/{job_id}", timeout=5).json()["runs"]
            if runs and runs[0]["status"] != "running":
                break
            time.sleep(0.1)
        assert [(r["attempt"], r["status"]) for r in runs] == [(1, "success")]
        assert runs[0]["bytes"] == len(b"<html>news</html>")
        # The CLI reads the same files.
        listed = subprocess.run([sys.executable, "-m", "crawlsched", "list", "--json"], capture_output=True, text=True,
                                env={**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home)})
        assert '"status": "success"' in listed.stdout
        status = requests.get(f"{daemon.base}/api/scheduler/status", timeout=5).json()
        assert status["running"] is True and status["pid"] == daemon.proc.pid and status["config_ok"] is True
        # A body without a Content-Type (requests sends none for raw bytes) is refused; none at all is fine.
        assert requests.post(f"{daemon.base}/api/scheduler/stop", data=b'{"a": 1}', timeout=5).status_code == 415
        assert requests.post(f"{daemon.base}/api/scheduler/stop", timeout=5).status_code == 200
        assert requests.get(f"{daemon.base}/api/scheduler/jobs", headers={"Host": f"evil.example:{daemon.port}"},
                            timeout=5).status_code == 403
        page = requests.get(f"{daemon.base}/scheduler", timeout=5)
        assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    finally:
        assert daemon.stop() == 0


def test_a_token_file_protects_the_api(home, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("e2e-token-value\n")
    daemon = Daemon(home, "--token-file", str(token_file))
    try:
        daemon.wait_ready()
        assert requests.get(f"{daemon.base}/api/scheduler/jobs", timeout=5).status_code == 401
        ok = requests.get(f"{daemon.base}/api/scheduler/jobs", headers={"Authorization": "Bearer e2e-token-value"}, timeout=5)
        assert ok.status_code == 200
    finally:
        assert daemon.stop() == 0


def test_a_non_loopback_address_without_a_token_is_refused_with_exit_2(home):
    env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home)}
    env.pop("CRAWLSCHED_TOKEN", None)
    result = subprocess.run([sys.executable, "-m", "crawlsched", "daemon", "--http", f"0.0.0.0:{free_port()}"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert "token" in result.stderr and "Traceback" not in result.stderr


# The seed's curl examples, byte for byte (seed/000_bd9751e66c7ebb3c.txt, "B. Melalui API" and use case 2).
SEED_ADD = """curl -X POST http://localhost:5000/api/scheduler/job/add \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "Crawl Pagi Hari",
    "start_date": "2025-11-08",
    "end_date": "2025-12-31",
    "hour": 9,
    "minute": 5,
    "max_retries": 3,
    "retry_delay": 300
  }'"""
SEED_JOBS = "curl http://localhost:5000/api/scheduler/jobs"
SEED_DELETE = "curl -X DELETE http://localhost:5000/api/scheduler/job/job_20251107110530"
SEED_RETRY = """curl -X POST http://localhost:5000/api/scheduler/retry-config \\
  -H "Content-Type: application/json" \\
  -d '{
    "max_retries": 5,
    "retry_delay": 600
  }'"""
SEED_START = """curl -X POST http://localhost:5000/api/scheduler/start \\
  -H "Content-Type: application/json" \\
  -d '{
    "mode": "custom",
    "cron": "0 10 * * 1"
  }'"""
SEED_STATUS = "curl http://localhost:5000/api/scheduler/status"


def seed_curl(daemon: Daemon, line: str) -> tuple[int, dict[str, Any]]:
    """Run one of the seed's curl lines as a shell would, on this daemon's port; (HTTP status, JSON body)."""
    command = line.replace("localhost:5000", f"localhost:{daemon.port}") + " -s -w '\\n%{http_code}'"
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_seeds_curl_examples_work_verbatim_once_defaults_names_a_crawl(home, target):
    daemon = Daemon(home, at="2025-11-07T11:05:30+00:00")  # the seed's day (job_20251107110530)
    try:
        daemon.wait_ready()
        code, refused = seed_curl(daemon, SEED_ADD)
        assert code == 422 and refused["success"] is False
        assert "[defaults] has no default crawl" in refused["error"] and "crawlsched defaults --url URL" in refused["error"]
        assert "None" not in refused["error"]
        assert seed_curl(daemon, SEED_JOBS)[1]["default_crawl"] is False

        set_default = run_cli(home, "defaults", "--url", target)
        assert set_default.returncode == 0, set_default.stderr

        code, added = seed_curl(daemon, SEED_ADD)
        assert (code, added) == (200, {"success": True, "message": "✅ Job 'Crawl Pagi Hari' berhasil ditambahkan",
                                       "job_id": "crawl-pagi-hari"})
        code, listed = seed_curl(daemon, SEED_JOBS)
        assert code == 200 and listed["success"] is True and listed["default_crawl"] is True
        job = listed["jobs"][0]
        assert {k: job[k] for k in ("name", "schedule", "start_date", "end_date", "next_run", "last_run", "status",
                                    "max_retries", "retry_delay")} == {
            "name": "Crawl Pagi Hari", "schedule": "09:05", "start_date": "2025-11-08", "end_date": "2025-12-31",
            "next_run": "2025-11-08 09:05:00", "last_run": None, "status": "active", "max_retries": 3, "retry_delay": 300,
        }  # the seed's response, field for field

        # The id in the seed's DELETE is one of its own scheduler_jobs.json: imported, it is kept.
        seed_file = home / "scheduler_jobs.json"
        seed_file.write_text(json.dumps([{"id": "job_20251107110530", "name": "Imported", "start_date": "2025-11-08",
                                          "end_date": "2025-12-31", "hour": 9, "minute": 5, "max_retries": 3,
                                          "retry_delay": 300, "status": "active"}]))
        assert run_cli(home, "import", str(seed_file)).returncode == 0
        code, deleted = seed_curl(daemon, SEED_DELETE)
        assert code == 200 and deleted["removed"] == ["job_20251107110530"]

        code, config = seed_curl(daemon, SEED_RETRY)
        assert code == 200 and (config["defaults"]["max_retries"], config["defaults"]["retry_delay"]) == (5, 600)
        code, started = seed_curl(daemon, SEED_START)
        assert code == 200 and started["job_id"] == "default", started
        code, status = seed_curl(daemon, SEED_STATUS)
        assert code == 200 and status["running"] is True and status["config_ok"] is True
        jobs = {j["id"]: j for j in seed_curl(daemon, SEED_JOBS)[1]["jobs"]}
        assert set(jobs) == {"crawl-pagi-hari", "default"} and jobs["default"]["schedule"] == "0 10 * * 1"
        assert jobs["default"]["max_retries"] == 5  # the seed's retry config reaches a job that sets none
    finally:
        assert daemon.stop() == 0


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return cli(home, *args, env={"TZ": "UTC"})


def attempts(home: Path, job_id: str) -> list[dict[str, Any]]:
    return runs(home, job_id)


@pytest.mark.slow
def test_legacy_stop_and_start_through_the_real_daemon_keep_a_jobs_own_pause(home, target):
    (home / "jobs.toml").write_text(
        f'[defaults]\ntimezone = "UTC"\nurl = "{target}"\n\n'
        '[[jobs]]\nid = "tick"\nevery = "1s"\n\n'
        '[[jobs]]\nid = "held"\nevery = "1s"\npaused = true  # paused on purpose\n')
    daemon = Daemon(home)
    try:
        daemon.wait_ready()
        wait_until(lambda: attempts(home, "tick"), 10, "tick's first run")
        stop = requests.post(f"{daemon.base}/api/scheduler/stop", timeout=5)  # as `curl -X POST` sends it
        assert stop.status_code == 200 and stop.json()["scheduler_paused"] is True
        status = requests.get(f"{daemon.base}/api/scheduler/status", timeout=5).json()
        assert status["scheduler_paused"] is True and status["next_job"] is None
        cli_status = run_cli(home, "status", "--json")
        assert cli_status.returncode == 0 and json.loads(cli_status.stdout)["scheduler_paused"] is True
        assert "scheduler: stopped" in run_cli(home, "status").stdout
        time.sleep(1.5)  # an attempt under way when stop came may finish
        settled = len(attempts(home, "tick"))
        time.sleep(3)  # three fires' worth
        assert len(attempts(home, "tick")) == settled  # nothing fired while stopped
        assert [r for r in attempts(home, "tick") if r["status"] == "missed"] == []  # and nothing is "missed"

        start = requests.post(f"{daemon.base}/api/scheduler/start", timeout=5)
        assert start.status_code == 200 and start.json()["scheduler_paused"] is False
        wait_until(lambda: len(attempts(home, "tick")) > settled, 10, "tick firing again after start")
        assert attempts(home, "held") == []  # paused on its own: still paused
        assert "paused = true  # paused on purpose" in (home / "jobs.toml").read_text()
        assert json.loads(run_cli(home, "status", "--json").stdout)["scheduler_paused"] is False
    finally:
        assert daemon.stop() == 0


@pytest.mark.slow
def test_a_broken_job_file_while_the_daemon_runs_shows_the_jobs_it_runs(home, target):
    (home / "jobs.toml").write_text(f'[defaults]\ntimezone = "UTC"\n\n[[jobs]]\nid = "kept"\nname = "Kept Job"\n'
                                    f'at = "23:59"\nurl = "{target}"\n')
    daemon = Daemon(home)
    try:
        daemon.wait_ready()
        assert requests.post(f"{daemon.base}/api/scheduler/run-now", json={"job_id": "kept"}, timeout=5).status_code == 200
        wait_until(lambda: [r for r in attempts(home, "kept") if r["status"] == "success"], 10, "kept's run")
        broken = '[defaults]\ntimezone = "UTC\n\n[[jobs]]\nid = "kept"\n'  # one missing quote
        (home / "jobs.toml").write_text(broken)
        wait_until(lambda: requests.get(f"{daemon.base}/api/scheduler/status", timeout=5).json()["config_ok"] is False,
                   10, "the daemon to notice the broken file")

        listed = run_cli(home, "list", "--json")
        assert listed.returncode == 2
        data = json.loads(listed.stdout)
        assert [j["id"] for j in data["jobs"]] == ["kept"] and data["jobs"][0]["status"] == "success"
        assert data["config_error"].startswith("jobs.toml:2: not valid TOML")
        assert "showing the 1 job the daemon is running" in listed.stderr
        table = run_cli(home, "list")
        assert table.returncode == 2 and "Kept Job" in table.stdout
        assert table.stderr.startswith("crawlsched: error: jobs.toml:2:")
        shown = run_cli(home, "show", "kept", "--json")
        assert shown.returncode == 2 and json.loads(shown.stdout)["job"]["name"] == "Kept Job"
        history = run_cli(home, "history", "kept", "--json")
        assert history.returncode == 2 and [r["status"] for r in json.loads(history.stdout)["runs"]] == ["success"]

        jobs = requests.get(f"{daemon.base}/api/scheduler/jobs", timeout=5)
        assert jobs.status_code == 200 and [j["id"] for j in jobs.json()["jobs"]] == ["kept"]
        assert jobs.json()["config_error"].startswith("jobs.toml:2:")
        assert requests.get(f"{daemon.base}/api/scheduler/job/kept", timeout=5).status_code == 200
        add = requests.post(f"{daemon.base}/api/scheduler/job/add", json={"name": "New", "hour": 9, "url": target}, timeout=5)
        assert add.status_code == 422 and add.json()["error"].startswith("jobs.toml:2:")
        assert run_cli(home, "add", "New", "--at", "09:00", "--url", target).returncode == 2
        assert (home / "jobs.toml").read_text() == broken  # nothing rewritten
    finally:
        assert daemon.stop() == 0
    alone = run_cli(home, "list", "--json")  # no daemon, so no last good file to show: the error alone
    assert alone.returncode == 2
    assert list(json.loads(alone.stdout)) == ["success", "error"] and json.loads(alone.stdout)["success"] is False
    assert json.loads(alone.stdout)["error"].startswith("jobs.toml:2: not valid TOML")
