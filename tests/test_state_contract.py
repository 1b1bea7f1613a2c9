"""The StateStore contract (SPEC §4, §6 at the store level), for every implementation.

Each test runs against each store (ids: ``sqlite``, ``postgresql`` on a throwaway server;
helpers.stores). Owners here live on no host of this machine, so every store judges them by
their lease alone. Times are fixed instants passed as ``now``; a lease is ended by
``impl.lapse`` (its end moved into the past), so a store that judges leases by its own clock
(the database's) passes the same tests. The few that check the caller's ``now`` against a
lease's end run only where the store uses that clock (``impl.caller_clock``).
"""

from __future__ import annotations

import inspect

import pytest

from crawlsched.errors import ChainBusy
from crawlsched.state import AttemptKey, DaemonInfo, JobSeen, Retry, Saved, StateStore
from helpers.stores import A, B, T, TTL, impl, only_run, start, store  # noqa: F401  (impl, store: fixtures)


def test_the_store_has_every_operation_of_the_protocol(store):
    operations = [name for name in vars(StateStore) if not name.startswith("_")]
    assert len(operations) > 40
    missing = [name for name in operations if not hasattr(store, name)]
    assert missing == []
    for name in operations:
        wanted = vars(StateStore)[name]
        if inspect.isfunction(wanted):
            params = set(inspect.signature(wanted).parameters) - {"self"}
            assert params <= set(inspect.signature(getattr(store, name)).parameters), name


# --- attempts ------------------------------------------------------------------


def test_an_attempt_is_recorded_running_before_it_starts(store):
    started = start(store)
    row = only_run(store)
    assert (row.id, row.status, row.attempt, row.max_attempts, row.started_at) == (started, "running", 1, 3, T)
    assert store.job_states(["j"], now=T + 1)["j"].running
    assert store.job_states(["j"], now=T + 1)["j"].last_attempt == row


def test_an_attempt_is_unique_per_job_scheduled_time_and_attempt(store):
    assert start(store) is not None
    assert start(store) is None, "the same attempt never starts twice"
    assert start(store, attempt=2) is not None
    assert start(store, job="other") is not None
    assert start(store, at=T + 60) is not None
    assert len(store.runs("j")) == 3


def test_finishing_closes_the_attempt_and_saves_its_retry_in_the_same_write(store):
    key = start(store).key
    retry = Retry("j", T, 2, 3, T + 300, "schedule")
    assert store.finish_attempt(key, status="failed", finished_at=T + 5, message="HTTP 500", http_status=500,
                                retry=retry) is Saved.SAVED
    row = only_run(store)
    assert (row.status, row.finished_at, row.message, row.http_status) == ("failed", T + 5, "HTTP 500", 500)
    assert store.retries() == [retry]
    assert not store.job_states(["j"], now=T + 6)["j"].running


def test_a_row_written_ahead_of_its_instant_closes_with_when_it_really_began(store):
    key = start(store).key  # written at its instant T, before its command was let go
    store.finish_attempt(key, status="success", finished_at=T + 5, message="ok", started_at=T + 0.002)
    row = only_run(store)
    assert (row.started_at, row.finished_at, row.status) == (T + 0.002, T + 5, "success")


def test_finishing_by_key_writes_a_vanished_row_again_closed(store, impl):
    key = start(store).key
    impl.drop_rows(store, "j")
    assert store.runs("j") == []
    store.finish_attempt(key, status="success", finished_at=T + 5, message="ok", bytes=10)
    row = only_run(store)
    assert (row.attempt, row.scheduled_for, row.started_at, row.status, row.bytes) == (1, T, T, "success", 10)
    assert store.job_states(["j"])["j"].last_attempt == row


def test_a_saved_retry_is_resumed_once(store):
    key = start(store).key
    store.finish_attempt(key, status="failed", finished_at=T + 1, message="no",
                         retry=Retry("j", T, 2, 3, T + 60, "schedule"))
    assert [r.next_attempt for r in store.retries()] == [2]
    assert start(store, attempt=2, now=T + 60) is not None
    assert store.retries() == [], "starting the retry's attempt takes the retry"
    assert start(store, attempt=2, now=T + 61) is None, "and it never runs twice"


def test_a_cleared_retry_is_gone(store):
    store.save_retry(Retry("j", T, 2, 3, T + 60, "schedule"))
    store.clear_retry("j")
    assert store.retries() == []


