"""A ``crawlsched worker`` that loses its PostgreSQL state (SPEC §10 "State unreachable").

A real throwaway PostgreSQL server (the session's ``pg_cluster``, stopped and started here), the
real daemon and a real ``crawlsched worker`` as subprocesses. A worker that cannot reach the
database keeps trying and does not exit, logs it at ERROR once at most (no traceback, no password), takes
no job meanwhile, and works again once the database is back: an attempt it was running has its
outcome written then (its lease is still its own), queued attempts run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers.jobs import write_jobs
from helpers.process import CRAWLSCHED, DaemonProcess, wait_for

pytestmark = pytest.mark.slow

SECRET = "s3cret-pw"


def _with_password(dsn: str) -> str:
    return dsn.replace("crawlsched@", f"crawlsched:{SECRET}@")  # the test server trusts any password


@pytest.fixture
def server(pg_cluster):
    """The session's server, started again after a test that stopped it."""
    yield pg_cluster
    if pg_cluster.pid() is None:
        pg_cluster.start()


def rows(dsn: str) -> list[dict]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, connect_timeout=5, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM runs ORDER BY id").fetchall()


def errors_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if " - ERROR - " in line]


class Worker:
    def __init__(self, home: Path, dsn: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / "worker.stderr"
        self.err = open(self.path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLSCHED_")}
        env["CRAWLSCHED_STATE"] = dsn
        self.proc = subprocess.Popen(CRAWLSCHED + ["worker", "--concurrency", "2", "--home", str(home)], env=env,
                                     stdout=self.err, stderr=self.err, start_new_session=True, cwd=home)

    def output(self) -> str:
        return self.path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=40)
        finally:
            self.err.close()


@pytest.fixture
def worker(tmp_path, pg_dsn):
    started: list[Worker] = []

    def start() -> Worker:
        w = Worker(tmp_path / "worker-home", _with_password(pg_dsn))
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def _daemon(home: Path, dsn: str, jobs: str) -> DaemonProcess:
    write_jobs(home, jobs, defaults='timezone = "UTC"\nexecutor = "workers"\n')
    return DaemonProcess(home, env={"CRAWLSCHED_STATE": _with_password(dsn)})


def test_a_worker_that_loses_postgresql_keeps_trying_and_writes_its_running_attempt_once_it_is_back(
        tmp_path, server, pg_dsn, worker):
    w = worker()
    wait_for(lambda: "worker ready" in w.output() or w.proc.poll() is not None, 20, "worker ready")
    d = _daemon(tmp_path / "home", pg_dsn,
                '[[jobs]]\nid = "slow"\nname = "slow"\nevery = "1h"\ncommand = "sh -c \'sleep 2; echo slow-done\'"\n'
                '[[jobs]]\nid = "tick"\nname = "tick"\nevery = "2s"\ncommand = "echo tick"\n').start()
    try:
        wait_for(lambda: any(r["job_id"] == "slow" and r["status"] == "running" and r["owner_pid"] == w.proc.pid
                             for r in rows(pg_dsn)), 20, "slow running in the worker")
        server.stop()
        down_at = time.time()
        time.sleep(3)  # the command ends meanwhile; well within the worker's lease: the attempt stays its own
        assert w.proc.poll() is None, w.output()
        server.start()
        up_at = time.time()
        done = wait_for(lambda: [r for r in rows(pg_dsn) if r["job_id"] == "slow" and r["status"] != "running"], 30,
                        "slow's outcome written")
        assert [(r["status"], r["message"]) for r in done] == [("success", "slow-done")], done
        ticked = wait_for(lambda: [r for r in rows(pg_dsn) if r["job_id"] == "tick" and r["status"] == "success"
                                   and r["scheduled_for"] > up_at and r["owner_pid"] == w.proc.pid], 30,
                          "a queued attempt run once the database is back")
        back_after = ticked[0]["finished_at"] - up_at
        assert w.proc.poll() is None, w.output()
    finally:
        d.stop()
        code = w.stop()
        print(w.output())
    out = w.output()
    assert code == 0, out
    # Once at most: an outage shorter than the pool's wait for a connection (5 s) can pass unseen,
    # every statement of the worker's then waiting for the server instead of failing.
    assert len(errors_in(out)) <= 1, out
    assert "Traceback" not in out and SECRET not in out, out
    got = rows(pg_dsn)
    keys = Counter((r["job_id"], r["scheduled_for"], r["attempt"]) for r in got if r["attempt"] > 0)
    assert max(keys.values()) == 1, "no attempt twice"
    assert not [r for r in got if r["attempt"] > 0 and r["owner_pid"] == w.proc.pid
                and down_at + 1 < r["started_at"] < up_at], "no job taken while the database was down"
    print(f"database back -> worker ran a queued attempt: {back_after:.2f} s")


def test_a_worker_started_while_postgresql_is_down_waits_for_it_and_then_works(tmp_path, server, pg_dsn, worker):
    d = _daemon(tmp_path / "home", pg_dsn, '[[jobs]]\nid = "tick"\nname = "tick"\nevery = "2s"\ncommand = "echo tick"\n')
    d.start()
    try:
        wait_for(lambda: any(r["status"] == "running" for r in rows(pg_dsn)), 20, "an attempt queued")
        server.stop()
        w = worker()
        time.sleep(9)  # its first try waits for the connection's 5 s timeout
        assert w.proc.poll() is None, w.output()
        assert len(errors_in(w.output())) == 1, w.output()
        server.start()
        up_at = time.monotonic()
        wait_for(lambda: any(r["status"] == "success" and r["owner_pid"] == w.proc.pid for r in rows(pg_dsn)), 30,
                 "an attempt run by the worker")
        print(f"database back -> worker ran its first attempt: {time.monotonic() - up_at:.2f} s")
    finally:
        d.stop()
        code = w.stop()
    out = w.output()
    assert code == 0, out
    assert len(errors_in(out)) == 1, out
    assert "Traceback" not in out and SECRET not in out, out


def test_a_job_file_edit_during_a_postgresql_outage_is_one_line_and_applied_once_it_is_back(tmp_path, server,
                                                                                             pg_dsn):
    home = tmp_path / "home"
    tick = '[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\ncommand = "echo tick"\n'
    write_jobs(home, tick)
    d = DaemonProcess(home, env={"CRAWLSCHED_STATE": _with_password(pg_dsn)}).start()
    try:
        wait_for(lambda: any(r["status"] == "success" for r in rows(pg_dsn)), 20, "a fire")
        server.stop()
        time.sleep(3)
        write_jobs(home, tick + '[[jobs]]\nid = "tock"\nname = "tock"\nevery = "1s"\ncommand = "echo tock"\n')
        time.sleep(8)  # the daemon's poll sees the edit while the database is out of reach
        assert d.proc.poll() is None, d.output()
        server.start()
        wait_for(lambda: any(r["job_id"] == "tock" and r["status"] == "success" for r in rows(pg_dsn)), 30,
                 "the edited file's new job running once the database is back")
    finally:
        assert d.stop() == 0
        print(d.output())
    out = d.output()
    assert "Traceback" not in out and SECRET not in out, out
    assert len(errors_in(out)) == 1, out
