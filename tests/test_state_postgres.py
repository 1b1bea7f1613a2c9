"""The PostgreSQL store's own promises (the shared ones are tests/test_state_contract.py): its
migrations, losing the database (a real server stopped and restarted), and no password shown."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from crawlsched.errors import StateError
from crawlsched.state import MIGRATIONS, Owner, Saved, StorageUnavailable

psycopg = pytest.importorskip("psycopg")
from crawlsched.state.postgres import PostgresStore  # noqa: E402

A = Owner("daemon", None, None, "host-a")
T = 1_000_000.0
SECRET = "s3cret-pw"


def _with_password(dsn: str) -> str:
    return dsn.replace("crawlsched@", f"crawlsched:{SECRET}@")  # the test server trusts any password


def test_migrations_are_recorded_by_name_once_when_daemons_start_together(pg_dsn):
    stores, errors = [], []

    def open_one() -> None:
        try:
            stores.append(PostgresStore(pg_dsn).open())
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(stores) == 4
    names = [r[0] for r in stores[0].db.read_tuples("SELECT name FROM crawlsched_migrations ORDER BY name")]
    assert names == [name for name, _ in MIGRATIONS]
    for s in stores:
        s.close()


def test_an_unreachable_database_is_a_state_error_without_the_password(pg_cluster):
    from helpers.postgres import free_port

    dsn = f"postgresql://crawlsched:{SECRET}@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(StateError) as refused:
        PostgresStore(dsn, connect_timeout=1).open()
    assert "cannot use the state database" in str(refused.value)
    assert "postgresql://crawlsched@127.0.0.1" in str(refused.value)
    assert SECRET not in str(refused.value)


def _wait(what, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_a_lost_database_holds_the_daemons_writes_in_order_and_they_land_first_when_it_is_back(
        pg_cluster, pg_dsn, caplog):
    store = PostgresStore(_with_password(pg_dsn), pool_timeout=2, connect_timeout=2).open(recover_corrupt=True)
    key = store.start_attempt("j", T, 1, 3, trigger="schedule", started_at=T, owner=A, claim=True).key
    caplog.set_level(logging.INFO, logger="crawlsched")
    pg_cluster.stop()
    try:
        assert store.finish_attempt(key, status="success", finished_at=T + 5, message="ok") is Saved.HELD
        assert store.record_not_run("j", T + 60, "missed", "missed 1", now=T + 70, missed_count=1,
                                    first_missed=T + 60, last_missed=T + 60) is Saved.HELD
        with pytest.raises(StorageUnavailable):
            store.runs("j")
        assert store.held == 2 and not store.flush_held()
    finally:
        pg_cluster.start()
    assert _wait(store.flush_held), "the pool reconnected by itself and the held writes landed"
    closed, missed = sorted(store.runs("j"), key=lambda r: r.id)
    assert (closed.status, closed.message, missed.status) == ("success", "ok", "missed")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "one episode, logged once"
    assert "cannot be written" in errors[0].getMessage()
    assert any("takes writes again" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text
    store.close()


@pytest.mark.slow
def test_after_a_fast_restart_of_the_server_the_next_write_lands_on_a_fresh_connection(pg_cluster, pg_dsn):
    store = PostgresStore(pg_dsn, pool_timeout=5).open(recover_corrupt=True)
    store.claim_chain("before", A, T)
    pg_cluster.restart()  # pg_ctl restart -m fast: every pooled connection is cut
    assert store.record_not_run("j", T, "skipped", "busy", now=T) is Saved.SAVED
    store.claim_chain("after", A, T)
    assert [r.status for r in store.runs("j")] == ["skipped"] and store.held == 0
    store.close()


def test_every_migration_has_a_postgresql_text_and_its_number_is_its_place_in_the_list():
    from crawlsched.state.pgmigrations import PG_MIGRATIONS

    names = [name for name, _ in MIGRATIONS]
    assert names == [f"{n:03d}_{name[4:]}" for n, name in enumerate(names, 1)]
    assert set(names) <= set(PG_MIGRATIONS)


def test_an_old_sqlite_file_and_a_fresh_postgresql_database_end_with_the_same_tables_and_columns(tmp_path, pg_dsn):
    import sqlite3

    from crawlsched.state import SqliteStore

    SqliteStore(tmp_path / "s.db").open().close()
    with sqlite3.connect(tmp_path / "s.db") as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                          " AND name NOT LIKE 'sqlite_%'")]
        sqlite_cols = {t: {r[1] for r in c.execute(f"PRAGMA table_info({t})")} for t in tables}
    c.close()
    pg = PostgresStore(pg_dsn).open()
    rows = pg.db.read_tuples("SELECT table_name, column_name FROM information_schema.columns"
                             " WHERE table_schema = 'public' AND table_name != 'crawlsched_migrations'"
                             " AND table_name NOT LIKE 'procrastinate%'")  # the queue's own schema (migration 008)
    pg_cols: dict[str, set[str]] = {}
    for table, column in rows:
        pg_cols.setdefault(table, set()).add(column)
    pg_cols["jobs_seen"].discard("rowid")  # SQLite's is implicit
    assert pg_cols == sqlite_cols
    pg.close()


@pytest.mark.slow
def test_a_process_frozen_inside_a_write_holds_the_other_hosts_up_for_seconds_not_for_ever(pg_dsn):
    frozen, other = PostgresStore(pg_dsn).open(recover_corrupt=True), PostgresStore(pg_dsn).open()
    inside = threading.Event()
    outcome: list[BaseException] = []

    def freeze() -> None:
        try:
            with frozen.db.write() as c:
                c.execute("SELECT 1")
                inside.set()
                time.sleep(8)  # SIGSTOPped with the write lock held
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=freeze)
    thread.start()
    assert inside.wait(10)
    began = time.monotonic()
    other.claim_chain("j", A, T)
    waited = time.monotonic() - began
    thread.join(20)
    assert waited < 7.5, f"the other host waited {waited:.1f} s for the frozen one's lock"
    assert outcome and isinstance(outcome[0], StorageUnavailable), "the frozen write was cut, not committed late"
    frozen.close()
    other.close()
