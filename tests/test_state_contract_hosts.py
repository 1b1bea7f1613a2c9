"""The StateStore contract for many processes, or hosts, on one state: two stores on the same
SQLite file or PostgreSQL database (helpers.stores), as two daemons have."""

from __future__ import annotations

import threading

import pytest

from crawlsched.errors import ChainBusy
from crawlsched.state import Owner, StateStore
from helpers.stores import A, B, T, TTL, impl, other, start, store  # noqa: F401  (impl, store, other: fixtures)

def test_a_claim_through_one_store_blocks_another_store_on_the_same_state(store, other, impl):
    lease = store.claim_chain("j", A, T, ttl=TTL)
    with pytest.raises(ChainBusy) as refused:
        other.claim_chain("j", B, T + 1, ttl=TTL)
    assert refused.value.claim.epoch == lease.epoch
    with pytest.raises(ChainBusy):
        start(other, owner=B, now=T + 2)
    impl.lapse(store, A)
    assert other.claim_chain("j", B, T + TTL + 1, ttl=TTL).epoch > lease.epoch


def test_racing_stores_claim_each_chain_and_start_each_attempt_once(store, other):
    jobs = [f"job-{n}" for n in range(15)]
    won: dict[str, list[str]] = {"a": [], "b": []}
    started: dict[str, list[str]] = {"a": [], "b": []}
    gate = threading.Barrier(2)

    def race(name: str, s: StateStore, owner: Owner) -> None:
        gate.wait()
        for job in jobs:
            try:
                s.claim_chain(job, owner, T, ttl=TTL)
                won[name].append(job)
            except ChainBusy:
                pass
            if start(s, job=job, at=T + 60, owner=owner, claim=False) is not None:
                started[name].append(job)

    threads = [threading.Thread(target=race, args=("a", store, A)), threading.Thread(target=race, args=("b", other, B))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(won["a"] + won["b"]) == sorted(jobs), "each chain claimed by exactly one of them"
    assert sorted(started["a"] + started["b"]) == sorted(jobs), "each attempt started exactly once"
    assert len(store.runs(limit=100)) == len(jobs)


def test_the_databases_clock_decides_a_lease_not_the_callers_now(store, other, impl):
    if impl.caller_clock:
        pytest.skip("this store ends leases by the now its callers pass")
    store.claim_chain("j", A, T, ttl=TTL)  # a host whose clock says 1970
    with pytest.raises(ChainBusy):
        other.claim_chain("j", B, T + 10**9, ttl=TTL)  # a host whose clock runs decades ahead
    start(store, job="k", owner=A, claim=False)
    assert other.running_elsewhere("k", B, now=T + 10**9) is not None, "its attempt's lease is live"
    assert other.stale_running(B, now=T + 10**9) == []
