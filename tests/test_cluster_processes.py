"""Two real daemons (subprocesses, real signals) with their own homes on one PostgreSQL state.

One leads and fires, the other stands by; each (job, scheduled time, attempt) happens
once; a SIGKILLed leader is replaced and the next due fire handled within 15 s; a
leader frozen past its lease (SIGSTOP) that wakes writes nothing over what the new
leader did, and steps down. The same logic in-process, with a fake clock:
tests/test_cluster_daemon.py.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers.jobs import write_jobs
from helpers.process import DaemonProcess, wait_for

pytestmark = pytest.mark.slow

JOBS = "".join(f'[[jobs]]\nid = "j{n}"\nname = "j{n}"\nevery = "2s"\ncommand = "true"\n\n' for n in range(3))
# A job a day: never about to fire (a fire is handed out, its row written, a moment before its instant)
JOBS += '[[jobs]]\nid = "daily"\nname = "daily"\nevery = "1d"\ncommand = "true"\n\n'


def _runs(dsn: str):
    from crawlsched.state.postgres import PostgresStore

    store = PostgresStore(dsn).open()
    try:
        return store.runs(limit=100_000)
    finally:
        store.close()


def _daemon(root: Path, name: str, dsn: str) -> DaemonProcess:
    home = root / name
    write_jobs(home, JOBS)
    return DaemonProcess(home, env={"CRAWLSCHED_STATE": dsn})


def _assert_each_fire_once(dsn: str) -> list:
    rows = _runs(dsn)
    attempts = Counter((r.job_id, r.scheduled_for, r.attempt) for r in rows if r.attempt > 0)
    assert [k for k, n in attempts.items() if n > 1] == []
    fired = {(r.job_id, r.scheduled_for) for r in rows if r.attempt > 0}
    for r in rows:  # a fire that did not run is never also a fire that ran
        if r.attempt == 0:
            assert (r.job_id, r.scheduled_for) not in fired, r
            if r.first_missed is not None:
                assert not [t for j, t in fired if j == r.job_id and r.first_missed <= t <= r.last_missed], r
    return rows


@pytest.fixture
def pair(tmp_path, pg_dsn):
    a = _daemon(tmp_path, "a", pg_dsn).start()
    b = _daemon(tmp_path, "b", pg_dsn).start()
    yield a, b
    for d in (a, b):
        if d.proc.poll() is None:
            try:
                d.proc.send_signal(signal.SIGCONT)
                d.stop(timeout=40)
            except Exception:
                d.kill()


def _by(rows, pid):
    return [r for r in rows if r.attempt > 0 and r.owner_pid == pid]


def test_only_the_leader_fires_and_each_job_time_happens_once(pair, pg_dsn):
    a, b = pair
    time.sleep(7)
    rows = _assert_each_fire_once(pg_dsn)
    assert len(_by(rows, a.proc.pid)) >= 6
    assert _by(rows, b.proc.pid) == []
    assert "standing by" in b.output() and "AUTO CRAWL STARTED" not in b.output()


def test_a_killed_leader_is_replaced_and_the_next_fire_handled_within_15_s(pair, pg_dsn):
    a, b = pair
    time.sleep(3)
    a.kill()
    killed = time.time()
    first = wait_for(lambda: sorted(r.started_at for r in _by(_runs(pg_dsn), b.proc.pid)), 25, "a fire by the new leader")
    failover = first[0] - killed
    print(f"failover (SIGKILL of the leader -> next fire handled): {failover:.1f} s")
    assert failover <= 15, failover
    time.sleep(3)
    _assert_each_fire_once(pg_dsn)


def test_a_leader_frozen_past_its_lease_writes_nothing_over_the_new_leader_and_steps_down(pair, pg_dsn):
    a, b = pair
    time.sleep(3)
    a.signal(signal.SIGSTOP)
    time.sleep(12)
    assert _by(_runs(pg_dsn), b.proc.pid), "the standby took over while the leader was frozen"
    a.signal(signal.SIGCONT)
    woke = time.time()
    wait_for(lambda: "lost the leader lease" in a.output(), 10, "the old leader stepping down")
    time.sleep(4)
    rows = _assert_each_fire_once(pg_dsn)
    late = [r for r in _by(rows, a.proc.pid) if r.started_at > woke]
    assert late == [], late
    assert "AUTO CRAWL STARTED" in b.output()


def test_status_and_stop_on_the_standbys_home_find_the_standby(pair, pg_dsn):
    from helpers.process import cli

    a, b = pair
    result = cli(b.home, "status", "--json", env={"CRAWLSCHED_STATE": pg_dsn})
    import json

    data = json.loads(result.stdout)
    assert result.returncode == 0 and data["running"] is True and data["pid"] == b.proc.pid
    assert sorted(d["role"] for d in data["daemons"]) == ["leader", "standby"]
    stopped = cli(b.home, "stop", env={"CRAWLSCHED_STATE": pg_dsn})
    assert stopped.returncode == 0, stopped.stderr
    assert b.proc.wait(timeout=40) == 0
    assert a.proc.poll() is None


def test_a_home_with_no_daemon_sees_the_leader_in_status_and_hands_it_run_now(pair, tmp_path, pg_dsn):
    """SPEC §10: every command reads the shared state from any home; run-now requests from any
    host's CLI are fired by the leader. This home runs no daemon of its own."""
    import json

    from helpers.process import cli

    a, b = pair
    elsewhere = tmp_path / "c"
    write_jobs(elsewhere, JOBS)
    env = {"CRAWLSCHED_STATE": pg_dsn}
    result = cli(elsewhere, "status", "--json", env=env)
    data = json.loads(result.stdout)
    [leader] = [d for d in data["daemons"] if d["role"] == "leader"]
    assert result.returncode == 0 and data["running"] is True
    assert (data["pid"], data["host"], data["started_at"]) == (leader["pid"], leader["host"], leader["started_at"])
    text = cli(elsewhere, "status", env=env).stdout
    assert f"daemon: running (pid {leader['pid']}" in text and "None" not in text
    asked = time.time()
    now = cli(elsewhere, "run-now", "daily", env=env)
    assert now.returncode == 0, now.stderr
    manual = wait_for(lambda: [r for r in _runs(pg_dsn) if r.job_id == "daily" and r.trigger == "manual"], 20,
                      "the leader firing the run-now", context=lambda: f"a:\n{a.output()}\nb:\n{b.output()}")
    assert [r.owner_pid for r in manual] == [leader["pid"]] and manual[0].started_at >= asked - 1


