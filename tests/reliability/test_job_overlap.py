"""A job never overlaps itself, whoever starts it (SPEC §5): the daemon and `crawlsched run` as real processes.

Each side claims the job's chain in the state database; a claim whose owner was
killed (SIGKILL) is stale, so the other side goes on afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers.history import runs
from helpers.jobs import write_jobs
from helpers.process import cli, CRAWLSCHED, DaemonProcess, wait_for

pytestmark = pytest.mark.slow


def job(home: Path, every: str = "1h", retry_delay: int = 30) -> str:
    """A command job that fails until the file ``ok`` exists in the home."""
    return (f'[[jobs]]\nid = "j"\nname = "j"\nevery = "{every}"\n'
            f"command = \"sh -c 'test -e {home / 'ok'}'\"\nmax_retries = 3\nretry_delay = {retry_delay}\n")


def start_run(home: Path) -> subprocess.Popen:
    env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home)}
    return subprocess.Popen(CRAWLSCHED + ["run", "j"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, text=True)


def kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()


def test_run_refuses_while_the_daemons_chain_waits_for_its_retry_and_goes_on_once_the_daemon_is_killed(home):
    write_jobs(home, job(home))
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: [r for r in runs(home) if r["status"] == "failed"], 15, "the daemon's first attempt to fail")
        refused = cli(home, "run", "j")
        assert refused.returncode == 1, refused.stderr
        assert "daemon" in refused.stderr and "waiting to retry it (attempt 2/4" in refused.stderr, refused.stderr
        assert [r["trigger"] for r in runs(home)] == ["schedule"], "the refused run ran nothing"
    finally:
        d.kill()  # SIGKILL during the retry wait: its claim is stale from now on
    (home / "ok").touch()
    done = cli(home, "run", "j")
    assert done.returncode == 0, done.stderr
    assert [(r["trigger"], r["attempt"], r["status"]) for r in runs(home)] == [
        ("schedule", 1, "failed"), ("run", 1, "success")]


def test_the_daemon_skips_fires_while_a_run_chain_waits_and_fires_again_once_the_run_is_killed(home):
    write_jobs(home, job(home, every="10s", retry_delay=8))  # the run waits 8 s for its retry
    run = start_run(home)
    try:
        wait_for(lambda: [r for r in runs(home) if r["status"] == "failed"], 15, "the run's first attempt to fail")
        d = DaemonProcess(home).start()  # the job is new to it: it fires at once, then every 10 s
    except BaseException:
        kill9(run)
        raise
    try:
        skipped = wait_for(lambda: [r for r in runs(home) if r["status"] == "skipped"], 15, "a skipped fire")
        assert f"`crawlsched run` (pid {run.pid}) is running it" in skipped[0]["message"], skipped[0]
        assert not [r for r in runs(home) if r["trigger"] == "schedule" and r["attempt"] > 0], "no daemon attempt yet"
        kill9(run)  # SIGKILL while the run waits for its retry
        (home / "ok").touch()
        wait_for(lambda: [r for r in runs(home) if r["trigger"] == "schedule" and r["status"] == "success"], 25,
                 "the daemon's next fire to run")
    finally:
        assert d.stop() == 0
    got = runs(home)
    assert [(r["trigger"], r["attempt"], r["status"]) for r in got if r["trigger"] == "run"] == [("run", 1, "failed")]
    assert "crawlsched run" in d.output() and "skipped" in d.output()
