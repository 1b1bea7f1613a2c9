"""Fixtures shared by the test modules: a private home, and the CLI run in-process.

The helpers (clock, servers, the daemon process, ``write_jobs``, the history reader) are in
``tests/helpers/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The CLI's parse cache goes to $XDG_CACHE_HOME: keep the tests' out of the user's."""
    import os

    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@dataclass
class Home:
    """A temporary crawlsched home: ``jobs.toml`` and ``crawlsched.db`` live in ``path``."""

    path: Path

    @property
    def jobs_file(self) -> Path:
        return self.path / "jobs.toml"

    @property
    def db(self) -> Path:
        return self.path / "crawlsched.db"


def _home_folder(tmp_path: Path) -> Path:
    path = tmp_path / "home"  # the test's other files stay outside it
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh, empty home folder, ``tmp_path / "home"``, for the daemon and CLI run as
    subprocesses (helpers.process) or in-process (helpers.loop). A module may extend it:
    a fixture ``home(home)`` that writes its job file first."""
    return _home_folder(tmp_path)


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    """The same home folder for the in-process CLI (the ``cli`` fixture): CRAWLSCHED_JOBS /
    CRAWLSCHED_HOME point at it, TZ is UTC, and it is the working directory."""
    home = _home_folder(tmp_path)
    monkeypatch.setenv("CRAWLSCHED_JOBS", str(home / "jobs.toml"))
    monkeypatch.setenv("CRAWLSCHED_HOME", str(home))
    monkeypatch.setenv("TZ", "UTC")  # the "machine's zone" jobs get when they name none
    monkeypatch.delenv("CRAWLSCHED_DEBUG", raising=False)
    monkeypatch.delenv("CRAWLSCHED_STATE", raising=False)  # the home's SQLite file, unless a test names another state
    monkeypatch.chdir(home)
    return Home(home)


@dataclass
class Result:
    """What one CLI invocation did."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli(tmp_home: Home) -> Callable[..., Result]:
    """Run ``crawlsched ARGS…`` in-process with typer's CliRunner: ``cli("list", "--json")``."""
    from typer.testing import CliRunner

    from crawlsched.cli import app

    runner = CliRunner()

    def invoke(*args: object, input: str | None = None) -> Result:
        result = runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return invoke


@pytest.fixture
def logger(tmp_path: Path):
    """crawlsched's logger writing its daily file under ``tmp_path`` (no stderr), closed after."""
    from crawlsched import logs

    log = logs.setup_logging(tmp_path, stderr=False)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


# --- PostgreSQL: one throwaway server per session, a fresh database per test ------------------


@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL server for the session (tests/helpers/postgres.py), stopped at the end;
    skipped with the reason where the server's binaries are not installed."""
    from helpers.postgres import find_binaries, remove_cluster, start_cluster

    if find_binaries() is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl, postgres) are not installed "
                    "(Debian: apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg 3 is not installed (pip install 'psycopg[binary]' psycopg-pool)")
    cluster = start_cluster()
    yield cluster
    remove_cluster(cluster)


@pytest.fixture
def pg_dsn(pg_cluster) -> str:
    """A fresh, empty database in the session's server (``CREATE DATABASE t_<random>``), as a libpq
    URL; dropped after the test (its connections cut first)."""
    import secrets

    import psycopg

    def admin(sql: str) -> None:  # psycopg, not psql: no process spawned per test
        with psycopg.connect(pg_cluster.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    name = f"t_{secrets.token_hex(6)}"
    admin(f"CREATE DATABASE {name}")
    yield pg_cluster.dsn(name)
    try:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except psycopg.OperationalError:
        pass  # the server is down (a test stopped it): the session's end removes it all

