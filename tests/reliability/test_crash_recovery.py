"""Scenario 1: the daemon SIGKILLed at each point of an attempt's life; after a restart every
attempt is accounted for once, the counter continues, no body is half-written, nothing runs twice.

Anchors: Airflow's zombie-task handling (a task whose heartbeat stopped is failed and retried,
never silently re-run twice); systemd's ``Persistent=true`` (a timer that elapsed while the
machine was down runs once at the next start).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawlsched.crawl.bodies import body_name
from crawlsched.crawl.runs import run_stamp
from crawlsched.daemon import Daemon, InlineExecutor
from crawlsched.state import State
from helpers.clock import FakeClock
from helpers.history import retries, rows, runs
from helpers.jobs import write_jobs
from helpers.loop import make_daemon, quiet_logger, run_until
from helpers.process import DaemonProcess, pid_gone, wait_for

UTC = timezone.utc
DEAD_PID = 2**22 + 4242  # above Linux's pid_max: never alive


class Killed(BaseException):
    """What SIGKILL does to the loop: it stops, right here, with nothing cleaned up."""


class DyingExecutor(InlineExecutor):
    """Runs attempts inline until ``die_on`` submissions; that one kills the 'process' before the row is written."""

    def __init__(self, die_on: int = 1) -> None:
        super().__init__()
        self.count = 0
        self.die_on = die_on

    def submit(self, spec):
        self.count += 1
        if self.count == self.die_on:
            raise Killed()
        super().submit(spec)


class QueueingExecutor(InlineExecutor):
    """A pool whose workers are all busy: submissions wait in its queue, never start."""

    def __init__(self) -> None:
        super().__init__()
        self.queued = []

    def submit(self, spec):
        self.queued.append(spec)

    def unstarted(self):
        return [spec.key for spec in self.queued]


def _daemon(home: Path, clock: FakeClock, executor) -> Daemon:
    return make_daemon(home, clock, executor=executor, log=quiet_logger())


def _die(d: Daemon) -> None:
    """What the kernel does at SIGKILL: file descriptors (the home lock, SQLite) are closed."""
    d.release_lock()
    d.state.close()


def test_killed_before_the_attempt_row_is_written_runs_the_fire_once_after_restart(home, target):
    write_jobs(home, f'[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\nurl = "{target.url("/ok")}"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d1 = _daemon(home, clock, DyingExecutor(die_on=1))
    d1.start()
    with pytest.raises(Killed):
        run_until(d1, clock, datetime(2025, 11, 8, 9, 5, 30, tzinfo=UTC))
    _die(d1)
    assert rows(home) == [] and target.hits["/ok"] == 0  # died at the fire instant: nothing written
    clock.advance(60)
    d2 = _daemon(home, clock, InlineExecutor())
    d2.start()
    run_until(d2, clock, datetime(2025, 11, 8, 9, 10, tzinfo=UTC))
    got = [(r[0], r[1], r[2], r[3], r[4]) for r in rows(home)]
    fire = datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()
    assert got == [("a", fire, 1, "success", "catch_up")]
    assert target.hits["/ok"] == 1


def test_killed_while_a_fire_waits_in_a_full_pool_the_fire_is_not_lost(home, target):
    write_jobs(home, f'[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\nurl = "{target.url("/ok")}"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d1 = _daemon(home, clock, QueueingExecutor())
    d1.start()
    run_until(d1, clock, datetime(2025, 11, 8, 9, 5, 1, tzinfo=UTC))
    assert d1.chains["a"].handed  # fired into the pool, waiting for a worker
    for _ in range(12):  # a minute of heartbeats while every worker is busy elsewhere
        clock.advance(5)
        d1.duties.heartbeat()
    _die(d1)
    clock.advance(60)
    d2 = _daemon(home, clock, InlineExecutor())
    d2.start()
    run_until(d2, clock, datetime(2025, 11, 8, 9, 10, tzinfo=UTC))
    fire = datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()
    # Accounted for: run once by catch-up, or at least recorded as missed.
    assert [r for r in rows(home) if r[1] == fire or (r[3] == "missed")], rows(home)


def _no_part_files(home: Path) -> list[Path]:
    return [p for p in (home / "data").rglob("*") if p.name.endswith(".part")] if (home / "data").exists() else []


@pytest.mark.slow
def test_killed_during_an_attempt_resumes_with_the_next_attempt_and_a_whole_body(home, target):
    # The first request sends half of a 200,000-byte body and hangs: the kill comes mid-stream.
    write_jobs(home, f'[[jobs]]\nid = "h"\nname = "h"\nevery = "1h"\nurl = "{target.url("/hang-then-ok/k")}"\n'
                     "max_retries = 2\nretry_delay = 1\ntimeout = 120\n")
    d1 = DaemonProcess(home).start()
    wait_for(lambda: _no_part_files(home), 15, "the body to be half-written")
    d1.kill()
    assert [(r["attempt"], r["status"]) for r in runs(home)] == [(1, "running")]
    d2 = DaemonProcess(home).start()
    try:
        wait_for(lambda: any(r["status"] == "success" for r in runs(home)), 20, "the next attempt")
    finally:
        assert d2.stop() == 0
    assert [(r["attempt"], r["status"]) for r in runs(home)] == [(1, "interrupted"), (2, "success")]
    assert target.hits["/hang-then-ok/k"] == 2  # one request per attempt: nothing ran twice
    bodies = [p for p in (home / "data" / "h").rglob("*") if p.is_file()]
    assert [p.stat().st_size for p in bodies] == [200000]  # the only file is the whole body
    assert _no_part_files(home) == []


@pytest.mark.slow
def test_killed_after_the_body_was_saved_but_before_the_result_records_success(home, target):
    # State left by a daemon killed between the body's rename (the commit point) and finish_attempt.
    url = target.url("/ok")
    write_jobs(home, f'[[jobs]]\nid = "s"\nname = "s"\ncron = "0 0 1 1 *"\nurl = "{url}"\nmax_retries = 2\n')
    sched = datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)  # its next fire is still ahead
    state = State(home / "crawlsched.db").open()
    state.mark_seen("s", sched.timestamp() - 60)
    state.start_attempt("s", sched.timestamp(), 1, 3, trigger="schedule", started_at=sched.timestamp(), pid=DEAD_PID)
    state.close()
    run_dir = home / "data" / "s" / run_stamp(sched)
    run_dir.mkdir(parents=True)
    (run_dir / body_name(0, url)).write_text("the whole body\n")
    d = DaemonProcess(home).start()
    try:
        got = wait_for(lambda: [r for r in runs(home) if r["status"] != "running"], 10, "recovery")
    finally:
        assert d.stop() == 0
    assert [(r["attempt"], r["status"]) for r in runs(home) if r["attempt"] > 0] == [(1, "success")]
    assert "bodies in place" in got[0]["message"]
    assert target.hits["/ok"] == 0  # not fetched again
    assert retries(home) == []


@pytest.mark.slow
def test_killed_after_a_partial_multi_url_attempt_fetches_only_the_missing_url(home, target):
    # Two URLs; only the first body made it before the kill: the attempt is interrupted, the retry fetches the second.
    urls = [target.url("/ok"), target.url("/slow/0")]
    write_jobs(home, f'[[jobs]]\nid = "m"\nname = "m"\ncron = "0 0 1 1 *"\nurl = {urls!r}\nmax_retries = 2\n'.replace("'", '"'))
    sched = datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)  # its next fire is still ahead
    state = State(home / "crawlsched.db").open()
    state.mark_seen("m", sched.timestamp() - 60)
    state.start_attempt("m", sched.timestamp(), 1, 3, trigger="schedule", started_at=sched.timestamp(), pid=DEAD_PID)
    state.close()
    run_dir = home / "data" / "m" / run_stamp(sched)
    run_dir.mkdir(parents=True)
    (run_dir / body_name(0, urls[0])).write_text("first\n")
    (run_dir / f".{body_name(1, urls[1])}.part").write_text("half of the seco")
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: any(r["status"] == "success" for r in runs(home)), 10, "the resumed chain")
    finally:
        assert d.stop() == 0
    assert [(r["attempt"], r["status"]) for r in runs(home) if r["attempt"] > 0] == [(1, "interrupted"), (2, "success")]
    assert target.hits == {"/slow/0": 1}
    assert (run_dir / body_name(1, urls[1])).read_text() == "slow ok\n"
    assert _no_part_files(home) == []


@pytest.mark.slow
def test_killed_between_spawning_a_command_and_saving_its_group_the_command_never_runs_beside_its_retry(home, tmp_path):
    # The test hook widens the window between the spawn and the row that names the group
    # to 3 s; SIGKILL lands inside it. The next daemon cannot stop a group it was never told.
    marker = tmp_path / "pids"
    write_jobs(home, '[[jobs]]\nid = "c"\nname = "c"\nevery = "1h"\nretry_delay = 1\n'
                     f'command = "sh -c \'echo $$ >> {marker}; exec sleep 30\'"\n')
    d1 = DaemonProcess(home, env={"CRAWLSCHED_FAULT_SPAWN_PAUSE": "3"}).start()
    wait_for(lambda: runs(home, "c", status="running"), 10, "the attempt row")
    time.sleep(0.5)  # spawned, its group not saved yet
    d1.proc.kill()  # the daemon alone, as the OOM killer would
    d1.proc.wait(10)
    d1.stderr.close()
    d2 = DaemonProcess(home).start()
    try:
        wait_for(lambda: runs(home, "c", attempt=2, status="running"), 15, "the retry running")
        wait_for(lambda: marker.exists() and marker.read_text().strip(), 5, "the retry's command")
        time.sleep(0.5)
        pids = [int(x) for x in marker.read_text().split()]
        try:
            alive = [p for p in pids if not pid_gone(p)]
            assert len(alive) == 1, f"commands of one job running side by side: {pids}, alive {alive}"
        finally:
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    finally:
        d2.stop()


@pytest.mark.slow
def test_killed_mid_body_with_no_attempt_left_leaves_no_part_file_after_restart(home, target):
    write_jobs(home, f'[[jobs]]\nid = "h"\nname = "h"\nevery = "1h"\nurl = "{target.url("/hang-then-ok/p1")}"\n'
                     'max_retries = 0\n')
    d1 = DaemonProcess(home).start()
    wait_for(lambda: list(home.rglob("*.part")), 10, "half a body on disk")
    d1.kill()
    d2 = DaemonProcess(home).start()
    try:
        row = wait_for(lambda: runs(home, "h", settled=True), 10, "the attempt settled")
    finally:
        assert d2.stop() == 0
    assert [(r["attempt"], r["status"]) for r in row] == [(1, "interrupted")]
    assert list(home.rglob("*.part")) == []  # the chain ended: nothing will finish that body


@pytest.mark.slow
def test_killed_while_a_fire_waits_for_a_worker_and_later_fires_are_skipped_the_fire_is_not_lost(home):
    # One worker, held by `slow`: quick's first fire waits in the pool; its next fires are
    # recorded skipped. After SIGKILL, the waiting fire must still get a row (it never ran).
    write_jobs(home, '[[jobs]]\nid = "slow"\nname = "slow"\nevery = "30s"\ncommand = "sleep 8"\n\n'
                     '[[jobs]]\nid = "quick"\nname = "quick"\nevery = "2s"\ncommand = "true"\ncatch_up = "none"\n',
               defaults='timezone = "UTC"\nmax_concurrent = 1\n')
    d1 = DaemonProcess(home).start()
    wait_for(lambda: len(runs(home, "quick", status="skipped")) >= 2, 10, "quick's fires skipped")
    d1.kill()
    d2 = DaemonProcess(home).start()
    try:
        time.sleep(1)
    finally:
        assert d2.stop() == 0
    quick = runs(home, "quick")
    skipped = [r["scheduled_for"] for r in quick if r["status"] == "skipped"]
    first = min(skipped) - 2
    covered = [r for r in quick if r["scheduled_for"] == first
               or (r["status"] == "missed" and r["first_missed"] <= first <= r["last_missed"])]
    assert covered, [(r["scheduled_for"], r["status"], r["first_missed"]) for r in quick]
    # and no instant is counted twice: a missed range holds no instant that has a row
    rowed = {r["scheduled_for"] for r in quick if r["status"] != "missed"}
    for r in quick:
        if r["status"] == "missed":
            assert not [t for t in rowed if r["first_missed"] <= t <= r["last_missed"]], quick


class BeginningExecutor(InlineExecutor):
    """Workers that begin each attempt (its row is written, as by a process now dead) and never end it."""

    def submit(self, spec):
        self.runner.state.start_attempt(spec.job_id, spec.scheduled_for, spec.attempt, spec.max_attempts,
                                        trigger=spec.trigger, started_at=spec.scheduled_for, pid=DEAD_PID)


def test_killed_while_catch_up_fires_wait_in_the_backlog_they_are_not_lost(home, target):
    # catch_up = "all": the first owed fire runs (here: waits for a worker), the others wait in
    # the backlog with no row. A heartbeat then a SIGKILL: the next start must still owe them.
    write_jobs(home, f'[[jobs]]\nid = "a"\nname = "a"\nevery = "10s"\nurl = "{target.url("/ok")}"\ncatch_up = "all"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d1 = _daemon(home, clock, InlineExecutor())
    d1.start()
    run_until(d1, clock, datetime(2025, 11, 8, 9, 0, 30, tzinfo=UTC))
    d1.shutdown()
    clock.advance(45)  # down: the fires at 09:00:40, :50, 09:01:00, :10 are owed
    d2 = _daemon(home, clock, BeginningExecutor())
    d2.start()
    assert d2.backlog.get("a")  # the later owed fires wait behind the first, which runs
    clock.advance(5)
    d2.duties.heartbeat()
    _die(d2)
    clock.advance(5)
    d3 = _daemon(home, clock, InlineExecutor())
    d3.start()
    run_until(d3, clock, datetime(2025, 11, 8, 9, 1, 40, tzinfo=UTC))
    fires = {r[1] for r in rows(home) if r[3] != "missed"}
    start = datetime(2025, 11, 8, 9, 0, tzinfo=UTC).timestamp()
    owed = {start + 10 * k for k in range(4, 8)}  # 09:00:40 .. 09:01:10
    assert owed <= fires, sorted(t - start for t in fires)