def test_chain_outcomes_say_success_open_or_failed_over_all_attempts(store):
    store.finish_attempt(start(store, job="ok").key, status="failed", finished_at=T + 1, message="x")
    store.finish_attempt(start(store, job="ok", attempt=2).key, status="success", finished_at=T + 2, message="y")
    store.finish_attempt(start(store, job="bad").key, status="failed", finished_at=T + 1, message="x")
    start(store, job="busy")
    store.finish_attempt(start(store, job="waits").key, status="failed", finished_at=T + 1, message="x",
                         retry=Retry("waits", T, 2, 3, T + 60, "schedule"))
    got = store.chain_outcomes([("ok", T), ("bad", T), ("busy", T), ("waits", T)])
    assert got == {("ok", T): "success", ("bad", T): "failed", ("busy", T): "open", ("waits", T): "open"}


# --- fires that did not run --------------------------------------------------------


def test_skipped_and_missed_fires_are_rows_of_attempt_0(store):
    store.record_not_run("j", T, "skipped", "still running", now=T)
    store.record_not_run("j", T + 300, "missed", "missed 3 fires", now=T + 400, missed_count=3,
                         first_missed=T + 100, last_missed=T + 300)
    missed, skipped = store.runs("j")
    assert (skipped.attempt, skipped.status, skipped.message) == (0, "skipped", "still running")
    assert (missed.attempt, missed.status, missed.missed_count, missed.first_missed, missed.last_missed) == (
        0, "missed", 3, T + 100, T + 300)
    assert store.job_states(["j"])["j"].last_fire == T + 300
    marks = {(m.status, m.scheduled_for) for m in store.fire_marks_after(T + 200)}
    assert marks == {("missed", T + 300)}


# --- jobs seen, anchors ---------------------------------------------------------------


def test_ids_seen_are_remembered_and_an_anchor_is_kept_once_set(store):
    store.remember_id("cli-added", T)
    assert store.known_id("cli-added") and not store.known_id("never")
    store.mark_seen("e", T, anchor=T + 10)
    store.mark_seen("e", T + 99, anchor=T + 20)
    seen = store.seen()
    assert isinstance(seen["e"], JobSeen)
    assert (seen["e"].first_seen, seen["e"].daemon_seen, seen["e"].anchor) == (T, T, T + 10)
    assert seen["cli-added"].daemon_seen is None, "added by the CLI: not yet seen by the daemon"
    store.reset_anchor("e", T + 30)
    assert store.seen()["e"].anchor == T + 30
    store.restore_seen([("e", T + 50, None, T + 40), ("lost", T + 50, T + 5, T + 45)])
    after = store.seen()
    assert (after["e"].anchor, after["e"].last_fire) == (T + 30, T + 40)
    assert (after["lost"].daemon_seen, after["lost"].anchor, after["lost"].last_fire) == (T + 50, T + 5, T + 45)


# --- leases and fencing ------------------------------------------------------------------


def test_a_second_claimer_is_refused_while_the_lease_is_live(store):
    lease = store.claim_chain("j", A, T, ttl=TTL)
    with pytest.raises(ChainBusy) as refused:
        store.claim_chain("j", B, T + TTL - 1, ttl=TTL)
    assert refused.value.claim.epoch == lease.epoch
    assert "the daemon (on host-a) is running it" in str(refused.value)
    assert store.claim("j", now=T + 1).epoch == lease.epoch


def test_the_owner_claiming_again_keeps_its_lease_and_epoch(store, impl):
    first = store.claim_chain("j", A, T, ttl=TTL)
    again = store.claim_chain("j", A, T + 10, ttl=TTL)
    assert again.epoch == first.epoch
    if impl.caller_clock:
        assert again.until == T + 10 + TTL
    else:  # by the database's clock: renewed from its own now
        assert first.until < again.until <= store.clock() + TTL  # type: ignore[attr-defined]


def test_a_lapsed_lease_is_taken_over_with_a_higher_epoch(store, impl):
    first = store.claim_chain("j", A, T, ttl=TTL)
    impl.lapse(store, A)
    assert store.claim("j", now=T + TTL + 1) is None
    second = store.claim_chain("j", B, T + TTL + 1, ttl=TTL)
    assert second.epoch > first.epoch and second.owner == B


