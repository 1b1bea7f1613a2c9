"""A worker's writes to the attempts it holds (crawlsched.state.owned), against a real PostgreSQL
database: a close counts its outcome once and saves its retry, one of a row that is not the
worker's any more (closed, another's, still the queue's) is refused and counts nothing, and the
one-statement close writes what the step-by-step one (SQLite's) writes."""

from __future__ import annotations

import time

import pytest

from crawlsched.state import Owner, Retry, Saved
from crawlsched.state import queue as q
from crawlsched.workers.queue import defer
from test_workers_queue import DAEMON, JOB, WORKER, attempt


@pytest.fixture
def store(pg_dsn):
    from crawlsched.state.postgres import PostgresStore

    s = PostgresStore(pg_dsn).open()
    yield s
    s.close()


def test_a_worker_close_counts_its_outcome_duration_and_lateness_once_and_a_fenced_one_counts_nothing(store):
    def totals():
        counters, seq = store.metric_counters()
        hist = {name: [(le, n) for le, n, _ in rows] for name, rows in store.metric_histograms().items()}
        return counters, seq, hist

    [a, b] = q.start_queued(store, [attempt(1000.0, job_id="a"), attempt(1000.0, job_id="b")], DAEMON, defer,
                            started_at=time.time())
    key_a = q.take_over(store, a.run_id, WORKER, "/w", started_at=time.time())
    key_b = q.take_over(store, b.run_id, WORKER, "/w", started_at=time.time())
    began = 1000.004  # taken over ahead: its crawl began 4 ms after its instant
    done = began + 0.3
    assert q.finish_owned(store, key_a, WORKER, status="success", finished_at=done, message="ok",
                          started_at=began) is Saved.SAVED
    counters, seq_a, hist = totals()
    assert counters["a"][0] == 1 and counters["a"][5] == done  # success, last_success
    assert hist["attempt_duration"] == [(0.5, 1)] and hist["fire_lateness"] == [(0.005, 1)]
    assert store.runs("a")[0].started_at == began
    retry = Retry("b", 1000.0, 2, JOB.max_attempts, 9000.0, "schedule")
    assert q.finish_owned(store, key_b, WORKER, status="failed", finished_at=time.time(), message="exit code 1",
                          retry=retry) is Saved.SAVED
    counters, seq_b, hist = totals()
    assert counters["b"][1] == 1 and seq_b > seq_a  # failed; a newer change number
    assert sum(n for _, n in hist["attempt_duration"]) == 2 and [r.due_at for r in store.retries()] == [9000.0]
    # closed already: a second close is refused and counts nothing, saves no retry
    assert q.finish_owned(store, key_a, WORKER, status="failed", finished_at=done + 1, message="late",
                          retry=Retry("a", 1000.0, 2, JOB.max_attempts, 1.0, "schedule")) is Saved.FENCED
    assert totals() == (counters, seq_b, hist) and [r.job_id for r in store.retries()] == ["b"]


OTHER_WORKER = Owner("worker", 778, "boot/3", "other-host")


def test_a_close_of_a_row_another_worker_holds_or_the_queue_still_holds_is_refused_and_counts_nothing(store):
    [theirs, queued] = q.start_queued(store, [attempt(job_id="a"), attempt(job_id="b")], DAEMON, defer,
                                      started_at=time.time())
    key = q.take_over(store, theirs.run_id, OTHER_WORKER, "/w2", started_at=time.time())
    before = store.metric_counters(), store.metric_histograms()
    assert q.finish_owned(store, key, WORKER, status="failed", finished_at=time.time(), message="not mine",
                          retry=Retry("a", 1000.0, 2, JOB.max_attempts, 1.0, "schedule")) is Saved.FENCED
    not_taken = q.AttemptKey("b", 1000.0, 1, JOB.max_attempts, "schedule", key.epoch, time.time())
    assert q.finish_owned(store, not_taken, WORKER, status="success", finished_at=time.time(), message="x") is Saved.FENCED
    assert (store.metric_counters(), store.metric_histograms()) == before and store.retries() == []
    assert [r.status for r in (store.runs("a")[0], store.runs("b")[0])] == ["running", "running"]


class _StepByStep:
    """A store whose database has no ``write_row``: ``finish_owned`` takes its step-by-step path (SQLite's)."""

    def __init__(self, store):
        self.db = _WithoutWriteRow(store.db)


class _WithoutWriteRow:
    def __init__(self, db):
        self._db = db

    def __getattr__(self, name):
        if name == "write_row":
            raise AttributeError(name)
        return getattr(self._db, name)


@pytest.fixture
def second_dsn(pg_cluster):
    import secrets

    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_cluster.dsn(name)
    with psycopg.connect(pg_cluster.dsn(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.slow  # 288 closes through each path: about 6 s
def test_the_one_statement_close_writes_what_the_step_by_step_close_writes(store, second_dsn):
    import itertools

    from crawlsched.state.postgres import PostgresStore

    def closes(s, through):
        said = []
        cases = itertools.product(["success", "failed", "interrupted"], [False, True], [None, 1000.004, 10.0, 5000.0],
                                  [1, 2], ["schedule", "manual"], [None, "closed", "other"])
        for i, (status, with_retry, began, number, trigger, fence) in enumerate(cases):
            job = f"j{i}"
            spec = dict(attempt(job_id=job), attempt=number, trigger=trigger)
            [row] = q.start_queued(s, [spec], DAEMON, defer, started_at=time.time())
            key = q.take_over(s, row.run_id, WORKER, "/w", started_at=1000.5)
            if i % 7 == 0:  # a row without a start time: no duration, no lateness
                s.db.write_with(lambda c: c.execute("UPDATE runs SET started_at = NULL WHERE id = ?", (row.run_id,)))
            if fence == "closed":
                q.finish_owned(s, key, WORKER, status="success", finished_at=1001.0, message="first")
            elif fence == "other":
                s.db.write_with(lambda c: c.execute("UPDATE runs SET owner_id = 'someone' WHERE id = ?", (row.run_id,)))
            retry = Retry(job, 1000.0, number + 1, JOB.max_attempts, 9000.0 + i, trigger) if with_retry else None
            said.append(q.finish_owned(through(s), key, WORKER, status=status, finished_at=1000.304, message="m",
                                       http_status=200, exit_code=0, bytes=2**40, output="out", retry=retry,
                                       started_at=began))
        return said

    def written(s):
        return {table: s.db.read_tuples(f"SELECT * FROM {table} ORDER BY {order}") for table, order in
                (("job_counters", "job_id"), ("histograms", "name, le"), ("retries", "job_id"))} | {
            "runs": s.db.read_tuples("SELECT job_id, attempt, status, started_at, finished_at, message, http_status,"
                                     " exit_code, bytes, output, lease_until IS NULL, owner_id FROM runs ORDER BY id")}

    old = PostgresStore(second_dsn).open()
    try:
        one, steps = closes(store, lambda s: s), closes(old, _StepByStep)
        assert one == steps and {Saved.SAVED, Saved.FENCED} == set(one)
        mine, theirs = written(store), written(old)
        assert mine["histograms"] and any(le == float("inf") for _, le, *_ in mine["histograms"])
        for table in mine:
            assert mine[table] == theirs[table], table
    finally:
        old.close()
