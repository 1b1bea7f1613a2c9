"""The StateStore contract for many daemons on one state (SPEC §10): the daemons' rows, the one
leader lease (its epoch only grows) and the fencing of a stale leader's fires, on every store."""

from __future__ import annotations

from crawlsched.state import DaemonEntry, Leadership, Saved, StateStore, WorkerEntry
from helpers.stores import T, impl, other, start, store  # noqa: F401  (impl, store, other: fixtures)


def _lapse_leader(store: StateStore) -> None:
    """The leader lease ends a second ago by the clock that judges it (the caller's or the database's)."""
    with store.db.write() as c:  # type: ignore[attr-defined]
        c.execute("UPDATE leader SET lease_until = ? WHERE id = 1", (store.db.lease_now(c, T) - 1,))  # type: ignore[attr-defined]


def _daemon_entry(daemon_id: str, at: float = T, role: str = "standby") -> DaemonEntry:
    return DaemonEntry(daemon_id, "host-" + daemon_id, 100 + len(daemon_id), at, at, role, "d1", "/home/" + daemon_id)


def test_one_daemon_leads_and_the_others_stand_by_while_its_lease_is_live(store):
    for name in ("a", "b"):
        store.register_daemon(_daemon_entry(name))
    assert store.elect("a", T) == Leadership("leader", 1)
    assert store.elect("b", T + 1) == Leadership("standby", 1)
    assert store.elect("a", T + 2) == Leadership("leader", 1), "the holder renews, its epoch unchanged"
    assert store.elect("b", T + 3).role == "standby"
    assert [(d.id, d.role) for d in store.daemons()] == [("a", "leader"), ("b", "standby")]


def test_a_lapsed_leader_lease_passes_to_another_daemon_with_a_higher_epoch(store):
    for name in ("a", "b"):
        store.register_daemon(_daemon_entry(name))
    store.elect("a", T)
    _lapse_leader(store)
    assert store.elect("b", T + 11) == Leadership("leader", 2)
    assert store.elect("a", T + 12) == Leadership("standby", 2), "the old leader finds it lost the lease"
    assert {d.id: d.role for d in store.daemons()} == {"a": "standby", "b": "leader"}


def test_a_resigned_lease_is_taken_at_once_with_a_higher_epoch(store):
    store.elect("a", T)
    store.resign("a")
    assert store.elect("b", T + 1) == Leadership("leader", 2)


def test_a_stale_leaders_fires_are_refused_and_the_new_leaders_land(store, other):
    old, new = store, other
    old.leader_epoch = old.elect("a", T).epoch
    assert start(old, job="j", at=T, claim=False) is not None, "the leader's fire lands"
    _lapse_leader(store)
    new.leader_epoch = new.elect("b", T + 11).epoch
    assert start(old, job="j", at=T + 60, claim=False, now=T + 12) is None, "the stale epoch writes no attempt"
    assert old.record_not_run("j", T + 60, "skipped", "busy", now=T + 12) is Saved.FENCED
    assert start(new, job="j", at=T + 60, claim=False, now=T + 12) is not None
    assert new.record_not_run("j", T + 120, "missed", "missed 1", now=T + 13) is Saved.SAVED
    assert sorted((r.scheduled_for, r.status) for r in new.runs("j")) == [
        (T, "running"), (T + 60, "running"), (T + 120, "missed")]


def test_a_leader_whose_lease_lapsed_fires_nothing_until_it_renews(store):
    store.leader_epoch = store.elect("a", T).epoch
    _lapse_leader(store)
    assert start(store, job="j", at=T + 20, claim=False, now=T + 20) is None
    assert store.elect("a", T + 21) == Leadership("leader", 1), "nobody took it: it renews with its epoch"
    assert start(store, job="j", at=T + 20, claim=False, now=T + 21) is not None


def test_a_store_without_a_leader_epoch_is_not_fenced(store):
    store.elect("a", T)
    _lapse_leader(store)
    assert start(store, job="j", at=T, claim=False) is not None  # `crawlsched run`, a check: not a leader's fire


def test_daemon_rows_follow_heartbeats_and_stops(store):
    store.register_daemon(_daemon_entry("a"))
    store.daemon_beat("a", T + 5, jobs_digest="d2")
    store.daemon_beat("a", T + 9, stopped=True)
    (row,) = store.daemons()
    assert isinstance(row, DaemonEntry)
    assert (row.host, row.heartbeat, row.jobs_digest, row.stopped_at, row.home) == ("host-a", T + 9, "d2", T + 9, "/home/a")
    assert store.forget_daemons(T + 10) == 1 and store.daemons() == []


def test_workers_are_listed_and_none_before_any_registered(store):
    assert store.workers() == [] or all(isinstance(w, WorkerEntry) for w in store.workers())
