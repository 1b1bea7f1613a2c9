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
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from crawlsched.dsn import check_dsn, expand_dsn, redact_dsn, secrets_of
from crawlsched.errors import InvalidValue, MissingVariable, StateError

if TYPE_CHECKING:
    from crawlsched.state.protocol import StateStore

__all__ = ["ENV_VAR", "SQLITE_FILE", "StateChoice", "check_executor", "choose_state", "open_choice", "open_state",
           "label_of", "redact_dsn", "store_for", "unreachable"]

ENV_VAR = "CRAWLSCHED_STATE"
SQLITE_FILE = "crawlsched.db"
PG_MODULE = "crawlsched.state.postgres"


class StateChoice:
    """The state chosen: a PostgreSQL DSN as written (``dsn``, with where it came from), or the home's SQLite file.

    A plain class (not a dataclass): it is made on the path of every command.
    """

    __slots__ = ("dsn", "path", "source")

    def __init__(self, path: Path, dsn: str | None = None, source: str | None = None) -> None:
        self.path = path  # the home's SQLite file (the state when ``dsn`` is None)
        self.dsn = dsn
        self.source = source  # "$CRAWLSCHED_STATE" or "defaults.state"

    def __repr__(self) -> str:
        return f"StateChoice({self.label!r}, source={self.source!r})"  # never the DSN as written: it may hold a password

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

        store = SqliteStore(choice.path)
        store.state_label = choice.label  # type: ignore[attr-defined]
        return store
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
    store = store_class(dsn)
    store.state_label = choice.label  # what the API's status shows: the DSN as written, without its password
    return store


def label_of(store: object) -> str | None:
    """How ``store`` is shown (``status``): the label it was opened under, else a SQLite store's path."""
    label = getattr(store, "state_label", None)
    if label is None and getattr(store, "path", None) is not None and not getattr(store, "dsn", None):
        label = str(store.path)  # type: ignore[attr-defined]
    return label


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
    return open_choice(choose_state(home, defaults_state, environ), daemon=daemon, environ=environ)


def open_choice(choice: StateChoice, *, daemon: bool = False, environ: Mapping[str, str] | None = None) -> StateStore:
    """``open_state`` for a state already chosen (``choose_state``)."""
    environ = os.environ if environ is None else environ
    store = store_for(choice, environ)
    if daemon or not choice.postgres:
        return store if daemon else store.open()
    try:
        return store.open()
    except InvalidValue:
        raise
    except Exception as exc:  # psycopg's errors, a refused schema, …: one line, nothing secret in it
        raise StateError(unreachable(choice, exc, environ)) from None


def unreachable(choice: StateChoice, exc: BaseException, environ: Mapping[str, str] | None = None) -> str:
    """The one-line message for a state that cannot be opened or read: redacted, scrubbed."""
    environ = os.environ if environ is None else environ
    detail = scrub(" ".join(str(exc).split()), choice, environ) or type(exc).__name__
    return f"the state {choice.label} (from {choice.source}) cannot be opened: {detail}"


class RedactingFilter:
    """A logging filter for the daemon's handlers: a line that would carry the state's password or an
    expanded ``${VAR}`` of its DSN carries ``***`` instead (a last guard; messages are built redacted)."""

    def __init__(self, choice: StateChoice, environ: Mapping[str, str] | None = None) -> None:
        self.choice = choice
        self.environ = os.environ if environ is None else environ

    def filter(self, record: object) -> bool:
        import logging

        assert isinstance(record, logging.LogRecord)
        text = record.getMessage()
        clean = scrub(text, self.choice, self.environ)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.choice, self.environ)
        if clean != text:
            record.msg, record.args = clean, None
        return True


def guard_log(log: object, choice: StateChoice) -> None:
    """Put a :class:`RedactingFilter` on every handler of ``log`` (a PostgreSQL state only)."""
    if choice.postgres:
        for handler in getattr(log, "handlers", []):
            handler.addFilter(RedactingFilter(choice))
