"""Daemons sharing one state, in-process: leader and standby, takeover, stepping down, fencing.

Two real ``Daemon`` objects, each with its own home and job file, over one state file
(treated as shared, the way a PostgreSQL state is), driven turn by turn with one fake
clock and inline executors: which daemon fires, and when the lease changes hands, is
exactly what the test says. The same with real processes on PostgreSQL is
tests/test_cluster_processes.py.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawlsched.cluster import Membership
from crawlsched.daemon import Daemon, InlineExecutor
from crawlsched.state import LEADER_TTL, State
from crawlsched.store import JobStore
from helpers.clock import FakeClock
from helpers.jobs import write_jobs

UTC = timezone.utc
START = datetime(2025, 11, 8, 9, 0, tzinfo=UTC)
EVERY_MINUTE = '[[jobs]]\nid = "m"\nname = "m"\nevery = "1m"\ncommand = "true"\n'


def cluster_daemon(root: Path, name: str, clock: FakeClock, state_file: Path, jobs: str = EVERY_MINUTE) -> Daemon:
    """A daemon of ``root/name`` on the shared ``state_file``, known to the others as ``name``."""
    home = root / name
    write_jobs(home, jobs)
    state = State(state_file)
    d = Daemon(JobStore(home / "jobs.toml", cache_dir=home / ".cache"), state, home, logging.getLogger("crawlsched.test"),
               clock=clock.time, monotonic=clock.monotonic, executor=InlineExecutor(), notify=lambda _m: False,
               duties=False)
    d.member = Membership(state, name, d.pid, home, d.log, clock=clock.time, monotonic=clock.monotonic, shared=True)
    return d


def turns(clock: FakeClock, seconds: float, *daemons: Daemon, step: float = 0.5) -> None:
    """Each daemon turns every ``step`` seconds of fake time for ``seconds``."""
    end = clock.time() + seconds
    while clock.time() < end:
        for d in daemons:
            d.turn()
            d.collect()
        clock.advance(step)


def scheduled(state_file: Path) -> list[tuple[str, float, int, str]]:
    s = State(state_file).open()
    try:
        return sorted((r.job_id, r.scheduled_for, r.attempt, r.status) for r in s.runs(limit=10_000))
    finally:
        s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def pair(tmp_path, clock):
    state_file = tmp_path / "shared.db"
    a = cluster_daemon(tmp_path, "a", clock, state_file)
    b = cluster_daemon(tmp_path, "b", clock, state_file)
    a.start()
    b.start()
    yield a, b, state_file
    for d in (a, b):
        if not d.stopping:
            d.stopping = True
            d.shutdown()


def test_one_daemon_leads_and_only_it_fires_each_job_time(pair, clock):
    a, b, state_file = pair
    assert (a.role, b.role) == ("leader", "standby")
    turns(clock, 5 * 60, a, b)
    rows = scheduled(state_file)
    assert len(rows) == 5 and len({(j, t, n) for j, t, n, _ in rows}) == 5
    assert (a.fired, b.fired) == (5, 0)
    roles = {d.id: d.role for d in a.state.daemons()}
    assert roles == {"a": "leader", "b": "standby"}


def test_a_standby_takes_over_within_the_lease_when_the_leader_stops_renewing(pair, clock):
    a, b, state_file = pair
    turns(clock, 61, a, b)  # a fires 09:01
    died = clock.time()
    took = None
    while took is None and clock.time() - died < 30:
        turns(clock, 0.5, b)  # a is dead: it turns no more
        if b.role == "leader":
            took = clock.time() - died
    assert took is not None and took <= LEADER_TTL + 2, took
    turns(clock, 120, b)
    rows = scheduled(state_file)
    assert [(j, t) for j, t, _, _ in rows] == [("m", START.timestamp() + 60 * k) for k in range(4)]
    assert len(set(rows)) == len(rows)


def test_a_leader_that_lost_its_lease_steps_down_and_writes_nothing(pair, clock):
    a, b, state_file = pair
    turns(clock, 55, a, b)
    turns(clock, 12, b)  # a is frozen for 12 s (SIGSTOP): b takes over and fires 09:01
    assert b.role == "leader"
    a.fire_due(clock.time() + 60)  # even a fire forced on the frozen one is refused by the state
    turns(clock, 1, a, b)  # a wakes: its first turn looks at the lease
    assert a.role == "standby"
    turns(clock, 120, a, b)
    rows = scheduled(state_file)
    keys = [(j, t, n) for j, t, n, _ in rows]
    assert len(keys) == len(set(keys))
    assert [t for _, t, n, _ in rows if n > 0] == [START.timestamp() + 60 * k for k in range(4)]
    assert b.role == "leader" and a.role == "standby"


def test_run_now_requests_wait_for_the_leader(pair, clock):
    a, b, state_file = pair
    turns(clock, 1, a, b)  # 09:00 fired
    before = len(scheduled(state_file))
    b.state.request_run("m", clock.time())
    b.take_requests()  # the standby takes none
    assert b.state.count_requests(pending=True) == 1
    turns(clock, 3, a, b)  # the leader's next renewal reads it
    assert b.state.count_requests(pending=True) == 0
    assert len(scheduled(state_file)) == before + 1


def test_a_leader_that_stops_hands_over_at_once(pair, clock):
    a, b, state_file = pair
    a.stopping = True
    a.shutdown()
    turns(clock, 1.5, b)
    assert b.role == "leader"


def test_each_daemons_row_has_its_job_files_digest(tmp_path, clock):
    state_file = tmp_path / "shared.db"
    a = cluster_daemon(tmp_path, "a", clock, state_file)
    b = cluster_daemon(tmp_path, "b", clock, state_file, jobs=EVERY_MINUTE.replace('"1m"', '"2m"'))
    a.start()
    b.start()
    try:
        digests = {d.id: d.jobs_digest for d in a.state.daemons()}
        assert digests["a"] and digests["b"] and digests["a"] != digests["b"]
    finally:
        for d in (a, b):
            d.stopping = True
            d.shutdown()


def test_a_retry_pending_when_the_leader_froze_runs_once_under_the_new_leader(tmp_path, clock):
    jobs = '[[jobs]]\nid = "f"\nname = "f"\nevery = "10m"\ncommand = "false"\nmax_retries = 1\nretry_delay = 20\n'
    state_file = tmp_path / "shared.db"
    a = cluster_daemon(tmp_path, "a", clock, state_file, jobs)
    b = cluster_daemon(tmp_path, "b", clock, state_file, jobs)
    a.start()
    b.start()
    try:
        turns(clock, 1, a, b)  # a fires 09:00: attempt 1 fails, its retry saved for 09:00:20
        turns(clock, 12, b)  # a frozen: b takes over and resumes the saved retry
        assert b.role == "leader" and "f" in b.chains
        turns(clock, 30, a, b)  # a wakes and steps down; b runs attempt 2 at 09:00:20
        assert a.role == "standby" and "f" not in a.chains
        assert [(n, s) for _, _, n, s in scheduled(state_file)] == [(1, "failed"), (2, "failed")]
    finally:
        for d in (a, b):
            d.stopping = True
            d.shutdown()


def test_a_retry_another_daemon_saves_after_the_takeover_is_adopted_by_the_leader(tmp_path, clock):
    from crawlsched.state import Retry

    jobs = '[[jobs]]\nid = "f"\nname = "f"\nevery = "10m"\ncommand = "true"\nmax_retries = 2\nretry_delay = 20\n'
    state_file = tmp_path / "shared.db"
    a = cluster_daemon(tmp_path, "a", clock, state_file, jobs)
    b = cluster_daemon(tmp_path, "b", clock, state_file, jobs)
    a.start()
    b.start()
    try:
        turns(clock, 1, a, b)  # 09:00 fired by a
        turns(clock, 12, b)  # a frozen: b takes over
        assert b.role == "leader" and "f" not in b.chains
        fired = START.timestamp()
        # a's attempt ends after it lost the lead (it ran on): its retry lands in the state unknown to b.
        a.state.save_retry(Retry("f", fired, 2, 3, clock.time() + 5, "schedule"))
        turns(clock, 3, a, b)  # b's next renewal adopts it
        assert "f" in b.chains and b.chains["f"].retry_due is not None
        turns(clock, 6, a, b)
        assert [(n, s) for _, t, n, s in scheduled(state_file) if t == fired] == [(1, "success"), (2, "success")]
    finally:
        for d in (a, b):
            d.stopping = True
            d.shutdown()


def test_an_attempt_of_a_leader_dead_on_another_host_is_settled_once_its_lease_lapses(tmp_path):
    from crawlsched.state import Owner

    clock = FakeClock(datetime.fromtimestamp(int(time.time()), UTC))  # leases of rows are judged by the real clock
    state_file = tmp_path / "shared.db"
    a = cluster_daemon(tmp_path, "a", clock, state_file, EVERY_MINUTE.replace('"1m"', '"1h"'))
    a.start()
    try:
        turns(clock, 1, a)
        (fired,) = [t for _, t, _, _ in scheduled(state_file)]
        # Attempt 2 of that run, started by a leader on another host that died since.
        elsewhere = Owner("daemon", 4_000_000, None, "another-host")
        foreign = State(state_file).open()  # that daemon's store
        foreign.start_attempt("m", fired, 2, 4, trigger="schedule", started_at=time.time(), owner=elsewhere, ttl=2)
        foreign.close()
        a.write_heartbeat()  # the lease is still live: the row is left running
        assert [s for _, t, n, s in scheduled(state_file) if n == 2] == ["running"]
        time.sleep(2.1)
        a.write_heartbeat()  # lapsed: interrupted, its retry saved for the leader
        turns(clock, 3, a)  # adopted and run at once (its due time is now)
        assert [(n, s) for _, t, n, s in scheduled(state_file) if t == fired] == [
            (1, "success"), (2, "interrupted"), (3, "success")]
    finally:
        a.stopping = True
        a.shutdown()


def test_a_leader_whose_grace_period_outlasts_its_lease_leaves_the_new_leaders_row_alone(pair, clock):
    a, b, state_file = pair
    turns(clock, 1, a, b)
    turns(clock, 12, b)  # a's stop: its grace period (no turns) outlasts the lease, b takes over
    assert b.role == "leader"
    a.stopping = True
    a.shutdown()
    row = b.state.daemon()
    assert (row.pid, row.stopped_at) == (b.pid, None)  # b's, not a's stop
    assert {d.id: d.role for d in b.state.daemons()}["b"] == "leader"


def test_fires_due_during_a_takeover_while_a_worker_runs_the_job_each_get_a_row(tmp_path, monkeypatch):
    from crawlsched.state import Owner

    clock = FakeClock(datetime.fromtimestamp(int(time.time()) // 10 * 10 + 10, UTC))  # leases use the real clock
    jobs = '[[jobs]]\nid = "w"\nname = "w"\nevery = "2s"\ncommand = "true"\n'
    state_file = tmp_path / "shared.db"
    a = cluster_daemon(tmp_path, "a", clock, state_file, jobs)
    b = cluster_daemon(tmp_path, "b", clock, state_file, jobs)
    a.start()
    b.start()
    try:
        first = clock.time() + 2
        # The fire at `first` is an attempt a worker runs for long (its row the worker's, its lease live).
        worker = Owner("worker", 4_000_000, None, "another-host")
        State(state_file).open().start_attempt("w", first, 1, 1, trigger="schedule", started_at=first, owner=worker,
                                               ttl=600)
        a.planner.unplan("w")
        a.planner.fired("w", first)  # a handed that fire out; the worker runs it
        a.planner.plan(a.jobs["w"], first)
        a.chains.begin("w", first, "schedule").handed = True

        def adopt(self):  # what Scheduler._adopt_queued finds on PostgreSQL: that queued row, in a worker
            chain = self.chains.begin("w", first, "schedule")
            chain.attempt, chain.handed = 1, True
            return ["w"]

        recover = Daemon._recover

        def recover_adopting(self, now):  # executor = "workers" adopts queued rows at a takeover
            recover(self, now)
            self.state.claim_chains(adopt(self), self.runner.owner, now)

        monkeypatch.setattr(Daemon, "_recover", recover_adopting)
        turns(clock, 4, a, b)  # a leads, the job busy: its fires are skipped
        froze = clock.time()
        turns(clock, 14, b)  # a frozen (SIGSTOP): b takes over while the worker still runs the attempt
        assert b.role == "leader" and "w" in b.chains
        turns(clock, 6, b)
        end = clock.time()
        s = State(state_file).open()
        rows = s.runs(limit=10_000)
        s.close()
        instants = {r.scheduled_for for r in rows if r.status != "missed"}
        ranges = [(r.first_missed, r.last_missed) for r in rows if r.status == "missed"]
        due = [first + 2 * k for k in range(int((end - first) // 2))]
        lost = [t - froze for t in due if t not in instants and not any(lo <= t <= hi for lo, hi in ranges)]
        assert lost == [], f"fires with no row (seconds after the freeze): {lost}"
    finally:
        for d in (a, b):
            d.stopping = True
            d.shutdown()
