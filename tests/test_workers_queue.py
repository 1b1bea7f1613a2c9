"""The queue's store operations against a real PostgreSQL database (crawlsched.state.queue,
crawlsched.workers.queue): one transaction for a row and its queue job, take-over, leases by
the database's clock, lapsed leases settled, late writes fenced, closed rows drained."""

from __future__ import annotations

import time

import pytest

from crawlsched.executor import AttemptSpec, spec_to_json
from crawlsched.model import Job, ScheduleKind
from crawlsched.state import CLAIM_DAEMON, Owner, Retry, Saved
from crawlsched.state import queue as q
from crawlsched.workers.queue import defer

DAEMON = Owner(CLAIM_DAEMON, 4242, "boot/1", "daemon-host")
WORKER = Owner("worker", 777, "boot/2", "worker-host")
JOB = Job(id="j", name="j", kind=ScheduleKind.EVERY, spec="1h", timezone="UTC", command="true", max_retries=2)


@pytest.fixture
def store(pg_dsn):
    from crawlsched.state.postgres import PostgresStore

    s = PostgresStore(pg_dsn).open()
    yield s
    s.close()


def attempt(scheduled_for: float = 1000.0, number: int = 1, job_id: str = "j") -> dict:
    spec = AttemptSpec.of(JOB, scheduled_for, number, "schedule")
    return {"job_id": job_id, "scheduled_for": scheduled_for, "attempt": number, "max_attempts": JOB.max_attempts,
            "trigger": "schedule", "payload": {"spec": spec_to_json(spec), "grace": 30.0}}


def queue_jobs(store) -> list[dict]:
    return [{"id": r[0], "args": r[1], "status": r[2]} for r in store.db.read_tuples(
        "SELECT id, args, status::text FROM procrastinate_jobs ORDER BY id")]


def interrupted(run):
    return "interrupted", "interrupted: its lease lapsed", Retry(run.job_id, run.scheduled_for, run.attempt + 1,
                                                                  run.max_attempts, time.time(), run.trigger), None


def test_a_queued_attempt_is_its_running_row_and_its_queue_job_committed_together(store):
    [queued] = q.start_queued(store, [attempt()], DAEMON, defer, started_at=time.time())
    [row] = store.runs("j")
    assert (row.id, row.status, row.owner_host) == (queued.run_id, "running", None)
    [job] = queue_jobs(store)
    assert row.queue_job == job["id"] and job["status"] == "todo"
    assert job["args"]["run_id"] == row.id and job["args"]["spec"]["job"]["command"] == "true"


def test_a_queue_job_that_cannot_be_deferred_leaves_no_row(store):
    def broken(c, items):
        defer(c, items)
        raise RuntimeError("the queue refused it")

    with pytest.raises(RuntimeError):
        q.start_queued(store, [attempt()], DAEMON, broken, started_at=time.time())
    assert store.runs("j") == [] and queue_jobs(store) == []


def test_a_burst_is_queued_at_once_and_a_job_still_running_is_not_queued_again(store):
    first = q.start_queued(store, [attempt(job_id="a"), attempt(job_id="b"), attempt(2000.0, job_id="a")], DAEMON,
                           defer, started_at=time.time())
    assert [bool(r.run_id) for r in first] == [True, True, False]
    assert first[2].busy == "running in another process (the queue)"  # runs of one job never overlap
    assert len(queue_jobs(store)) == 2


def test_a_worker_takes_the_row_over_with_its_owner_a_lease_and_a_new_epoch(store):
    [queued] = q.start_queued(store, [attempt()], DAEMON, defer, started_at=time.time())
    before = store.runs("j")[0].epoch
    key = q.take_over(store, queued.run_id, WORKER, "/srv/worker-home", started_at=time.time())
    row = store.runs("j")[0]
    assert key is not None and key.epoch == row.epoch > before
    assert (row.owner_pid, row.owner_host, row.run_home) == (777, "worker-host", "/srv/worker-home")
    assert q.take_over(store, queued.run_id, Owner("worker", 778, "boot/3", "other"), "/x", started_at=time.time()) is None


