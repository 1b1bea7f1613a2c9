"""The real daemon as a subprocess, a real HTTP target on 127.0.0.1, real signals, a real SQLite file.

Waits are real but short: `every` intervals of a second or two and retry delays of a second.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from helpers.history import retries, runs
from helpers.jobs import write_jobs
from helpers.process import cli, DaemonProcess, wait_for
from helpers.servers import Target

pytestmark = pytest.mark.slow


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()


def test_interval_job_fires_repeatedly(home, target):
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: len([r for r in runs(home) if r["status"] == "success"]) >= 3, 15, "three successes")
    finally:
        assert d.stop() == 0
    got = runs(home)
    assert all(r["status"] in ("success", "skipped") for r in got)
    bodies = list((home / "data" / "tick").iterdir())
    assert bodies, "bodies are saved under data/<job-id>/<run stamp>/"


def test_flaky_target_succeeds_on_attempt_3_with_the_seed_log_lines(home, target):
    write_jobs(home, f'[[jobs]]\nid = "flaky"\nname = "flaky"\nevery = "1h"\nurl = "{target.url("/flaky/a")}"\n'
                     "max_retries = 3\nretry_delay = 1\n")
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: any(r["status"] == "success" for r in runs(home)), 20, "the third attempt")
    finally:
        assert d.stop() == 0
    assert [(r["attempt"], r["status"]) for r in runs(home)] == [(1, "failed"), (2, "failed"), (3, "success")]
    log = next((home / "logs").glob("crawler_*.log")).read_text()
    for line in [
        " - INFO - 🤖 AUTO CRAWL STARTED",
        " - INFO - Job ID: flaky",
        "🔄 AUTO CRAWL FAILED: HTTP 503",
        " - INFO - 🔄 Scheduling retry 1 in 1 seconds...",
        " - INFO - 🔄 Retry attempt: 1/3",
        " - INFO - 🔄 Scheduling retry 2 in 1 seconds...",
        " - INFO - 🔄 Retry attempt: 2/3",
        " - INFO - ✅ AUTO CRAWL SUCCESS",
    ]:
        assert line in log, line


def test_always_failing_job_reaches_max_retries(home, target):
    write_jobs(home, f'[[jobs]]\nid = "bad"\nname = "bad"\nevery = "1h"\nurl = "{target.url("/fail")}"\n'
                     "max_retries = 1\nretry_delay = 1\n")
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: "Max retries reached" in d.output(), 15, "max retries")
    finally:
        d.stop()
    assert [(r["attempt"], r["status"]) for r in runs(home)] == [(1, "failed"), (2, "failed")]
    assert "❌ Max retries reached for job bad" in d.output()


def test_job_added_while_running_fires_within_seconds(home, target):
    write_jobs(home, "")
    d = DaemonProcess(home).start()
    try:
        added = time.time()
        cli(home, "add", "Late comer", "--every", "1h", "--url", target.url("/ok"), check=True)
        row = wait_for(lambda: runs(home, "late-comer"), 10, "the new job's first attempt")
        pickup = row[0]["started_at"] - added
        assert pickup < 5, f"picked up after {pickup:.2f}s"
    finally:
        d.stop()


def test_sigkill_during_retry_wait_then_restart_finishes_the_chain(home, target):
    write_jobs(home, f'[[jobs]]\nid = "flaky"\nname = "flaky"\nevery = "1h"\nurl = "{target.url("/flaky/k")}"\n'
                     "max_retries = 3\nretry_delay = 3\n")
    d = DaemonProcess(home).start()
    wait_for(lambda: [r for r in runs(home) if r["status"] == "failed"], 10, "first failure")
    d.kill()  # during the 3 s retry wait
    assert [(r["attempt"], r["status"]) for r in runs(home)] == [(1, "failed")]
    d2 = DaemonProcess(home).start()
    try:
        wait_for(lambda: any(r["status"] == "success" for r in runs(home)), 20, "chain to finish")
    finally:
        d2.stop()
    got = [(r["attempt"], r["status"]) for r in runs(home) if r["attempt"] > 0]
    assert got == [(1, "failed"), (2, "failed"), (3, "success")]


def test_sigterm_during_a_crawl_leaves_no_run_running(home):
    write_jobs(home, '[[jobs]]\nid = "long"\nname = "long"\nevery = "1h"\ncommand = "sleep 30"\nmax_retries = 2\n')
    d = DaemonProcess(home, "--grace", "1").start()
    wait_for(lambda: runs(home), 10, "the attempt to start")
    assert d.stop() == 0
    got = runs(home)
    assert [r["status"] for r in got] == ["interrupted"]
    # The chain resumes at the next start with the next attempt number.
    assert [(r["next_attempt"],) for r in retries(home)] == [(2,)]


def test_overlapping_fires_are_skipped(home):
    write_jobs(home, '[[jobs]]\nid = "slow"\nname = "slow"\nevery = "1s"\ncommand = "sleep 2.5"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: [r for r in runs(home) if r["status"] == "skipped"], 10, "a skipped fire")
    finally:
        d.stop()
    skipped = [r for r in runs(home) if r["status"] == "skipped"]
    assert skipped[0]["attempt"] == 0 and "still running" in skipped[0]["message"]


def test_corrupted_job_file_keeps_old_jobs_and_fixed_file_is_picked_up(home, target):
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: runs(home), 10, "first run")
        (home / "jobs.toml").write_text("[[jobs]]\nid = 'tick'\nname = 'tick'\nevery = \n")
        status = wait_for(lambda: (r := cli(home, "status", "--json")) and json.loads(r.stdout)["config_ok"] is False and r, 10, "config error")
        body = json.loads(status.stdout)
        assert status.returncode == 0 and "jobs.toml:4" in body["config_error"]
        n = len(runs(home))
        wait_for(lambda: len(runs(home)) >= n + 2, 10, "old job keeps firing")
        write_jobs(home, f'[[jobs]]\nid = "tock"\nname = "tock"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
        wait_for(lambda: runs(home, "tock"), 10, "the fixed file's job")
        assert json.loads(cli(home, "status", "--json").stdout)["config_ok"] is True
    finally:
        d.stop()


def test_run_now_starts_within_a_second(home, target):
    write_jobs(home, f'[[jobs]]\nid = "manual"\nname = "manual"\ncron = "0 0 1 1 *"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    try:
        asked = time.time()
        result = cli(home, "run-now", "manual")
        assert result.returncode == 0, result.stderr
        row = wait_for(lambda: runs(home, "manual"), 10, "the manual run")
        assert row[0]["trigger"] == "manual"
        assert row[0]["started_at"] - asked < 3
    finally:
        d.stop()


def test_run_now_without_daemon_exits_3(home):
    write_jobs(home, '[[jobs]]\nid = "manual"\nname = "manual"\ncron = "0 0 1 1 *"\ncommand = "true"\n')
    assert cli(home, "run-now", "manual").returncode == 3


def test_catch_up_after_downtime_runs_the_latest_once(home, target):
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    wait_for(lambda: runs(home), 10, "first run")
    d.stop()
    before = len(runs(home))
    time.sleep(4)
    d2 = DaemonProcess(home).start()
    try:
        wait_for(lambda: [r for r in runs(home) if r["trigger"] == "catch_up"], 10, "the catch-up run")
    finally:
        d2.stop()
    after = runs(home)[before:]
    missed = [r for r in after if r["status"] == "missed"]
    assert len([r for r in after if r["trigger"] == "catch_up"]) == 1
    assert len(missed) == 1 and missed[0]["missed_count"] >= 2


def test_second_daemon_refuses_naming_the_pid(home):
    write_jobs(home, "")
    d = DaemonProcess(home).start()
    try:
        second = DaemonProcess(home).start(wait_ready=False)
        code = second.proc.wait(timeout=20)
        second.stderr.close()
        assert code != 0
        assert f"pid {d.proc.pid}" in second.output()
    finally:
        d.stop()


def test_bad_job_file_at_start_exits_non_zero_naming_the_line(home):
    (home / "jobs.toml").write_text('[[jobs]]\nid = "x"\nname = "x"\nat = "25:00"\ncommand = "true"\n')
    d = DaemonProcess(home).start(wait_ready=False)
    code = d.proc.wait(timeout=20)
    d.stderr.close()
    assert code == 2
    assert "jobs.toml:4" in d.output() and "25:00" in d.output()


def test_status_up_and_down(home):
    write_jobs(home, "")
    assert cli(home, "status").returncode == 3
    d = DaemonProcess(home).start()
    try:
        result = cli(home, "status", "--json")
        body = json.loads(result.stdout)
        assert result.returncode == 0 and body["running"] is True and body["pid"] == d.proc.pid
    finally:
        d.stop()
    result = cli(home, "status", "--json")
    assert result.returncode == 3 and json.loads(result.stdout)["running"] is False


def test_stop_command_stops_the_daemon(home):
    write_jobs(home, "")
    d = DaemonProcess(home).start()
    result = cli(home, "stop")
    assert result.returncode == 0, result.stderr
    assert d.proc.wait(timeout=30) == 0


def test_sighup_reloads_at_once(home, target):
    write_jobs(home, "")
    d = DaemonProcess(home).start()
    try:
        write_jobs(home, f'[[jobs]]\nid = "hup"\nname = "hup"\nevery = "1h"\nurl = "{target.url("/ok")}"\n')
        d.signal(signal.SIGHUP)
        wait_for(lambda: runs(home, "hup"), 10, "reload by SIGHUP")
    finally:
        d.stop()


def test_run_command_runs_the_chain_in_the_foreground(home, target):
    write_jobs(home, f'[[jobs]]\nid = "flaky"\nname = "flaky"\nevery = "1h"\nurl = "{target.url("/flaky/run")}"\n'
                     "max_retries = 3\nretry_delay = 1\n")
    result = cli(home, "run", "flaky")
    assert result.returncode == 0, result.stderr
    assert [(r["attempt"], r["status"], r["trigger"]) for r in runs(home)] == [
        (1, "failed", "run"), (2, "failed", "run"), (3, "success", "run")]
    assert "✅ AUTO CRAWL SUCCESS" in result.stderr


def test_run_command_exits_1_when_the_chain_fails(home, target):
    write_jobs(home, f'[[jobs]]\nid = "bad"\nname = "bad"\nevery = "1h"\nurl = "{target.url("/fail")}"\nmax_retries = 0\n')
    result = cli(home, "run", "bad")
    assert result.returncode == 1
    assert "❌ Max retries reached for job bad" in result.stderr


def test_command_job_gets_its_environment(home):
    write_jobs(home, '[[jobs]]\nid = "env"\nname = "env"\nevery = "1h"\n'
                     'command = "sh -c \'echo $CRAWLSCHED_JOB_ID $CRAWLSCHED_ATTEMPT $CRAWLSCHED_SCHEDULED_FOR\'"\n')
    result = cli(home, "run", "env")
    assert result.returncode == 0, result.stderr
    row = runs(home)[0]
    assert row["message"].startswith("env 1 ")
    assert os.path.exists(row["output"])


# --- demo ---------------------------------------------------------------------------------------

CONSOLE_SCRIPT = str(Path(__import__("sys").executable).parent / "crawlsched")  # what a person runs


def _demo(tmp_path: Path, *args: str, cwd: Path | None = None) -> __import__("subprocess").Popen:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLSCHED_")}
    return subprocess.Popen([CONSOLE_SCRIPT, "demo", "--dir", str(tmp_path / "demo"), *args], cwd=cwd or tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_demo_started_beside_a_folder_named_crawlsched_runs_the_installed_daemon(tmp_path):
    shadow = tmp_path / "project"
    (shadow / "crawlsched").mkdir(parents=True)
    (shadow / "crawlsched" / "__init__.py").write_text("")  # someone's own package of that name
    demo = _demo(tmp_path, "--seconds", "5", cwd=shadow)
    out, err = demo.communicate(timeout=90)
    assert demo.returncode == 0, out + err
    assert [r for r in runs(tmp_path / "demo") if r["job_id"] == "healthy" and r["status"] == "success"], out + err
    assert "Look around" in out


def test_the_demos_closing_commands_are_whole_lines_on_an_80_column_terminal(tmp_path):
    """They are copied and pasted: a path in them must not be broken at the terminal's width."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLSCHED_")}
    deep = tmp_path / ("d" * 40)  # a long temporary path, as mktemp's can be
    proc = subprocess.run([CONSOLE_SCRIPT, "demo", "--dir", str(deep), "--seconds", "5"], cwd=tmp_path, timeout=90,
                          env={**env, "FORCE_COLOR": "1", "COLUMNS": "80"}, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for command in (f"  crawlsched -f {deep}/jobs.toml history", f"  crawlsched -f {deep}/jobs.toml daemon",
                    f"  cat {deep}/logs/crawler_*.log"):
        assert command in lines, lines[-8:]


def test_demo_whose_daemon_dies_exits_1_with_the_daemons_last_lines(tmp_path):
    demo = _demo(tmp_path, "--seconds", "60")
    lock = tmp_path / "demo" / ".crawlsched-daemon.lock"
    try:
        pid = wait_for(lambda: lock.exists() and lock.read_text().strip(), 30, "the demo's daemon to start")
        wait_for(lambda: runs(tmp_path / "demo"), 30, "the demo's first attempt")
        os.kill(int(pid), signal.SIGKILL)
        out, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 1, out + err
    assert "the demo's daemon stopped" in err and "signal 9" in err, err
    assert "crawlsched daemon ready" in err, "its last lines are shown"
    assert "Look around" not in out


# --- what is next, as of now (SPEC §6) ---------------------------------------------------------


def test_systemd_status_follows_every_fire_and_status_says_what_is_next_as_of_now(home, target):
    import socket
    import tempfile
    from datetime import datetime

    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "2s"\nurl = "{target.url("/ok")}"\n')
    with tempfile.TemporaryDirectory(prefix="sd") as folder, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = os.path.join(folder, "notify")  # a real datagram socket standing in for systemd's
        sock.bind(path)
        sock.settimeout(0.2)
        d = DaemonProcess(home, env={"NOTIFY_SOCKET": path}).start()
        try:
            statuses: list[str] = []
            deadline = time.monotonic() + 15
            while len(set(statuses)) < 3 and time.monotonic() < deadline:
                try:
                    message = sock.recv(4096).decode()
                except socket.timeout:
                    continue
                statuses += [line for line in message.split("\n") if line.startswith("STATUS=")]
            assert len(set(statuses)) >= 3, statuses
            assert all(s.startswith("STATUS=1 jobs; next: tick at ") for s in statuses), statuses
            data = json.loads(cli(home, "status", "--json", check=True).stdout)
            asked = time.time()  # (a stop waits for a fire handed out ahead to reach its instant)
        finally:
            assert d.stop() == 0
    assert data["next_job"] == "tick"
    ahead = datetime.fromisoformat(data["next_run_iso"]).timestamp() - asked
    assert -0.5 < ahead <= 2.5, f"next run {data['next_run_iso']} is not the next 2 s fire from now"


def test_a_missing_job_file_at_start_is_a_warning_naming_it_and_status_shows_it(home):
    d = DaemonProcess(home).start()  # no jobs.toml in the home
    try:
        data = json.loads(cli(home, "status", "--json", check=True).stdout)
        text = cli(home, "status", check=True).stdout
    finally:
        assert d.stop() == 0
    path = str(home / "jobs.toml")
    assert any(" - WARNING - " in line and path in line for line in d.output().splitlines()), d.output()
    assert data["running"] is True and data["config_ok"] is True and data["config_error"] is None
    assert data["jobs_file_missing"] is True
    assert f"jobs file: {path} (missing" in text, text