def test_a_lease_ends_at_its_time_unless_renewed(store, impl):
    if not impl.caller_clock:
        pytest.skip("this store ends leases by its own clock")
    store.claim_chain("j", A, T, ttl=TTL)
    store.renew_leases(A, T + 25, ttl=TTL)
    with pytest.raises(ChainBusy):
        store.claim_chain("j", B, T + 40, ttl=TTL)
    assert store.claim_chain("j", B, T + 25 + TTL + 1, ttl=TTL).owner == B


def test_a_released_chain_is_free_at_once_and_the_next_claim_has_a_higher_epoch(store):
    first = store.claim_chain("j", A, T, ttl=TTL)
    store.release_chains(["j"], B)  # not B's: nothing happens
    with pytest.raises(ChainBusy):
        store.claim_chain("j", B, T + 1, ttl=TTL)
    store.release_chains(["j"], A)
    assert store.claim("j", now=T + 1) is None
    assert store.claim_chain("j", B, T + 2, ttl=TTL).epoch > first.epoch


def test_claiming_many_chains_reports_the_ones_held_by_others(store):
    store.claim_chain("held", A, T, ttl=TTL)
    blocked = store.claim_chains(["held", "free"], B, T + 1, ttl=TTL)
    assert list(blocked) == ["held"]
    with pytest.raises(ChainBusy):
        store.claim_chain("free", A, T + 2, ttl=TTL)


def test_an_attempt_started_with_a_claim_is_refused_while_another_holds_the_chain(store):
    store.claim_chain("j", A, T, ttl=TTL)
    with pytest.raises(ChainBusy):
        start(store, owner=B, now=T + 1)
    assert store.runs("j") == [], "nothing written"


def test_a_renewed_lease_stays_live_until_it_lapses(store, impl):
    store.claim_chain("j", A, T, ttl=TTL)
    store.renew_leases(A, T + 25, ttl=TTL)
    with pytest.raises(ChainBusy):
        store.claim_chain("j", B, T + 26, ttl=TTL)
    impl.lapse(store, A)
    assert store.claim_chain("j", B, T + 27, ttl=TTL).owner == B


def test_the_daemons_heartbeat_renews_its_leases(store):
    store.daemon_started(A.pid, A.host, "1.0", T)  # the daemon is owner A
    store.claim_chain("j", A, T, ttl=TTL)
    store.heartbeat(T + 25, ttl=TTL)
    with pytest.raises(ChainBusy):
        store.claim_chain("j", B, T + TTL + 10, ttl=TTL)


def test_a_stale_owners_writes_are_fenced_once_another_claimed_the_chain(store, impl):
    key = start(store, owner=A).key
    assert key.epoch is not None
    impl.lapse(store, A)
    store.claim_chain("j", B, T + TTL + 1, ttl=TTL)  # A froze past its lease; B took the chain
    retry = Retry("j", T, 2, 3, T + 500, "schedule")
    assert store.finish_attempt(key, status="success", finished_at=T + 100, message="late", retry=retry) is Saved.FENCED
    assert store.set_child(key, 4242, None) is Saved.FENCED
    row = only_run(store)
    assert (row.status, row.message, row.child_pgid) == ("running", None, None), "nothing the zombie wrote landed"
    assert store.retries() == []


def test_a_write_with_the_current_epoch_lands(store):
    key = start(store, owner=A).key
    store.claim_chain("j", A, T + 10, ttl=TTL)  # renewing: same epoch
    assert store.finish_attempt(key, status="success", finished_at=T + 11, message="ok") is Saved.SAVED


def test_a_running_attempt_counts_as_elsewhere_only_while_its_lease_is_live(store, impl):
    start(store, owner=A)
    assert store.running_elsewhere("j", B, now=T + 1).job_id == "j"
    assert store.running_elsewhere("j", A, now=T + 1) is None, "not elsewhere for its own owner"
    assert store.stale_running(B, now=T + 1) == []
    impl.lapse(store, A)
    assert store.running_elsewhere("j", B, now=T + TTL + 1) is None
    assert [r.job_id for r in store.stale_running(B, now=T + TTL + 1)] == ["j"]
    assert not store.job_states(["j"], now=T + TTL + 1)["j"].running


def test_a_settled_row_closes_whoever_holds_the_chain_now(store, impl):
    start(store, owner=A)
    impl.lapse(store, A)
    store.claim_chain("j", B, T + TTL + 1, ttl=TTL)
    (stale,) = store.stale_running(B, now=T + TTL + 1)
    assert store.finish_attempt(AttemptKey.of(stale), status="interrupted", finished_at=T + TTL + 2,
                                message="interrupted") is Saved.SAVED
    assert only_run(store).status == "interrupted"


