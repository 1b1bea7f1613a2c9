"""executor = "workers" end to end: a real PostgreSQL server, the real daemon and real
``crawlsched worker`` processes as subprocesses, a real HTTP target on 127.0.0.1, real signals.

Leases are the workers' real ones (10 s, renewed every 2 s; the daemon checks them every second),
so a dead worker's attempt is settled within about 10 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers.jobs import write_jobs
from helpers.process import CRAWLSCHED, DaemonProcess, cli, home_env, pid_gone, wait_for
from helpers.servers import Target

from crawlsched.state.queue import WORKER_TTL

pytestmark = pytest.mark.slow

SETTLE = WORKER_TTL + 5  # a dead worker's attempt is interrupted and its retry started within this


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()


class WorkerProcess:
    """``crawlsched worker`` as a child process in its own session, its stderr to a file."""

    def __init__(self, home: Path, dsn: str, concurrency: int = 1) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.stderr_path = home / f"worker-{time.monotonic_ns()}.stderr"
        self.err = open(self.stderr_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLSCHED_")}
        env.update(CRAWLSCHED_STATE=dsn, SECRET_WORD="s3cr3t-from-the-worker")
        self.proc = subprocess.Popen(CRAWLSCHED + ["worker", "--concurrency", str(concurrency), "--home", str(home)],
                                     env=env, stdout=self.err, stderr=self.err, start_new_session=True, cwd=home)
        wait_for(lambda: "worker ready" in self.output() or self.proc.poll() is not None, 20, "worker ready")
        assert self.proc.poll() is None, self.output()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.err.close()
        return code

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)  # the worker alone: a command it runs is in its own session
        self.proc.wait(timeout=10)
        self.err.close()


@pytest.fixture
def pg_state(pg_dsn):
    from crawlsched.state.postgres import PostgresStore

    store = PostgresStore(pg_dsn).open()
    yield store
    store.close()


@pytest.fixture
def workers(tmp_path, pg_dsn):
    started: list[WorkerProcess] = []

    def start(name: str = "w1", concurrency: int = 1) -> WorkerProcess:
        w = WorkerProcess(tmp_path / name, pg_dsn, concurrency)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            try:
                os.kill(w.proc.pid, signal.SIGCONT)
                w.stop(timeout=15)
            except Exception:
                w.proc.kill()


@pytest.fixture
def daemon(home, pg_dsn):
    started: list[DaemonProcess] = []

    def start(jobs: str, defaults: str = "") -> DaemonProcess:
        write_jobs(home, jobs, defaults=f'timezone = "UTC"\nexecutor = "workers"\n{defaults}')
        d = DaemonProcess(home, env={"CRAWLSCHED_STATE": pg_dsn}).start()
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.stop()


def rows(store, job: str, attempt: int | None = None):
    got = sorted(store.runs(job, limit=1000), key=lambda r: r.id)
    return [r for r in got if attempt is None or r.attempt == attempt]


def row(store, job: str, attempt: int, *, status: str | None = None, owner_pid: int | None = None):
    for r in rows(store, job, attempt):
        if (status is None or r.status == status) and (owner_pid is None or r.owner_pid == owner_pid):
            return r
    return None


def test_a_fire_runs_in_a_worker_and_its_row_says_host_and_path(home, pg_dsn, pg_state, daemon, workers):
    w = workers("w1")
    d = daemon('[[jobs]]\nid = "hello"\nname = "hello"\nevery = "1h"\n'
               'command = "sh -c \'echo ran-in-the-worker\'"\n')
    done = wait_for(lambda: row(pg_state, "hello", 1, status="success"), 20, "the attempt's success")
    assert done.owner_host == socket.gethostname() and done.owner_pid == w.pid
    assert done.run_home == str(w.home)
    log_path = Path(done.output)
    assert log_path.is_relative_to(w.home / "logs" / "runs" / "hello")
    assert "ran-in-the-worker" in log_path.read_text()
    assert not (home / "logs" / "runs" / "hello").exists()  # nothing under the daemon's home
    # `logs JOB` on the daemon's host finds the worker's log through the row (the path is reachable here)
    shown = cli(home, "logs", "hello", env={"CRAWLSCHED_STATE": pg_dsn})
    assert shown.returncode == 0, shown.stderr
    assert "ran-in-the-worker" in shown.stdout
    assert d.proc.poll() is None


def test_sigkill_a_worker_mid_crawl_interrupts_and_starts_the_retry_within_the_lease(pg_state, daemon, workers, target):
    first = workers("w1")
    daemon(f'[[jobs]]\nid = "slow"\nname = "slow"\nevery = "1h"\nurl = "{target.url("/slow/12")}"\n'
           'max_retries = 1\nretry_delay = 1\n')
    wait_for(lambda: row(pg_state, "slow", 1, status="running", owner_pid=first.pid), 20, "attempt 1 in worker 1")
    wait_for(lambda: any(path == "/slow/12" for _, path in target.hits), 10, "attempt 1's request")  # mid-crawl
    second = workers("w2")
    killed = time.monotonic()
    first.kill()
    retry = wait_for(lambda: row(pg_state, "slow", 2, status="running", owner_pid=second.pid), SETTLE + 5,
                     "attempt 2 started in worker 2")
    took = time.monotonic() - killed
    print(f"worker SIGKILL -> retry started in another worker: {took:.1f} s")  # a figure (pytest -s)
    assert took <= SETTLE, f"the retry started {took:.1f}s after the kill"
    interrupted = row(pg_state, "slow", 1)
    assert interrupted.status == "interrupted" and "lease lapsed" in interrupted.message
    assert retry.scheduled_for == interrupted.scheduled_for
    assert len(rows(pg_state, "slow", 1)) == 1 and len(rows(pg_state, "slow", 2)) == 1  # each attempt once
    wait_for(lambda: sum(1 for _, path in target.hits if path == "/slow/12") >= 2, 10, "attempt 2's request")
    assert sum(1 for _, path in target.hits if path == "/slow/12") == 2  # one request per attempt


def test_a_worker_frozen_past_its_lease_has_its_late_result_refused(pg_state, daemon, workers):
    frozen = workers("w1")
    daemon('[[jobs]]\nid = "late"\nname = "late"\nevery = "1h"\ncommand = "sh -c \'sleep 3; echo late-done\'"\n'
           'max_retries = 1\nretry_delay = 1\n')
    wait_for(lambda: row(pg_state, "late", 1, status="running", owner_pid=frozen.pid), 20, "attempt 1 in worker 1")
    frozen.signal(signal.SIGSTOP)  # its command goes on (its own session) and ends while the worker is frozen
    other = workers("w2")
    wait_for(lambda: row(pg_state, "late", 2, status="success", owner_pid=other.pid), SETTLE + 10,
             "attempt 2 done in worker 2")
    frozen.signal(signal.SIGCONT)
    wait_for(lambda: "late result refused" in frozen.output(), 15, "the frozen worker's result refused")
    assert frozen.stop() == 0
    assert "1 late result(s) refused" in frozen.output()
    first = rows(pg_state, "late", 1)
    assert len(first) == 1 and first[0].status == "interrupted"  # what the daemon recorded stands
    assert [r.status for r in rows(pg_state, "late", 2)] == ["success"]


def test_sigkill_a_worker_during_a_command_leaves_no_orphan(pg_state, daemon, workers):
    w = workers("w1")
    daemon('[[jobs]]\nid = "long"\nname = "long"\nevery = "1h"\ncommand = "sleep 120"\nmax_retries = 0\n')
    running = wait_for(lambda: (r := row(pg_state, "long", 1, status="running", owner_pid=w.pid)) and r.child_pgid and r,
                       20, "the command's group recorded")
    wait_for(lambda: program_of(running.child_pgid) == "sleep", 5, "the command let go (no longer held at its gate)")
    w.kill()
    wait_for(lambda: pid_gone(running.child_pgid), SETTLE + 10, "the command's process group stopped")
    assert wait_for(lambda: row(pg_state, "long", 1, status="interrupted"), 10, "the attempt interrupted")


def test_sigterm_lets_a_running_attempt_finish_within_its_grace_period(pg_state, daemon, workers):
    w = workers("w1")
    daemon('[[jobs]]\nid = "brief"\nname = "brief"\nevery = "1h"\ncommand = "sh -c \'sleep 2; echo finished\'"\n',
           defaults="grace_period = 20\n")
    wait_for(lambda: row(pg_state, "brief", 1, status="running", owner_pid=w.pid), 20, "the attempt running")
    w.signal(signal.SIGTERM)
    assert w.proc.wait(timeout=20) == 0
    done = rows(pg_state, "brief", 1)
    assert [(r.status, r.message) for r in done] == [("success", "finished")]


def test_sigterm_past_the_grace_period_gives_the_attempt_back(pg_state, daemon, workers):
    w = workers("w1")
    daemon('[[jobs]]\nid = "stuck"\nname = "stuck"\nevery = "1h"\ncommand = "sleep 60"\nmax_retries = 1\n',
           defaults="grace_period = 1\n")
    wait_for(lambda: row(pg_state, "stuck", 1, status="running", owner_pid=w.pid), 20, "the attempt running")
    stopped = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.proc.wait(timeout=20) == 0
    assert time.monotonic() - stopped < 1 + 5 + 3  # grace, then the group's SIGTERM/SIGKILL, then the exit
    first = rows(pg_state, "stuck", 1)
    assert [r.status for r in first] == ["interrupted"]
    other = workers("w2")
    assert wait_for(lambda: row(pg_state, "stuck", 2, status="running", owner_pid=other.pid), 20,
                    "the next attempt taken by another worker")


def test_a_restarted_daemon_follows_the_chain_a_worker_was_running(request, home, pg_dsn, pg_state, daemon, workers):
    w = workers("w1")
    first = daemon('[[jobs]]\nid = "chain"\nname = "chain"\nevery = "1h"\n'
                   'command = "sh -c \'sleep 4; echo no-luck; exit 1\'"\nmax_retries = 1\nretry_delay = 1\n')
    wait_for(lambda: row(pg_state, "chain", 1, status="running", owner_pid=w.pid), 20, "attempt 1 in the worker")
    assert first.stop() == 0
    again = DaemonProcess(home, env={"CRAWLSCHED_STATE": pg_dsn}).start()
    request.addfinalizer(again.stop)
    wait_for(lambda: row(pg_state, "chain", 1, status="failed"), 20, "attempt 1 failed in the worker")
    second = wait_for(lambda: row(pg_state, "chain", 2), 15, "attempt 2 queued by the new daemon")
    assert second.scheduled_for == row(pg_state, "chain", 1).scheduled_for
    assert len(rows(pg_state, "chain", 1)) == 1


def test_a_worker_started_after_one_was_sigkilled_stops_the_command_it_left(pg_state, daemon, workers):
    w = workers("w1")
    daemon('[[jobs]]\nid = "left"\nname = "left"\nevery = "1h"\ncommand = "sleep 120"\nmax_retries = 0\n')
    running = wait_for(lambda: (r := row(pg_state, "left", 1, status="running", owner_pid=w.pid)) and r.child_pgid and r,
                       20, "the command's group recorded")
    wait_for(lambda: program_of(running.child_pgid) == "sleep", 5, "the command let go (no longer held at its gate)")
    w.kill()
    killed = time.monotonic()
    successor = workers("w2")  # on the same host, before the dead worker's lease lapsed
    assert "left running by a dead worker" in successor.output()
    assert pid_gone(running.child_pgid)
    assert time.monotonic() - killed < WORKER_TTL  # not the daemon's settle: the successor's start did it


def test_a_url_attempt_takes_its_variables_from_the_workers_environment(home, pg_state, daemon, workers, target):
    w = workers("w1")  # its environment has SECRET_WORD; the daemon's has not
    daemon(f'[[jobs]]\nid = "secret"\nname = "secret"\nevery = "1h"\nurl = "{target.url("/ok")}?key=${{SECRET_WORD}}"\n')
    done = wait_for(lambda: row(pg_state, "secret", 1, status="success"), 20, "the attempt's success")
    assert any(path == "/ok?key=s3cr3t-from-the-worker" for _, path in target.hits)
    daemon_log = "".join(p.read_text() for p in (home / "logs").glob("crawler_*.log"))
    worker_log = "".join(p.read_text() for p in (w.home / "logs").glob("crawler_*.log"))
    assert "s3cr3t-from-the-worker" not in (done.message or "") + (done.output or "") + daemon_log + worker_log


def program_of(pid: int) -> str | None:
    try:
        return Path((Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode()).name
    except (OSError, IndexError):
        return None


def gates_of(pid: int) -> list[int]:
    """The commands a worker holds at their gate (spawned ahead of their instant, not yet let go)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"crawlsched-gate" in argv:
            found.append(int(entry.name))
    return found


