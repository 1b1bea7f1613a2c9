"""Queued rows taken over several in one write, and rows queued ahead recalled, against a real
PostgreSQL database (crawlsched.state.takeover)."""

from __future__ import annotations

import threading
import time

import pytest

from crawlsched.executor import AttemptSpec, spec_to_json
from crawlsched.model import Job, ScheduleKind
from crawlsched.state import CLAIM_DAEMON, Owner
from crawlsched.state import queue as q
from crawlsched.state.takeover import recall_ahead, take_over_many
from crawlsched.workers.queue import defer

DAEMON = Owner(CLAIM_DAEMON, 4242, "boot/1", "daemon-host")
WORKER = Owner("worker", 777, "boot/2", "worker-host")
OTHER = Owner("worker", 778, "boot/3", "other-host")
JOB = Job(id="j", name="j", kind=ScheduleKind.EVERY, spec="1h", timezone="UTC", command="true")


@pytest.fixture
def store(pg_dsn):
    from crawlsched.state.postgres import PostgresStore

    s = PostgresStore(pg_dsn).open()
    yield s
    s.close()


def queue(store, job_ids: list[str], scheduled_for: float = 1000.0) -> list[int]:
    items = [{"job_id": j, "scheduled_for": scheduled_for, "attempt": 1, "max_attempts": 1, "trigger": "schedule",
              "payload": {"spec": spec_to_json(AttemptSpec.of(JOB, scheduled_for, 1, "schedule")), "grace": 30.0}}
             for j in job_ids]
    return [r.run_id for r in q.start_queued(store, items, DAEMON, defer, started_at=time.time())]


def test_rows_taken_over_in_one_write_each_get_the_worker_a_lease_a_new_epoch_and_the_take_overs_instant(store):
    ids = queue(store, ["a", "b", "c"])
    epochs = {r.id: r.epoch for j in "abc" for r in store.runs(j)}
    before = store.db.clock()
    keys = take_over_many(store, ids, WORKER, "/srv/w")
    after = store.db.clock()
    assert sorted(keys) == sorted(ids)
    for run_id, key in keys.items():
        [row] = [r for j in "abc" for r in store.runs(j) if r.id == run_id]
        assert (row.owner_pid, row.owner_host, row.run_home) == (777, "worker-host", "/srv/w")
        assert key.epoch == row.epoch > epochs[run_id]
        assert before <= row.started_at == key.started_at <= after  # when it was taken over, not when queued
        [(lease,)] = store.db.read_tuples("SELECT lease_until FROM runs WHERE id = ?", (run_id,))
        assert lease > after


def test_two_workers_racing_for_the_same_rows_give_each_row_one_owner(store, pg_dsn):
    from crawlsched.state.postgres import PostgresStore

    ids = queue(store, [f"j{i}" for i in range(30)])
    other = PostgresStore(pg_dsn).open()
    got: dict[str, dict] = {}
    start = threading.Barrier(2)

    def take(name: str, s, owner: Owner) -> None:
        start.wait()
        got[name] = {}
        for i in range(0, len(ids), 5):  # in overlapping batches, as two workers' groups would
            got[name].update(take_over_many(s, ids[i:i + 10], owner, f"/{name}"))

    try:
        threads = [threading.Thread(target=take, args=("w1", store, WORKER)),
                   threading.Thread(target=take, args=("w2", other, OTHER))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        other.close()
    assert not set(got["w1"]) & set(got["w2"])
    assert set(got["w1"]) | set(got["w2"]) == set(ids)
    owners = {r.id: r.owner_pid for i in range(30) for r in store.runs(f"j{i}")}
    assert all(owners[i] == 777 for i in got["w1"]) and all(owners[i] == 778 for i in got["w2"])


def test_a_row_recalled_before_its_instant_is_skipped_and_no_worker_takes_it_over(store):
    ahead = store.db.clock() + 60
    [early, due] = queue(store, ["early"], ahead) + queue(store, ["due"], 1000.0)
    closed = recall_ahead(store, [early, due], "skipped: paused before its instant", finished_at=time.time())
    assert closed == [early]  # the one already due is left to run
    [row] = store.runs("early")
    assert (row.status, row.message) == ("skipped", "skipped: paused before its instant")
    assert take_over_many(store, [early], WORKER, "/w") == {}  # the worker holding its job drops it
    assert [k for k in q.drain_closed(store)] and store.runs("due")[0].status == "running"


def test_a_row_taken_over_is_not_recalled(store):
    [run_id] = queue(store, ["j"], store.db.clock() + 60)
    assert take_over_many(store, [run_id], WORKER, "/w")
    assert recall_ahead(store, [run_id], "skipped", finished_at=time.time()) == []
    assert store.runs("j")[0].status == "running"


def test_a_row_taken_over_with_its_held_command_records_the_commands_group_in_the_same_write(store):
    ids = queue(store, ["a", "b"])
    keys = take_over_many(store, ids, WORKER, "/srv/w", children={ids[0]: (4321, "boot/9")})
    assert sorted(keys) == sorted(ids)
    got = dict(((r[0], (r[1], r[2])) for r in store.db.read_tuples(
        "SELECT id, child_pgid, child_ident FROM runs WHERE id = ANY(?)", (ids,))))
    assert got == {ids[0]: (4321, "boot/9"), ids[1]: (None, None)}


def test_a_refused_row_records_no_group(store):
    [run_id] = queue(store, ["a"])
    assert take_over_many(store, [run_id], WORKER, "/srv/w") != {}
    assert take_over_many(store, [run_id], OTHER, "/srv/o", children={run_id: (99, "boot/8")}) == {}
    assert store.db.read_tuples("SELECT child_pgid FROM runs WHERE id = ?", (run_id,)) == [(None,)]


def test_a_row_taken_over_just_before_its_instant_is_shown_started_at_its_instant(store):
    due = round(time.time()) + 30.0
    [run_id] = queue(store, ["a"], scheduled_for=due)
    keys = take_over_many(store, [run_id], WORKER, "/srv/w")
    [row] = store.runs("a")
    assert row.started_at == keys[run_id].started_at == due  # its worker lets it go then, not at the write
