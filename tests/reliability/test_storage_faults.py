"""Scenarios 9-10: SQLite locked by another process, a corrupted database, a full disk.

Anchors: SQLite's own guidance (busy timeout, retry on SQLITE_BUSY; a corrupt file is replaced,
never "repaired" in place); Airflow's scheduler (a metadata-database hiccup is retried, the
scheduler does not exit); curl/wget (a write error ends the transfer with a clear message and
no partial file left under the final name).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.history import runs
from helpers.jobs import write_jobs
from helpers.process import cli, DaemonProcess, LimitedDaemon, wait_for

pytestmark = pytest.mark.slow

_HOLD_LOCK = r"""
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
"""


def test_database_locked_for_3_seconds_loses_no_attempt(home, target):
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: len(runs(home)) >= 2, 10, "first runs")
        holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(home / "crawlsched.db"), "3"],
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "locked"
        locked_at = time.time()
        assert holder.wait(20) == 0
        wait_for(lambda: [r for r in runs(home) if (r["started_at"] or 0) > locked_at + 3.5], 15, "runs after the lock")
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0
    got = runs(home)
    assert not [r for r in got if r["status"] == "running"]  # every attempt was closed
    attempts = [r for r in got if r["attempt"] > 0]
    assert all(r["status"] == "success" for r in attempts)
    assert target.hits["/ok"] == len(attempts)  # one request per recorded attempt: none lost, none twice
    # Every 1 s fire between the first and the last is accounted for: run, skipped, or counted as missed.
    fires = sorted({r["scheduled_for"] for r in got if r["status"] != "missed"})
    missed = sum(r["missed_count"] or 0 for r in got if r["status"] == "missed")
    assert len(fires) + missed == round(fires[-1] - fires[0]) + 1
    assert "Traceback" not in d.output()


def test_a_corrupted_database_is_moved_aside_and_the_daemon_starts_fresh(home, target):
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    (home / "crawlsched.db").write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: len(runs(home)) >= 2, 20, "runs in the fresh database")
    finally:
        assert d.stop() == 0
    aside = list(home.glob("crawlsched.db.corrupt-*"))
    assert len(aside) == 1
    assert "ERROR" in d.output() and "corrupt" in d.output() and aside[0].name in d.output()


def test_a_database_corrupted_while_running_is_replaced_and_firing_goes_on(home, target):
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: len(runs(home)) >= 2, 10, "first runs")
        for suffix in ("", "-wal", "-shm"):
            path = Path(str(home / "crawlsched.db") + suffix)
            if path.exists():
                with open(path, "r+b") as fh:  # scribble over it in place, as a bad disk would
                    fh.write(os.urandom(max(4096, path.stat().st_size)))
        time.sleep(3)
        assert d.proc.poll() is None, d.output()
        wait_for(lambda: list(home.glob("crawlsched.db.corrupt-*")), 30, "the corrupt file moved aside", d.output)
        wait_for(lambda: len(runs(home)) >= 2, 20, "runs in the fresh database", d.output)
    finally:
        d.stop()


def _scribble_over_the_database(home: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(home / "crawlsched.db") + suffix)
        if path.exists():
            with open(path, "r+b") as fh:  # in place, as a bad disk would
                fh.write(os.urandom(max(4096, path.stat().st_size)))


def test_an_attempt_running_while_the_database_is_replaced_records_its_own_row(home, target):
    # The slow attempt's row is number 1 or 2 of the old file; in the fresh one those numbers
    # belong to the 1 s job's attempts by the time it ends. Its outcome goes to its own row.
    write_jobs(home, f'[[jobs]]\nid = "slow"\nname = "slow"\nevery = "1h"\nurl = "{target.url("/slow/4")}"\n\n'
                     f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: runs(home, "slow", status="running"), 10, "the slow attempt running")
        _scribble_over_the_database(home)
        wait_for(lambda: list(home.glob("crawlsched.db.corrupt-*")), 10, "the corrupt file moved aside")
        # The daemon row is back at once (not at the next heartbeat, which only updated a row
        # that no longer existed): status, stop and run-now see the daemon that is up.
        wait_for(lambda: cli(home, "status").returncode == 0, 10, "status to say the daemon is up")
        done = wait_for(lambda: runs(home, "slow", settled=True), 15, "the slow attempt's row")
    finally:
        assert d.stop() == 0
    assert [(r["attempt"], r["status"]) for r in done] == [(1, "success")]
    assert "/slow/4" in done[0]["message"]
    ticks = runs(home, "tick")
    assert ticks and not [r for r in ticks if "/slow/" in (r["message"] or "")], ticks
    assert all(r["status"] in ("success", "running") for r in ticks), [(r["status"], r["message"]) for r in ticks]
    con = sqlite3.connect(home / "crawlsched.db")
    try:  # the loop wrote back what it knows: a restart still catches these jobs up
        seen = {r[0] for r in con.execute("SELECT job_id FROM jobs_seen WHERE daemon_seen IS NOT NULL")}
    finally:
        con.close()
    assert seen == {"slow", "tick"}


# --- a full disk ------------------------------------------------------------------------------

def _limit_file_size(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def _part_files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*.part")]


def test_a_body_larger_than_the_disk_allows_fails_clearly_and_the_daemon_stays_up(home, target):
    write_jobs(home, f'[[jobs]]\nid = "big"\nname = "big"\nevery = "1h"\nurl = "{target.url("/big/3000000")}"\n'
                     f'max_retries = 0\n\n[[jobs]]\nid = "small"\nname = "small"\nevery = "2s"\nurl = "{target.url("/ok")}"\n')
    d = LimitedDaemon(home, preexec=_limit_file_size(2 * 1024 * 1024)).start()
    try:
        row = wait_for(lambda: [r for r in runs(home, "big") if r["status"] != "running"], 15, "the big attempt")
        n = len(runs(home, "small"))
        wait_for(lambda: len(runs(home, "small")) >= n + 2, 10, "other jobs to go on")
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0
    assert row[0]["status"] == "failed"
    assert "disk full" in row[0]["message"], row[0]["message"]
    assert _part_files(home) == []
    assert not [p for p in (home / "data" / "big").rglob("*") if p.is_file()]


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_under_the_database_keeps_the_daemon_up(small_tmpfs, target):
    home = small_tmpfs
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: len(runs(home)) >= 2, 10, "first runs")
        filler = home / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk to the last byte
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        time.sleep(4)
        assert d.proc.poll() is None, d.output()[-3000:]
        filler.unlink()  # space again: the daemon records runs again
        n = len(runs(home))
        wait_for(lambda: len(runs(home)) >= n + 2, 15, "runs after space came back")
        time.sleep(1)
        # An attempt whose end could not be written while the disk was full is not left "running".
        stuck = [r for r in runs(home) if r["status"] == "running" and time.time() - r["started_at"] > 2]
        assert stuck == [], d.output()[-3000:]
    finally:
        code = d.stop()
        shutil.rmtree(home / "data", ignore_errors=True)
    assert code == 0, d.output()[-3000:]
    assert not [r for r in runs(home) if r["status"] == "running"]
    assert _part_files(home) == []


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:  # to the last byte
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_an_attempt_that_ends_while_the_disk_is_full_is_recorded_when_space_is_back(small_tmpfs, tmp_path, target):
    home = small_tmpfs
    write_jobs(home, '[[jobs]]\nid = "slow"\nname = "slow"\nevery = "1h"\ncommand = "sleep 2"\n'
                     f'max_retries = 0\n\n[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\ncommand = "true"\n')
    d = DaemonProcess(home)
    d.stderr_path = tmp_path / "daemon.stderr"  # not on the full disk
    d.start()
    try:
        wait_for(lambda: runs(home, "slow", status="running"), 10, "the slow attempt running")
        _fill(home / "filler")
        time.sleep(4)  # it ended, and the 1 s job fired 4 times, all while nothing could be written
        assert d.proc.poll() is None, d.output()[-3000:]
        (home / "filler").unlink()
        done = wait_for(lambda: runs(home, "slow", settled=True), 5, "the slow outcome saved")
        assert [(r["attempt"], r["status"]) for r in done] == [(1, "success")]
        time.sleep(1.5)
        stuck = [r for r in runs(home) if r["status"] == "running" and time.time() - r["started_at"] > 2]
        assert stuck == []
        # The job is not "running in another process" for `run`.
        assert cli(home, "run", "slow").returncode == 0
    finally:
        code = d.stop()
        shutil.rmtree(home / "data", ignore_errors=True)
    assert code == 0, d.output()[-3000:]
    out = d.output()
    trouble = [line for line in out.splitlines() if "state database" in line and "ERROR" in line]
    assert len(trouble) == 1, trouble  # once for the episode, not once per attempt
    assert len([line for line in out.splitlines() if "takes writes again" in line]) == 1  # and once when it ends
    assert "inside crawlsched" not in out, out[-3000:]


def _chattr(flag: str, paths: list[Path]) -> bool:
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    return done.returncode == 0


def test_a_database_made_immutable_under_the_daemon_is_logged_and_the_daemon_stays_up(home, target):
    write_jobs(home, f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\nurl = "{target.url("/ok")}"\n')
    d = DaemonProcess(home).start()
    files = [Path(str(home / "crawlsched.db") + s) for s in ("", "-wal", "-shm")]
    try:
        wait_for(lambda: len(runs(home)) >= 2, 10, "first runs")
        if not _chattr("+i", [f for f in files if f.exists()]):
            pytest.skip("chattr +i is not allowed here (needs CAP_LINUX_IMMUTABLE and ext4/tmpfs)")
        try:
            os.sync()  # clean pages of the mapped -shm: the next write to one faults
            time.sleep(4)
            assert d.proc.poll() is None, f"the daemon died (exit {d.proc.returncode}): {d.output()[-2000:]}"
            trouble = [line for line in d.output().splitlines() if "ERROR" in line and "read-only" in line]
            assert len(trouble) == 1, d.output()[-3000:]
        finally:
            _chattr("-i", [f for f in files if f.exists()])
        n = len(runs(home))
        try:
            wait_for(lambda: len(runs(home)) >= n + 2, 10, "runs recorded again")
        except AssertionError:
            raise AssertionError(d.output()[-3000:]) from None
        time.sleep(1.5)
        stuck = [r for r in runs(home) if r["status"] == "running" and time.time() - r["started_at"] > 2]
        assert stuck == []
    finally:
        _chattr("-i", [f for f in files if f.exists()])
        code = d.stop()
    assert code == 0, d.output()[-3000:]