def test_a_command_queued_ahead_is_spawned_while_it_waits_and_runs_at_its_instant_not_before(tmp_path, pg_state,
                                                                                           daemon, workers):
    w = workers("w1", concurrency=2)
    daemon('[[jobs]]\nid = "tick"\nname = "tick"\nevery = "6s"\ncommand = "date +%s.%N"\n')
    wait_for(lambda: row(pg_state, "tick", 1, status="success"), 20, "the first fire")
    held = wait_for(lambda: gates_of(w.pid), 10, "the next fire's command held at its gate, before its instant")
    second = wait_for(lambda: [r for r in rows(pg_state, "tick", 1) if r.status == "success"][1:], 15, "the next fire")[0]
    assert float(second.message) >= second.scheduled_for  # the command began at its instant, not at its spawn
    assert float(second.message) - second.scheduled_for < 2.0
    # the row says when it was let go (after the take-over's write, before the command's own clock)
    assert second.scheduled_for < second.started_at <= float(second.message)
    assert second.child_pgid in held  # the group recorded was the one held: known before it ran
    assert w.proc.poll() is None


def test_a_worker_sigkilled_while_it_holds_a_command_at_its_gate_leaves_nothing_running(tmp_path, pg_state, daemon,
                                                                                      workers):
    marker = tmp_path / "ran.txt"
    w = workers("w1", concurrency=2)
    daemon(f'[[jobs]]\nid = "tick"\nname = "tick"\nevery = "8s"\ncommand = "sh -c \'date +%s >> {marker}\'"\n')
    wait_for(lambda: row(pg_state, "tick", 1, status="success"), 20, "the first fire")
    held = wait_for(lambda: gates_of(w.pid), 12, "the next fire's command held at its gate")
    w.kill()
    wait_for(lambda: all(pid_gone(g) for g in held), 5, "the held command's gate gone with its worker")
    time.sleep(3)  # past the fire's instant: nothing of it ran
    assert len(marker.read_text().split()) == 1
    queued = [r for r in rows(pg_state, "tick", 1) if r.status != "success"]
    assert queued and all(r.child_pgid is None for r in queued)  # never taken over: no group to stop
