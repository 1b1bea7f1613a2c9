"""Processes are known by identity (boot id + start time), not by a pid that gets reused.

- A `running` row whose pid now belongs to a stranger is stale, not alive.
- A command left running by a daemon killed outright is stopped by the next daemon,
  and only when its group is provably that command's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crawlsched import procs
from crawlsched.crawl.command import run_command
from crawlsched.state import State
from helpers.history import runs
from helpers.jobs import write_jobs
from helpers.process import DaemonProcess, wait_for

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="identity needs /proc")


@pytest.fixture
def stranger():
    """A live process that is not ours to judge by: its pid will stand in for a reused one."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@linux_only
def test_an_identity_is_stable_and_tells_processes_apart(stranger):
    me = procs.identity(os.getpid())
    assert me and me == procs.identity(os.getpid())
    assert procs.identity(stranger.pid) not in (None, me)
    assert procs.pid_alive(os.getpid(), me)
    assert not procs.pid_alive(os.getpid(), procs.identity(stranger.pid)), "same pid, another process"
    boot, _, ticks = me.partition("/")
    assert not procs.pid_alive(os.getpid(), f"another-boot/{ticks}"), "same pid and ticks, another boot"
    assert procs.pid_alive(os.getpid()), "without an identity the pid is all there is"


def test_a_dead_pid_and_a_zombie_are_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: procs._stat_fields(child.pid) is None or procs._stat_fields(child.pid)[0] == "Z", 10, "a zombie")
    assert not procs.pid_alive(child.pid), "a zombie is dead"
    child.wait()
    assert not procs.pid_alive(child.pid)
    assert not procs.pid_alive(None) and not procs.pid_alive(0)


@linux_only
def test_a_running_row_whose_pid_was_reused_is_stale_not_alive(tmp_path, stranger):
    state = State(tmp_path / "crawlsched.db").open()
    try:
        me = procs.identity(os.getpid())
        # written by a process that is gone; its pid now belongs to the stranger
        state.start_attempt("reused", 100.0, 1, 1, trigger="schedule", started_at=100.0, pid=stranger.pid,
                            ident=me.split("/")[0] + "/1")
        # written by the stranger itself: really alive
        state.start_attempt("alive", 100.0, 1, 1, trigger="schedule", started_at=100.0, pid=stranger.pid,
                            ident=procs.identity(stranger.pid))
        # written before identities were stored: judged by the pid, as before
        state.start_attempt("legacy", 100.0, 1, 1, trigger="schedule", started_at=100.0, pid=stranger.pid)
        states = state.job_states(["reused", "alive", "legacy"])
        assert (states["reused"].running, states["alive"].running, states["legacy"].running) == (False, True, True)
        assert state.running_elsewhere("reused", os.getpid()) is None
        assert state.running_elsewhere("alive", os.getpid()) is not None
        assert [r.job_id for r in state.stale_running(os.getpid())] == ["reused"]
    finally:
        state.close()


def test_run_command_tells_the_group_as_soon_as_the_child_exists(tmp_path):
    seen: list[int] = []
    out = run_command("sh -c 'echo $$'", tmp_path / "log", env=dict(os.environ), on_spawn=seen.append)
    assert out.ok
    assert seen == [int((tmp_path / "log").read_text().split()[0])], "the pgid is the child's pid"
    out = run_command("true", tmp_path / "log2", env=dict(os.environ), on_spawn=lambda pgid: 1 / 0)
    assert out.ok, "a failing note does not fail the command"


@linux_only
def test_an_orphan_group_is_stopped_only_when_it_is_provably_the_command(tmp_path):
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ident = procs.identity(proc.pid)
        boot = ident.split("/")[0]
        assert not procs.stop_orphan_group(proc.pid, f"{boot}/1", kill_after=1), "another process has the number"
        assert not procs.stop_orphan_group(proc.pid, "another-boot/" + ident.split("/")[1], kill_after=1)
        assert not procs.stop_orphan_group(proc.pid, None, kill_after=1), "no identity, no signal"
        assert proc.poll() is None
        assert procs.stop_orphan_group(proc.pid, ident, kill_after=2)
        assert proc.wait(timeout=5) == -signal.SIGTERM
        assert not procs.stop_orphan_group(proc.pid, ident, kill_after=1), "nothing left to stop"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@linux_only
@pytest.mark.slow
def test_a_command_left_running_by_a_killed_daemon_is_stopped_by_the_next(tmp_path):
    home = tmp_path
    write_jobs(home, '[[jobs]]\nid = "long"\nname = "long"\nevery = "1h"\ncommand = "sleep 120"\nmax_retries = 0\n')
    first = DaemonProcess(home).start()
    try:
        # Running, past its instant: a command held ahead of it (crawlsched.local_executor.LEAD) is at its gate
        row = wait_for(lambda: [r for r in runs(home) if r["child_pgid"] and r["started_at"] < time.time() - 0.3],
                       20, "the command's group in its row, the command let go")[0]
    finally:
        first.kill()  # SIGKILL to the daemon's own group; the command has its own session
    pgid = row["child_pgid"]
    assert row["owner_ident"] and row["child_ident"] == procs.identity(pgid)
    assert procs.group_alive(pgid), "SIGKILL of the daemon left the command running"
    second = DaemonProcess(home).start()
    try:
        wait_for(lambda: not procs.group_alive(pgid), 15, "the orphan group stopped")
        assert f"left its command running (process group {pgid}); stopped it" in second.output()
        [got] = [r for r in runs(home) if r["id"] == row["id"]]
        assert got["status"] == "interrupted"
    finally:
        assert second.stop() == 0


def test_a_daemon_killed_while_its_commands_wait_for_their_instant_leaves_none_of_them_to_run(tmp_path):
    # Handed out 2 s ahead (crawlsched.local_executor.LEAD): rows written, commands spawned at a
    # shared gate. The daemon is the pipe's only writer: killed, its gates read end-of-file.
    home = tmp_path
    # Each run appends a line: the first fires (at the anchor, at once) may have run before the kill.
    write_jobs(home, "".join(f'[[jobs]]\nid = "j{n}"\nname = "j{n}"\nevery = "6s"\n'
                             f"command = \"sh -c 'echo ran >> {home}/ran{n}'\"\n\n" for n in range(3)))

    def lines() -> int:
        return sum(len(p.read_text().splitlines()) for p in home.glob("ran*"))

    first = DaemonProcess(home).start()
    try:
        held = wait_for(lambda: [r for r in runs(home) if r["status"] == "running" and r["child_pgid"]
                                 and r["started_at"] > time.time() + 0.3], 20, "rows written ahead, commands held")
    finally:
        first.kill()
    ran_before = lines()
    before = {r["scheduled_for"] for r in held}
    time.sleep(max(before) - time.time() + 1.0)  # past their instant
    assert lines() == ran_before, "a command held at its gate ran after its daemon was killed"
    assert not [r for r in held if procs.group_alive(r["child_pgid"])]
    second = DaemonProcess(home).start()
    try:
        settled = wait_for(lambda: [r for r in runs(home) if r["scheduled_for"] in before and r["attempt"] == 1
                                    and r["status"] == "interrupted"], 15, "the held attempts settled")
        assert settled
    finally:
        assert second.stop() == 0