# --- the daemon's row and run-now requests ------------------------------------------------


def test_the_daemon_row_is_typed_and_follows_each_operation(store):
    assert store.daemon_started(123, "h", "1.0", T) is None
    store.daemon_ready(T + 1, http="http://127.0.0.1:5000", handled_until=T, next_job="a", next_due=T + 60)
    store.heartbeat(T + 30, handled_until=T + 29, next_job="b", next_due=T + 90)
    store.config_status("jobs.toml:1: broken")
    row = store.daemon()
    assert isinstance(row, DaemonInfo)
    assert (row.pid, row.host, row.started_at, row.heartbeat, row.handled_until, row.http) == (
        123, "h", T, T + 30, T + 29, "http://127.0.0.1:5000")
    assert (row.config_ok, row.config_error, row.next_job, row.next_due) == (0, "jobs.toml:1: broken", "b", T + 90)
    store.daemon_stopped(T + 40, handled_until=T + 40)
    assert (store.daemon().stopped_at, store.daemon().handled_until) == (T + 40, T + 40)
    previous = store.daemon_started(124, "h", "1.0", T + 50)
    assert (previous.pid, previous.stopped_at) == (123, T + 40)
    assert store.daemon().stopped_at is None


def test_run_now_requests_are_taken_once(store):
    first = store.request_run("a", T)
    second = store.request_run("b", T + 1, source="api")
    assert store.count_requests(pending=True) == 2
    assert not store.request_taken(first)
    assert [(r.id, r.job_id) for r in store.take_requests(T + 2)] == [(first, "a"), (second, "b")]
    assert store.take_requests(T + 3) == []
    assert store.request_taken(first) and store.request_taken(second)
    assert (store.count_requests(), store.count_requests(pending=True)) == (2, 0)


# --- pruning and the metrics totals ---------------------------------------------------------


def _finished(store, job, at, status="success"):
    store.finish_attempt(start(store, job=job, at=at, of=1).key, status=status, finished_at=at + 1, message=status)


def test_pruning_keeps_a_running_attempt_and_each_jobs_newest(store):
    for n in range(3):
        _finished(store, "a", T + n)
    running = start(store, job="b", at=T + 5, of=1)
    _finished(store, "lone", T + 6)
    _finished(store, "a", T + 100)
    deleted, after = store.prune_history(0, older_than=T + 50)
    assert deleted == 3 and after is None
    assert sorted((r.job_id, r.scheduled_for) for r in store.runs(limit=100)) == [
        ("a", T + 100), ("b", T + 5), ("lone", T + 6)]
    assert store.run(running).status == "running"


def test_metrics_totals_follow_each_history_row_and_not_pruning(store):
    _finished(store, "a", T, "success")
    _finished(store, "a", T + 10, "failed")
    store.record_not_run("a", T + 20, "skipped", "busy", now=T + 20)
    store.record_not_run("a", T + 30, "missed", "missed 4", now=T + 30, missed_count=4, first_missed=T + 21,
                         last_missed=T + 30)
    start(store, job="a", at=T + 40, of=1)
    counters, seq = store.metric_counters()
    success, failed, interrupted, skipped, missed, last_ok, last_bad = counters["a"]
    assert (success, failed, interrupted, skipped, missed, last_ok, last_bad) == (1, 1, 0, 1, 4, T + 1, T + 11)
    assert store.metric_counters(seq) == ({}, seq), "nothing changed since"
    assert store.metric_gauges()["attempts_running"] == 1
    assert sum(n for _, n, _ in store.metric_histograms()["attempt_duration"]) == 2
    store.prune_history(0, older_than=T + 1000)
    assert store.metric_counters()[0]["a"] == counters["a"]


def test_run_ids_outside_the_64_bit_range_name_no_run(store):
    """An id past what a history row can have (a hostile URL) is simply not there, on every store."""
    start(store)
    newest = store.newest_run_id()
    for huge in (2**63, 2**64 + 5, 10**40, -(2**63) - 1):
        assert store.run(huge) is None
        assert store.existing_run_ids([newest, huge]) == {newest}
    assert [r.id for r in store.job_rows_before("j", 10**40, 10)] == [newest]
    assert [r.id for r in store.job_strip_rows("j", 10**40, 10)] == [newest]
