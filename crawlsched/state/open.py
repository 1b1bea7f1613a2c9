"""Which state a command or a daemon uses, and opening it (SPEC §10).

``$CRAWLSCHED_STATE`` wins over ``[defaults] state``; either names a PostgreSQL
database (a libpq URL or ``key=value`` conninfo, ``${VAR}`` allowed). With
neither, the state is the home's SQLite file, as it always was. The DSN is kept
as written and expanded here, at the moment of opening; every message shows it
through :func:`redact_dsn` (and, as a last guard, with every expanded value and
password blanked), never expanded.

The PostgreSQL store is imported only when a PostgreSQL state is chosen: the
CLI's and the SQLite daemon's paths never load psycopg.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from crawlsched.dsn import check_dsn, expand_dsn, redact_dsn, secrets_of
from crawlsched.errors import InvalidValue, MissingVariable, StateError

if TYPE_CHECKING:
    from crawlsched.state.protocol import StateStore

__all__ = ["ENV_VAR", "SQLITE_FILE", "StateChoice", "check_executor", "choose_state", "open_state", "redact_dsn",
           "store_for"]

ENV_VAR = "CRAWLSCHED_STATE"
SQLITE_FILE = "crawlsched.db"
PG_MODULE = "crawlsched.state.postgres"


@dataclass(frozen=True)
class StateChoice:
    """The state chosen: a PostgreSQL DSN as written (``dsn``, with where it came from), or the home's SQLite file."""

    path: Path  # the home's SQLite file (the state when ``dsn`` is None)
    dsn: str | None = None
    source: str | None = None  # "$CRAWLSCHED_STATE" or "defaults.state"

    @property
    def postgres(self) -> bool:
        return self.dsn is not None

    @property
    def label(self) -> str:
        """What ``status`` and every message show: the redacted DSN, or the SQLite file's path."""
        return redact_dsn(self.dsn) if self.dsn is not None else str(self.path)


def choose_state(home: Path, defaults_state: str | None, environ: Mapping[str, str] | None = None) -> StateChoice:
    """``$CRAWLSCHED_STATE`` (when set and not empty), else ``[defaults] state``, else ``home/crawlsched.db``."""
    environ = os.environ if environ is None else environ
    path = Path(home) / SQLITE_FILE
    from_env = environ.get(ENV_VAR, "")
    if from_env.strip():
        return StateChoice(path, check_dsn(from_env, f"${ENV_VAR}").strip(), f"${ENV_VAR}")
    if defaults_state is not None and defaults_state.strip():
        return StateChoice(path, check_dsn(defaults_state, "defaults.state").strip(), "defaults.state")
    return StateChoice(path)


def check_executor(executor: str, choice: StateChoice) -> None:
    """``executor = "workers"`` needs a PostgreSQL state (the queue lives in it): exit 2 otherwise."""
    if executor == "workers" and not choice.postgres:
        raise InvalidValue(
            "defaults.executor", executor,
            f"needs a PostgreSQL state (the workers take their attempts from it): set [defaults] state or ${ENV_VAR} "
            f"to a postgresql:// URL; the state now is the SQLite file {choice.path}")


def _expanded(choice: StateChoice, environ: Mapping[str, str]) -> str:
    assert choice.dsn is not None
    try:
        return expand_dsn(choice.dsn, environ)
    except MissingVariable as exc:
        raise InvalidValue(choice.source or "defaults.state", choice.label,
                           f"uses ${{{exc.name}}}, but the environment variable {exc.name} is not set") from None


def scrub(message: str, choice: StateChoice, environ: Mapping[str, str]) -> str:
    """``message`` with the expanded DSN shown redacted, and every password and expanded value blanked."""
    if choice.dsn is None:
        return message
    try:
        expanded = expand_dsn(choice.dsn, environ)
    except MissingVariable:
        expanded = None
    if expanded:
        message = message.replace(expanded, choice.label)
    for secret in sorted(set(secrets_of(choice.dsn, environ)), key=len, reverse=True):
        if len(secret) >= 3:
            message = message.replace(secret, "***")
    return message


def store_for(choice: StateChoice, environ: Mapping[str, str] | None = None) -> StateStore:
    """The store of ``choice``, not opened yet."""
    environ = os.environ if environ is None else environ
    if not choice.postgres:
        from crawlsched.state.sqlite import SqliteStore

        return SqliteStore(choice.path)
    dsn = _expanded(choice, environ)
    try:
        import importlib

        module = importlib.import_module(PG_MODULE)
        store_class = module.PostgresStore
    except (ImportError, AttributeError) as exc:
        missing = getattr(exc, "name", None) or PG_MODULE
        raise StateError(
            f"PostgreSQL state needs {PG_MODULE} and psycopg 3 (pip install 'psycopg[binary]' psycopg-pool), "
            f"which could not be loaded ({missing} is missing); state {choice.label} from {choice.source}") from None
    return store_class(dsn)


def open_state(home: Path, defaults_state: str | None, *, daemon: bool = False,
               environ: Mapping[str, str] | None = None) -> StateStore:
    """The state every command and the daemon use (SPEC §10).

    Commands get it opened (migrated). With ``daemon`` it comes back *not yet
    opened*: the daemon opens it itself as its first step, in its own mode (a
    corrupt SQLite file moved aside, writes held through storage trouble).
    A PostgreSQL state that cannot be opened is a ``StateError`` naming the
    redacted DSN; the password and the expanded values never appear in it.
    """
    environ = os.environ if environ is None else environ
    choice = choose_state(home, defaults_state, environ)
    store = store_for(choice, environ)
    if daemon:
        return store
    if not choice.postgres:
        return store.open()
    try:
        return store.open()
    except InvalidValue:
        raise
    except Exception as exc:  # psycopg's errors, a refused schema, …: one line, nothing secret in it
        detail = scrub(" ".join(str(exc).split()), choice, environ) or type(exc).__name__
        raise StateError(f"the state {choice.label} (from {choice.source}) cannot be opened: {detail}") from None
