"""Scenarios 2, 11-13 with the real daemon: downtime catch-up, a 429 with Retry-After, commands
that leave grandchildren or ignore SIGTERM, the log file rotated away.

Anchors: systemd ``Persistent=true`` and anacron (missed runs happen once after boot);
Kubernetes CronJob ``startingDeadlineSeconds`` / ``concurrencyPolicy: Forbid`` (too-old or
overlapping runs are not started); RFC 9110 Retry-After (honoured by curl ``--retry``);
systemd ``KillMode=control-group`` (a timed-out unit's whole cgroup is killed);
logrotate with ``create`` (the writer reopens the path, like WatchedFileHandler).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers.history import runs
from helpers.jobs import write_jobs
from helpers.process import DaemonProcess, pid_gone, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("policy", ["none", "all"])
def test_downtime_catch_up_policies_with_the_real_daemon(home, target, policy):
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n'
                     f'catch_up = "{policy}"\n')
    d = DaemonProcess(home).start()
    wait_for(lambda: runs(home), 10, "first run")
    d.stop()
    before = len(runs(home))
    time.sleep(4)
    d2 = DaemonProcess(home).start()
    try:
        time.sleep(1.5)
    finally:
        d2.stop()
    after = runs(home)[before:]
    catch_up = [r for r in after if r["trigger"] == "catch_up"]
    missed = [r for r in after if r["status"] == "missed"]
    if policy == "none":
        assert catch_up == [] and len(missed) == 1 and missed[0]["missed_count"] >= 3
    else:
        assert len(catch_up) >= 3 and not missed
        assert [r["scheduled_for"] for r in catch_up] == sorted(r["scheduled_for"] for r in catch_up)
        assert all(r["status"] == "success" for r in catch_up)


@pytest.mark.parametrize("retry_after, max_delay, low, high", [("3", 60, 3, 8), ("30", 2, 2, 6)],
                         ids=["honoured", "capped-by-retry_max_delay"])
def test_429_retry_after_sets_the_retry_due_time(home, target, retry_after, max_delay, low, high):
    path = f"/429/k/{retry_after}"
    write_jobs(home, f'[[jobs]]\nid = "r"\nname = "r"\nevery = "1h"\nurl = "{target.url(path)}"\n'
                     f"max_retries = 2\nretry_delay = 1\nretry_max_delay = {max_delay}\n")
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: any(r["status"] == "success" for r in runs(home)), 20, "the retry")
    finally:
        d.stop()
    first, second = runs(home)
    assert (first["status"], first["http_status"], second["status"]) == ("failed", 429, "success")
    waited = second["started_at"] - first["finished_at"]
    assert low - 0.1 <= waited < high, waited
    assert f"Scheduling retry 1 in {low} seconds" in d.output()
    assert target.hits[path] == 2


def test_a_command_that_ignores_sigterm_and_leaves_a_grandchild_is_gone_after_its_timeout(home):
    pidfile = home / "grandchild.pid"
    script = f'trap "" TERM; sleep 300 & echo $! > {pidfile}; wait'
    write_jobs(home, f'[[jobs]]\nid = "stubborn"\nname = "stubborn"\nevery = "1h"\ncommand = """sh -c \'{script}\'"""\n'
                     "timeout = 2\nmax_retries = 0\n")
    d = DaemonProcess(home).start()
    try:
        row = wait_for(lambda: [r for r in runs(home) if r["status"] not in ("running",)], 20, "the timeout")
        grandchild = int(pidfile.read_text())
        wait_for(lambda: pid_gone(grandchild), 5, "the grandchild to be gone")
        assert d.proc.poll() is None
    finally:
        d.stop()
    assert row[0]["status"] == "failed" and "timed out after 2s" in row[0]["message"]
    assert row[0]["finished_at"] - row[0]["started_at"] < 2 + 5 + 3  # timeout + SIGKILL grace + slack


def test_the_log_file_renamed_away_gets_a_new_file_for_new_lines(home, target):
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    try:
        log = wait_for(lambda: next((home / "logs").glob("crawler_*.log"), None), 10, "the log file")
        wait_for(lambda: "AUTO CRAWL SUCCESS" in log.read_text(), 10, "a logged success")
        rotated = log.with_name(log.name + ".1")
        log.rename(rotated)  # what logrotate does
        time.sleep(0.3)  # a line being written at the very moment of the rename may still land there
        size = rotated.stat().st_size
        wait_for(lambda: log.exists() and "AUTO CRAWL SUCCESS" in log.read_text(), 10, "new lines in a new file")
        assert rotated.stat().st_size == size  # nothing more went into the renamed file
    finally:
        d.stop()


def _accounted(rows: list[dict]) -> tuple[int, int]:
    """(fires accounted for: run, skipped or counted missed; fires due from the first to the last)."""
    fires = sorted({r["scheduled_for"] for r in rows if r["status"] != "missed"}
                   | {r["last_missed"] for r in rows if r["status"] == "missed"})
    missed = sum((r["missed_count"] or 0) - 1 for r in rows if r["status"] == "missed")
    return len(fires) + missed, round(fires[-1] - fires[0]) + 1


def test_fires_due_during_the_sigterm_grace_period_are_recorded_after_restart(home, target):
    # A command that outlasts the grace period keeps the daemon in its stop for 3 s; the
    # 1 s job comes due three times meanwhile. They never ran: the next start must account
    # for them as downtime (catch_up = "none": one missed row counting them).
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n'
                     'catch_up = "none"\n\n'
                     '[[jobs]]\nid = "slow"\nname = "slow"\nevery = "1h"\ncommand = "sleep 300"\nmax_retries = 0\n')
    d = DaemonProcess(home, "--grace", "3").start()
    wait_for(lambda: runs(home, "slow", status="running"), 10, "the slow command running")
    wait_for(lambda: len(runs(home, "tick")) >= 2, 10, "ticks")
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 >= 3  # it did wait out the grace period
    d2 = DaemonProcess(home).start()
    try:
        time.sleep(1.5)
    finally:
        assert d2.stop() == 0
    ticks = runs(home, "tick")
    accounted, due = _accounted(ticks)
    assert accounted == due, [(r["scheduled_for"], r["status"], r["missed_count"]) for r in ticks]
    assert any(r["status"] == "missed" for r in ticks)


def _environ_of(pid: int) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        return fh.read()


def test_a_command_job_cannot_read_the_api_token_from_the_daemon(home, tmp_path):
    import secrets
    import socket
    import urllib.error
    import urllib.request

    token = "tok-" + secrets.token_hex(24)
    seen = tmp_path / "parent-environ"
    write_jobs(home, '[[jobs]]\nid = "peek"\nname = "peek"\nevery = "1h"\n'
                     f'command = "sh -c \'cat /proc/$PPID/environ > {seen}\'"\n')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    d = DaemonProcess(home, "--http", f"127.0.0.1:{port}", env={"CRAWLSCHED_TOKEN": token}).start()
    try:
        wait_for(lambda: runs(home, "peek", status="success"), 10, "the command job")
        assert seen.read_bytes(), "the command did not read its parent's environment"
        assert token.encode() not in seen.read_bytes()
        assert token.encode() not in _environ_of(d.proc.pid)
        assert b"CRAWLSCHED_TOKEN=" not in _environ_of(d.proc.pid)
        url = f"http://127.0.0.1:{port}/api/scheduler/jobs"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(asked, timeout=5) as answer:  # the daemon still has the token
            assert answer.status == 200
    finally:
        assert d.stop() == 0
