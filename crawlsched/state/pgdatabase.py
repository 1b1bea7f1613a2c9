"""One PostgreSQL state database over a psycopg 3 pool: what the operation mixins use from ``Database``.

The mixins (attempts, leases, jobs, daemonrow, queries, metrics) write portable SQL
(crawlsched.state.portable) with ``?`` marks; :class:`PgConnection` turns them into
``%s`` and answers rows that take both ``row[0]`` and ``row["name"]``. Each write is one
transaction that first takes ``pg_advisory_xact_lock(WRITE_LOCK)``: writes from every
process and host are serialized as SQLite's ``BEGIN IMMEDIATE`` serializes them, so the
mixins' read-then-write logic stays correct unchanged (READ COMMITTED takes a fresh
snapshot per statement, after the lock). Leases are judged by the database's clock
(:meth:`PgDatabase.lease_now`), never a host's.

Losing the database (the server restarted or down, the network cut, the pool timing
out) is, in the daemon (``recover_corrupt``), storage trouble exactly as for SQLite:
``StorageUnavailable``, one episode logged at ERROR, what must not be lost held in order
and written first once the database is back; the pool reconnects by itself. Outside
the daemon it is a ``StateError`` naming the database. No message carries a password.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterator

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from crawlsched.dsn import redact_dsn
from crawlsched.errors import StateError
from crawlsched.state import trouble
from crawlsched.state.pgmigrations import migrate_pg
from crawlsched.state.records import Saved
from crawlsched.state.trouble import StorageUnavailable

log = logging.getLogger("crawlsched")

#: The advisory lock every write transaction (and the migrations) takes: "crawl" in ASCII.
WRITE_LOCK = 0x637261776C
_CLOCK = "SELECT extract(epoch from clock_timestamp())::float8"
Write = Callable[["PgConnection"], Any]

# --- rows and marks -----------------------------------------------------------------


class Row(tuple):
    """A row answering ``row[0]`` and ``row["name"]`` (what the mixins ask of ``sqlite3.Row``)."""

    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"_index": {n: i for i, n in enumerate(names)}, "__slots__": ()})


def named_row(cursor: Any) -> Callable[[Any], Row]:
    """psycopg row factory: rows of a class that knows this answer's column names."""
    cls = _row_class(tuple(d.name for d in cursor.description or ()))
    return cls


@lru_cache(maxsize=1024)
def marks(sql: str) -> str:
    """SQLite's ``?`` marks as psycopg's ``%s`` (the mixins' SQL holds no literal ? or %)."""
    return sql.replace("?", "%s")


class PgConnection:
    """A psycopg connection inside one transaction, spoken to like ``sqlite3.Connection``."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Any = ()) -> psycopg.Cursor:
        return self.raw.cursor(row_factory=named_row).execute(marks(sql), params or None)

    def executemany(self, sql: str, seq: Any) -> psycopg.Cursor:
        cur = self.raw.cursor(row_factory=named_row)
        cur.executemany(marks(sql), list(seq))
        return cur


class _Answer:
    def __init__(self, rows: list) -> None:
        self.rows = rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list:
        return self.rows


class _Autocommit:
    """``db.conn`` outside a write: each statement on a pooled connection, its answer read at once."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    def execute(self, sql: str, params: Any = ()) -> _Answer:
        return _Answer(self.db.read(sql, params))


# --- redaction (crawlsched.dsn.redact_dsn shows the DSN; this blanks the password in errors) ---


def _password(dsn: str) -> str | None:
    try:
        return pg_conninfo.conninfo_to_dict(dsn).get("password") or None  # type: ignore[return-value]
    except psycopg.ProgrammingError:
        return None


#: A process frozen inside a write (SIGSTOP, a swap storm) holds the write lock of every host: the
#: server ends its session after this long idle in its transaction, and the others go on.
IDLE_IN_WRITE_MS = 5000


def _configure(conn: psycopg.Connection) -> None:
    conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_WRITE_MS}")


LOST = (psycopg.OperationalError, psycopg.InterfaceError,  # PoolTimeout is an OperationalError too
        psycopg.errors.IdleInTransactionSessionTimeout)  # our session was ended while frozen in a write


