"""The state stores the contract suite runs on (tests/test_state_contract*.py): each one's ``Impl``
(how to make it, make its rows vanish, lapse an owner's leases, whether it judges leases by the
caller's ``now``, a second store on the same state), and the fixtures ``impl``, ``store``, ``other``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from crawlsched.state import Owner, Run, SqliteStore, StateStore

A = Owner("daemon", None, None, "host-a")
B = Owner("daemon", None, None, "host-b")
T = 1_000_000.0  # a fixed instant
TTL = 30.0


@dataclass
class Impl:
    make: Callable[[pytest.FixtureRequest, Path], StateStore]  # (the test's request, for fixtures; a temp folder)
    drop_rows: Callable[[StateStore, str], None]  # the rows of a job vanish (a file replaced, a restore)
    lapse: Callable[[StateStore, Owner], None]  # the owner's leases end (it froze, was cut off)
    caller_clock: bool  # leases end by the ``now`` callers pass (not by the database's clock)
    again: Callable[[StateStore], StateStore]  # another store on the same state (another process or host)


def _sqlite(store: StateStore, sql: str, params: tuple) -> None:
    with sqlite3.connect(store.path) as c:  # type: ignore[attr-defined]
        c.execute(sql, params)
    c.close()


def _pg_store(request: pytest.FixtureRequest, folder: Path) -> StateStore:
    from crawlsched.state.postgres import PostgresStore

    return PostgresStore(request.getfixturevalue("pg_dsn")).open()


def _pg(store: StateStore, sql: str, params: tuple) -> None:
    import psycopg

    with psycopg.connect(store.db.dsn, autocommit=True) as c:  # type: ignore[attr-defined]
        c.execute(sql.replace("?", "%s"), params)


def _pg_lapse(store: StateStore, owner: Owner) -> None:
    """The owner's leases end a second ago by the database's clock (what judges them there)."""
    _pg(store, "UPDATE chain_claims SET lease_until = extract(epoch from clock_timestamp()) - 1"
        " WHERE owner_id = ? AND lease_until IS NOT NULL", (owner.id,))
    _pg(store, "UPDATE runs SET lease_until = extract(epoch from clock_timestamp()) - 1 WHERE owner_id = ?", (owner.id,))


IMPLEMENTATIONS = {
    "sqlite": Impl(
        make=lambda request, folder: SqliteStore(folder / "state.db").open(),
        drop_rows=lambda store, job_id: _sqlite(store, "DELETE FROM runs WHERE job_id = ?", (job_id,)),
        lapse=lambda store, owner: (
            _sqlite(store, "UPDATE chain_claims SET lease_until = 0 WHERE owner_id = ? AND lease_until IS NOT NULL",
                    (owner.id,)),
            _sqlite(store, "UPDATE runs SET lease_until = 0 WHERE owner_id = ?", (owner.id,))),
        caller_clock=True,
        again=lambda store: SqliteStore(store.path).open(),  # type: ignore[attr-defined]
    ),
    "postgresql": Impl(
        make=_pg_store,
        drop_rows=lambda store, job_id: _pg(store, "DELETE FROM runs WHERE job_id = ?", (job_id,)),
        lapse=_pg_lapse,
        caller_clock=False,
        again=lambda store: type(store)(store.db.dsn).open(),  # type: ignore[attr-defined]
    ),
}


@pytest.fixture(params=list(IMPLEMENTATIONS), ids=list(IMPLEMENTATIONS))
def impl(request) -> Impl:
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def store(impl, request, tmp_path) -> StateStore:
    s = impl.make(request, tmp_path)
    yield s
    s.close()


@pytest.fixture
def other(impl, store) -> StateStore:
    """A second store on the same state, as another daemon (another host) has."""
    s = impl.again(store)
    yield s
    s.close()


def start(store: StateStore, job="j", at=T, attempt=1, of=3, owner=A, claim=True, now=None):
    return store.start_attempt(job, at, attempt, of, trigger="schedule", started_at=now if now is not None else at,
                               owner=owner, claim=claim, ttl=TTL)


def only_run(store: StateStore, job="j") -> Run:
    rows = store.runs(job)
    assert len(rows) == 1
    return rows[0]
