"""WorkersExecutor's lease check against a real PostgreSQL database: the queue's lease on a row
is renewed while its job waits for a worker, and not once a worker fetched it and died before
taking the row over (that row lapses and is settled, its chain going on)."""

from __future__ import annotations

import logging
import time

import pytest

from crawlsched.executor import AttemptSpec, spec_to_json
from crawlsched.model import Job, ScheduleKind
from crawlsched.state import CLAIM_DAEMON, Owner
from crawlsched.state import queue as q
from crawlsched.workers.executor import WorkersExecutor
from crawlsched.workers.queue import defer

JOB = Job(id="j", name="j", kind=ScheduleKind.EVERY, spec="1h", timezone="UTC", command="true", max_retries=1)


@pytest.fixture
def store(pg_dsn):
    from crawlsched.state.postgres import PostgresStore

    s = PostgresStore(pg_dsn).open()
    yield s
    s.close()


def queued(store) -> int:
    spec = AttemptSpec.of(JOB, 1000.0, 1, "schedule")
    item = {"job_id": "j", "scheduled_for": 1000.0, "attempt": 1, "max_attempts": 2, "trigger": "schedule",
            "payload": {"spec": spec_to_json(spec), "grace": 30.0}}
    [done] = q.start_queued(store, [item], Owner(CLAIM_DAEMON, 1, None, "d"), defer, started_at=time.time())
    return done.run_id


def lapse(store, run_id: int) -> None:
    """As if the queue's lease ran out (instead of waiting its 30 s)."""
    with store.db.write() as c:
        c.execute("UPDATE runs SET lease_until = ? WHERE id = ?", (store.db.clock() - 1, run_id))


def test_a_row_whose_job_waits_for_a_worker_keeps_the_queues_lease(store):
    run_id = queued(store)
    lapse(store, run_id)
    WorkersExecutor(store, logging.getLogger("test"))._check()
    [(status, until)] = store.db.read_tuples("SELECT status, lease_until FROM runs WHERE id = ?", (run_id,))
    assert status == "running" and until > store.db.clock() + 20  # renewed: the queue's 30 s from now


def test_a_job_fetched_by_a_worker_that_died_before_taking_it_over_is_settled_and_retried(store):
    run_id = queued(store)
    with store.db.write() as c:  # fetched (status doing) by a worker whose registration is gone
        c.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL")
    lapse(store, run_id)
    executor = WorkersExecutor(store, logging.getLogger("test"))
    executor._check()
    [row] = store.runs("j")
    assert row.status == "interrupted" and executor.settled == 1
    assert [(r.scheduled_for, r.next_attempt) for r in store.retries()] == [(1000.0, 2)]
    [(drained, retry)] = q.drain_closed(store)
    assert drained.id == run_id and retry is not None


def fetched_by_worker(store, heartbeat_age: float) -> None:
    """The queue job is fetched (status doing) by a procrastinate worker whose last heartbeat is this old."""
    with store.db.write() as c:
        [(worker,)] = c.execute("INSERT INTO procrastinate_workers(last_heartbeat) VALUES"
                                " (now() - make_interval(secs => ?)) RETURNING id", (heartbeat_age,)).fetchall()
        c.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = ?", (worker,))


def test_a_job_fetched_by_a_worker_whose_heartbeat_stopped_is_settled_within_a_worker_lease(store):
    run_id = queued(store)  # the queue's lease is live (30 s): only the dead worker's heartbeat tells
    fetched_by_worker(store, q.WORKER_TTL + 1)
    executor = WorkersExecutor(store, logging.getLogger("test"))
    executor._check()
    [row] = store.runs("j")
    assert (row.id, row.status, executor.settled) == (run_id, "interrupted", 1)
    assert [(r.scheduled_for, r.next_attempt) for r in store.retries()] == [(1000.0, 2)]
    # The worker wakes (it was frozen, not dead) and would take the row over: refused, never crawled.
    assert q.take_over(store, run_id, Owner("worker", 9, None, "w"), "/w", started_at=time.time()) is None
    executor._check()
    assert executor.settled == 1  # exactly once


def test_a_job_fetched_by_a_live_worker_is_left_for_it_to_take_over(store):
    run_id = queued(store)
    fetched_by_worker(store, 1.0)
    executor = WorkersExecutor(store, logging.getLogger("test"))
    executor._check()
    assert [r.status for r in store.runs("j")] == ["running"] and executor.settled == 0
    key = q.take_over(store, run_id, Owner("worker", 9, None, "w"), "/w", started_at=time.time())
    assert key is not None
    with store.db.write() as c:  # its heartbeat stops once it holds the row: its own lease (10 s) decides now
        c.execute("UPDATE procrastinate_workers SET last_heartbeat = now() - make_interval(secs => 60)")
    executor._check()
    assert [r.status for r in store.runs("j")] == ["running"] and executor.settled == 0


def test_a_daemon_that_does_not_lead_settles_no_lapsed_row(store):
    run_id = queued(store)
    lapse(store, run_id)
    with store.db.write() as c:
        c.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL")
    store.leader_epoch = 0  # a standby: the leader settles it, for the chain it adopted
    executor = WorkersExecutor(store, logging.getLogger("test"))
    executor._check()
    assert [r.status for r in store.runs("j")] == ["running"] and executor.settled == 0


def test_a_row_whose_queue_job_ended_without_taking_it_over_is_settled_at_once(store):
    run_id = queued(store)  # the task failed before its take-over (the database restarted under it): the job is gone
    with store.db.write() as c:
        c.execute("DELETE FROM procrastinate_jobs")
    executor = WorkersExecutor(store, logging.getLogger("test"))
    executor._check()
    [row] = store.runs("j")
    assert (row.id, row.status, executor.settled) == (run_id, "interrupted", 1)