class PgDatabase:
    def __init__(self, dsn: str, *, pool_timeout: float = 5.0, connect_timeout: float = 5.0, max_size: int = 8) -> None:
        self.dsn = dsn
        self.where = redact_dsn(dsn)
        self._secret = _password(dsn)
        self.pool_timeout = pool_timeout
        self.connect_timeout = connect_timeout
        self.max_size = max_size
        self.lock = threading.RLock()
        self._episode_lock = threading.Lock()
        self.pool: ConnectionPool | None = None
        self.recover_corrupt = False  # the daemon's mode: losing the database holds writes
        self.on_replaced: Write | None = None  # (SQLite replaces corrupt files; a server does not)
        self._held: list[Write] = []
        self.episode = trouble.Episode(self.where)  # type: ignore[arg-type]  # only shown
        self.replaced = 0
        self.conn = _Autocommit(self)

    # --- connections -----------------------------------------------------------------

    def open(self, *, recover_corrupt: bool = False) -> None:
        """Connect and migrate (under the write lock: two daemons starting at once migrate once)."""
        with self.lock:
            if recover_corrupt:
                # the daemon's mode, also when a reader (its web API, on another thread) opened the pool first
                self.recover_corrupt = True
            if self.pool is not None:
                return
            # The pool warns at each failed reconnection; an outage is one episode, logged once (ours).
            logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
            pool = ConnectionPool(
                self.dsn, min_size=1, max_size=self.max_size, open=False, timeout=self.pool_timeout,
                kwargs={"autocommit": True, "connect_timeout": max(1, int(self.connect_timeout)),
                        "application_name": "crawlsched"},
                check=ConnectionPool.check_connection, name="crawlsched-state", configure=_configure,
                # a give-up after 5 s lets the next request start afresh: no backoff grown over a long outage
                reconnect_timeout=5.0)
            try:
                if self.recover_corrupt:
                    pool.open(wait=True, timeout=self.connect_timeout)
                    with pool.connection() as conn:
                        migrate_pg(conn, WRITE_LOCK)
                else:
                    # A one-shot command: one connection try (a refused one fails at once, a silent host
                    # after connect_timeout), not the pool's retries until its timeout.
                    with psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout)),
                                         application_name="crawlsched") as conn:
                        migrate_pg(conn, WRITE_LOCK)
                    pool.open(wait=False)
            except (psycopg.Error, OSError) as exc:
                pool.close()
                lost = isinstance(exc, (*LOST, OSError))  # not reached (down, cut, refused), not a refused schema
                raise (trouble.StateUnreachable if lost else StateError)(
                    f"{self.where}: cannot use the state database ({self.scrub(exc)})") from None
            self.pool = pool
            self.recover_corrupt = self.recover_corrupt or recover_corrupt

    def close(self) -> None:
        with self.lock:
            if self.pool is not None:
                self.pool.close()
                self.pool = None

    def scrub(self, exc: BaseException | str) -> str:
        """An error's text without the DSN's password (libpq does not print it; this makes sure)."""
        text = str(exc).strip() or type(exc).__name__
        return text.replace(self._secret, "***") if self._secret else text

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if self.pool is None:
            self.open(recover_corrupt=self.recover_corrupt)
        assert self.pool is not None
        timeout = min(self.pool_timeout, 1.0) if self.episode.why else self.pool_timeout  # down: fail fast
        try:
            with self.pool.connection(timeout=timeout) as conn:
                yield conn
        except LOST as exc:
            raise self._lost(exc) from exc

    def _lost(self, exc: BaseException) -> StateError:
        """The database is out of reach: storage trouble in the daemon, a plain error elsewhere."""
        why = self.scrub(exc).splitlines()[0]
        if self.recover_corrupt:
            with self._episode_lock:  # readers on other threads: the episode is logged once
                self.episode.began(why)
            return StorageUnavailable(f"{self.where}: {why}")
        return StateError(f"{self.where}: cannot use the state database ({why})")

    @contextmanager
    def _transaction(self) -> Iterator[PgConnection]:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield PgConnection(conn)

    # --- writes ---------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[PgConnection]:
        """One serialized transaction; held writes go first, in order."""
        with self.lock:
            if self._held:
                self._flush()
            with self._transaction() as c:
                yield c
            self._trouble_ended()

    def write_with(self, fn: Write) -> Any:
        with self.write() as c:
            return fn(c)

    def write_or_hold(self, fn: Write) -> Saved:
        try:
            done = self.write_with(fn)
        except StorageUnavailable:
            with self.lock:
                self._held.append(fn)
            return Saved.HELD
        return Saved.FENCED if done is Saved.FENCED else Saved.SAVED

    def write_row(self, fn: Write) -> Saved:
        """One statement that guards itself by its row (``UPDATE ... WHERE id = ? AND owner_id = ?``),
        without the global write lock: the row lock makes its check and its write one step, and no
        read-then-write of another process depends on it. Held, like :meth:`write_or_hold`, when the
        database is out of reach; behind held writes it waits its turn (their order is kept)."""
        with self.lock:
            if self._held:
                return self.write_or_hold(fn)
        try:
            with self._connection() as conn:
                done = fn(PgConnection(conn))
        except StorageUnavailable:
            with self.lock:
                self._held.append(fn)
            return Saved.HELD
        return Saved.FENCED if done is Saved.FENCED else Saved.SAVED

    def hold(self, fn: Write) -> None:
        with self.lock:
            self._held.append(fn)

    @property
    def held(self) -> int:
        return len(self._held)

    def flush_held(self) -> bool:
        """Try to write what is held; True when nothing is held any more."""
        with self.lock:
            if not self._held:
                return True
            try:
                self._flush()
            except StateError:
                return False
            self._trouble_ended()
            return not self._held

    def _flush(self) -> None:
        """The held writes, oldest first, each in its own transaction (they are idempotent)."""
        while self._held:
            with self._transaction() as c:
                self._held[0](c)
            self._held.pop(0)

    def _trouble_ended(self) -> None:
        if not self._held:
            self.episode.ended()

    @property
    def unreachable(self) -> bool:
        """The daemon lost the database (an episode is on): its fires wait, to be handled as downtime."""
        return self.episode.why is not None

    def probe(self) -> bool:
        """One empty write (the held ones first): True when the database takes writes again."""
        try:
            with self.write():
                pass
        except StateError:
            return False
        return True

    # --- reads and the clock ------------------------------------------------------------------

    def read(self, sql: str, params: tuple | dict = ()) -> list[Row]:
        with self._connection() as conn:
            return conn.cursor(row_factory=named_row).execute(marks(sql), params or None).fetchall()

    def read_tuples(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._connection() as conn:
            return conn.cursor(row_factory=tuple_row).execute(marks(sql), params or None).fetchall()

    def lease_now(self, conn: PgConnection | _Autocommit | None, now: float) -> float:
        """The database's clock (``now``, the caller's, is not used): hosts' clocks never decide a lease."""
        return float((conn or self.conn).execute(_CLOCK).fetchone()[0])

    def clock(self) -> float:
        return float(self.read_tuples(_CLOCK)[0][0])