def test_a_stopping_leader_hands_over_at_once_while_its_attempts_finish(tmp_path, pg_dsn):
    jobs = '[[jobs]]\nid = "slow"\nname = "slow"\nevery = "1h"\ncommand = "sleep 15"\n\n' + JOBS
    homes = []
    for name in ("a", "b"):
        write_jobs(tmp_path / name, jobs)
        homes.append(DaemonProcess(tmp_path / name, "--grace", "30", env={"CRAWLSCHED_STATE": pg_dsn}).start())
    a, b = homes
    try:
        wait_for(lambda: [r for r in _by(_runs(pg_dsn), a.proc.pid) if r.job_id == "slow" and r.status == "running"],
                 20, "a running `sleep 15`")
        a.signal(signal.SIGTERM)
        stopped = time.time()
        first = wait_for(lambda: sorted(r.started_at for r in _by(_runs(pg_dsn), b.proc.pid)), 10, "a fire by b",
                         context=lambda: f"a:\n{a.output()}\nb:\n{b.output()}")
        assert first[0] - stopped < 4, first[0] - stopped  # not after a's grace period, nor its lease
        assert a.proc.wait(timeout=30) == 0
        slow = [r for r in _runs(pg_dsn) if r.job_id == "slow" and r.attempt > 0]
        assert [(r.attempt, r.status, r.owner_pid) for r in slow] == [(1, "success", a.proc.pid)]
        _assert_each_fire_once(pg_dsn)
    finally:
        for d in homes:
            if d.proc.poll() is None:
                d.stop(timeout=40)


def test_when_the_database_comes_back_each_fire_stays_once_and_the_gap_is_downtime(pair, pg_cluster, pg_dsn):
    a, b = pair
    time.sleep(3)
    pg_cluster.stop()
    lost = time.time()
    try:
        time.sleep(15)
    finally:
        pg_cluster.start()
    back = time.time()
    wait_for(lambda: [r for r in _runs(pg_dsn) if r.attempt > 0 and (r.started_at or 0) > back], 30, "fires again")
    time.sleep(3)
    assert a.proc.poll() is None and b.proc.poll() is None
    rows = _assert_each_fire_once(pg_dsn)
    during = [r for r in rows if r.attempt > 0 and lost + 1 < (r.started_at or 0) < back - 1]
    assert during == [], during  # nothing ran unrecorded while the state was gone
    missed = [r for r in rows if r.status == "missed"]
    assert missed, "the fires due while the database was gone are recorded missed"
