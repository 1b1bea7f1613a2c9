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

from daemon_helpers import DaemonProcess, runs, wait_for, write_jobs
from rel_helpers import LimitedDaemon

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
        wait_for(lambda: list(home.glob("crawlsched.db.corrupt-*")), 10, "the corrupt file moved aside")
        wait_for(lambda: len(runs(home)) >= 2, 20, "runs in the fresh database")
    finally:
        d.stop()


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
        row = wait_for(lambda: [r for r in runs(home, "job_id = 'big'") if r["status"] != "running"], 15, "the big attempt")
        n = len(runs(home, "job_id = 'small'"))
        wait_for(lambda: len(runs(home, "job_id = 'small'")) >= n + 2, 10, "other jobs to go on")
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