def test_a_lapsed_lease_is_settled_interrupted_with_the_next_attempt_and_the_late_result_is_fenced(store):
    [queued] = q.start_queued(store, [attempt()], DAEMON, defer, started_at=time.time())
    key = q.take_over(store, queued.run_id, WORKER, "/w", started_at=time.time(), ttl=0.2)
    assert q.settle_lapsed(store, interrupted) == []  # its lease is still held
    time.sleep(0.3)
    [settled] = q.settle_lapsed(store, interrupted)
    assert settled.id == queued.run_id
    row = store.runs("j")[0]
    assert row.status == "interrupted"
    assert [r.next_attempt for r in store.retries()] == [2]
    late = q.finish_owned(store, key, WORKER, status="success", finished_at=time.time(), message="late")
    assert late is Saved.FENCED
    assert store.runs("j")[0].status == "interrupted"  # what the settle recorded stands
    assert q.settle_lapsed(store, interrupted) == []  # exactly once


def test_a_renewal_tells_the_worker_which_leases_it_lost(store):
    done = q.start_queued(store, [attempt(job_id="a"), attempt(job_id="b")], DAEMON, defer, started_at=time.time())
    ids = [r.run_id for r in done]
    q.register_worker(store, WORKER, concurrency=2, home="/w", started_at=time.time())
    q.take_over(store, ids[0], WORKER, "/w", started_at=time.time(), ttl=0.2)
    q.take_over(store, ids[1], WORKER, "/w", started_at=time.time())
    time.sleep(0.3)
    q.settle_lapsed(store, interrupted)
    assert q.renew(store, WORKER, ids) == {ids[1]}
    [registered] = q.list_workers(store)
    assert (registered["host"], registered["pid"], registered["concurrency"]) == ("worker-host", 777, 2)


def test_closed_queued_rows_are_drained_once_with_the_retry_their_close_saved(store):
    [queued] = q.start_queued(store, [attempt()], DAEMON, defer, started_at=time.time())
    key = q.take_over(store, queued.run_id, WORKER, "/w", started_at=time.time())
    retry = Retry("j", 1000.0, 2, JOB.max_attempts, 5000.0, "schedule")
    assert q.finish_owned(store, key, WORKER, status="failed", finished_at=time.time(), message="exit code 1",
                          retry=retry)
    [(run, saved)] = q.drain_closed(store)
    assert (run.id, run.status, saved.due_at) == (queued.run_id, "failed", 5000.0)
    assert q.drain_closed(store) == []


def test_an_attempt_that_has_a_row_already_is_not_queued_twice(store):
    [queued] = q.start_queued(store, [attempt()], DAEMON, defer, started_at=time.time())
    key = q.take_over(store, queued.run_id, WORKER, "/w", started_at=time.time())
    store.finish_attempt(key, status="success", finished_at=time.time(), message="ok")
    [again] = q.start_queued(store, [attempt()], DAEMON, defer, started_at=time.time())
    assert again.duplicate and again.run_id is None
    assert len(queue_jobs(store)) == 1


def test_a_new_daemon_taking_the_chain_claim_over_does_not_void_a_running_worker_attempt(store):
    [queued] = q.start_queued(store, [attempt()], DAEMON, defer, started_at=time.time(), claim_ttl=0.1)
    key = q.take_over(store, queued.run_id, WORKER, "/w", started_at=time.time())
    time.sleep(0.2)
    successor = Owner(CLAIM_DAEMON, 4343, "boot/9", "other-daemon-host")
    store.claim_chain("j", successor, time.time())  # the old daemon's claim lapsed: taken over, new epoch
    saved = q.finish_owned(store, key, WORKER, status="success", finished_at=time.time(), message="done")
    assert saved is Saved.SAVED and store.runs("j")[0].status == "success"
