"""Choosing and opening the state (crawlsched/state/open.py): $CRAWLSCHED_STATE, [defaults] state, the SQLite file."""

from __future__ import annotations

import sys
import types

import pytest

from crawlsched.errors import InvalidValue, StateError
from crawlsched.state import SqliteStore
from crawlsched.state.open import check_executor, choose_state, open_state, redact_dsn

PG = "postgresql://crawlsched:hunter2@db.internal/crawlsched"


class FakePostgresStore:
    """Stands in for crawlsched.state.postgres.PostgresStore: records what it was given."""

    made: list[str] = []

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.opened = False
        FakePostgresStore.made.append(dsn)

    def open(self, *, recover_corrupt: bool = False):
        self.opened = True
        return self


class UnreachablePostgresStore(FakePostgresStore):
    def open(self, *, recover_corrupt: bool = False):
        raise OSError(f'connection to "{self.dsn}" failed: password hunter2 was refused, port 1 closed')


@pytest.fixture
def fake_pg(monkeypatch):
    module = types.ModuleType("crawlsched.state.postgres")
    module.PostgresStore = FakePostgresStore
    monkeypatch.setitem(sys.modules, "crawlsched.state.postgres", module)
    FakePostgresStore.made = []
    return module


def test_without_a_state_setting_it_is_the_homes_sqlite_file(tmp_path):
    store = open_state(tmp_path, None, environ={})
    try:
        assert isinstance(store, SqliteStore) and store.path == tmp_path / "crawlsched.db"
        assert (tmp_path / "crawlsched.db").exists()
    finally:
        store.close()
    assert choose_state(tmp_path, None, {}).label == str(tmp_path / "crawlsched.db")


def test_the_environment_variable_wins_over_the_job_file(tmp_path):
    choice = choose_state(tmp_path, "postgresql://file@db/a", {"CRAWLSCHED_STATE": "postgresql://env@db/b"})
    assert (choice.dsn, choice.source) == ("postgresql://env@db/b", "$CRAWLSCHED_STATE")
    choice = choose_state(tmp_path, "postgresql://file@db/a", {"CRAWLSCHED_STATE": "  "})  # empty: not set
    assert (choice.dsn, choice.source) == ("postgresql://file@db/a", "defaults.state")


def test_a_bad_environment_state_is_refused_naming_the_variable(tmp_path):
    with pytest.raises(InvalidValue) as caught:
        choose_state(tmp_path, None, {"CRAWLSCHED_STATE": "mysql://u:hunter2@db/x"})
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("$CRAWLSCHED_STATE: ") and "hunter2" not in str(caught.value)


def test_a_postgresql_state_gives_the_postgres_store_with_the_dsn_expanded(tmp_path, fake_pg):
    store = open_state(tmp_path, "postgresql://u:${PGPASS}@db/x", environ={"PGPASS": "hunter2"})
    assert isinstance(store, FakePostgresStore) and store.opened
    assert store.dsn == "postgresql://u:hunter2@db/x"
    assert not (tmp_path / "crawlsched.db").exists(), "no SQLite file besides a PostgreSQL state"
    daemon = open_state(tmp_path, "host=db dbname=x", daemon=True, environ={})
    assert isinstance(daemon, FakePostgresStore) and not daemon.opened, "the daemon opens its store itself"


def test_a_daemon_gets_its_sqlite_store_unopened(tmp_path):
    store = open_state(tmp_path, None, daemon=True, environ={})
    assert isinstance(store, SqliteStore) and not (tmp_path / "crawlsched.db").exists()


def test_an_unset_variable_in_the_dsn_is_named_never_its_value(tmp_path, fake_pg):
    with pytest.raises(InvalidValue) as caught:
        open_state(tmp_path, "postgresql://u:${PGPASS}@${PGHOST}/x", environ={"PGPASS": "hunter2"})
    message = str(caught.value)
    assert "PGHOST" in message and "defaults.state" in message and "hunter2" not in message
    assert FakePostgresStore.made == []


def test_without_the_postgres_module_the_error_says_what_is_needed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "crawlsched.state.postgres", None)  # import fails
    with pytest.raises(StateError) as caught:
        open_state(tmp_path, PG, environ={})
    message = str(caught.value)
    assert message.startswith("PostgreSQL state needs ") and "psycopg" in message
    assert redact_dsn(PG) in message and "hunter2" not in message


def test_a_state_that_cannot_be_opened_is_one_error_without_the_password(tmp_path, fake_pg):
    fake_pg.PostgresStore = UnreachablePostgresStore
    with pytest.raises(StateError) as caught:
        open_state(tmp_path, None, environ={"CRAWLSCHED_STATE": PG})
    message = str(caught.value)
    assert "hunter2" not in message and "port 1 closed" in message
    assert "postgresql://crawlsched@db.internal/crawlsched" in message and "$CRAWLSCHED_STATE" in message


def test_workers_need_a_postgresql_state(tmp_path):
    check_executor("local", choose_state(tmp_path, None, {}))
    check_executor("workers", choose_state(tmp_path, "postgresql://db/x", {}))
    check_executor("workers", choose_state(tmp_path, None, {"CRAWLSCHED_STATE": "postgresql://db/x"}))
    with pytest.raises(InvalidValue) as caught:
        check_executor("workers", choose_state(tmp_path, None, {}))
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert message.startswith('defaults.executor: "workers" needs a PostgreSQL state')
    assert "CRAWLSCHED_STATE" in message and "[defaults] state" in message
