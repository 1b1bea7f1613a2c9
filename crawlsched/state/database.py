"""One SQLite state file: its connection, its write transactions, and what storage trouble holds.

Every write is one short ``BEGIN IMMEDIATE`` transaction: under WAL a
read-then-write transaction fails at once when another writer committed in
between, an immediate one waits for the lock instead. Inside one process all
writes go through one connection behind a lock, so threads never sit in
SQLite's busy-sleep against each other; other processes (the CLI, ``run``)
wait on the busy timeout, and a write that still finds the database locked is
retried, never dropped.

In the daemon (``recover_corrupt``), what must not be lost during storage
trouble (an attempt's outcome, a fire that could not run) is *held* in memory,
in order, and written before anything else once the database takes writes
again (crawlsched.state.trouble). A file found corrupt is moved aside and a
fresh one started; ``on_replaced`` then writes again what must be there at once.
This module is private to the state package: nothing outside it sees SQL.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from crawlsched.errors import StateError
from crawlsched.state import trouble
from crawlsched.state.migrations import migrate
from crawlsched.state.records import Saved
from crawlsched.state.trouble import StorageUnavailable

log = logging.getLogger("crawlsched")

Write = Callable[[sqlite3.Connection], Any]  # one idempotent write, run inside a transaction


class Database:
    def __init__(self, path: Path, *, busy_timeout: float = 10.0, write_deadline: float = 300.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.write_deadline = write_deadline
        self.lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self.recover_corrupt = False
        self.on_replaced: Write | None = None  # what a fresh file gets at once (the daemon's row)
        self._held: list[Write] = []  # writes waiting for the storage
        self.episode = trouble.Episode(self.path)
        self._readonly = False  # the files are not writable: the connection in use was set aside
        self.replaced = 0  # how many times a corrupt file was replaced under us

    # --- connections ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def open(self, *, recover_corrupt: bool = False) -> None:
        """Open, switch to WAL and migrate. A corrupt file is moved aside when ``recover_corrupt``."""
        with self.lock:
            if self._conn is not None:
                return
            try:
                conn = self._connect()
                self._setup(conn)
            except sqlite3.DatabaseError as exc:
                if not recover_corrupt or isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise StateError(f"{self.path}: cannot use the state database ({exc})") from None
                aside = trouble.move_aside(self.path)
                log.error("state database %s is corrupt (%s); moved aside to %s, starting a fresh one", self.path, exc, aside)
                conn = self._connect()
                self._setup(conn)
            self._conn = conn
            self.recover_corrupt = recover_corrupt

    def _setup(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("state database %s: journal_mode is %s, not wal", self.path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
        conn.execute("SELECT count(*) FROM daemon").fetchone()  # a quick check that it is a database we can read

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.open(recover_corrupt=self.recover_corrupt)  # a reopen keeps the daemon's mode
        assert self._conn is not None
        return self._conn

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- writes ----------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction; retried while another process holds the lock. Held writes go
        first, in order. Storage trouble raises :class:`StorageUnavailable` (logged once per episode)."""
        deadline = time.monotonic() + self.write_deadline
        with self.lock:
            self._guard()
            if self._held:
                self._flush(deadline)
            conn = self._begin_checked(deadline)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                trouble.rollback(conn)
                if isinstance(exc, sqlite3.DatabaseError) and not self._replace_if_corrupt(exc):
                    self._check_trouble(exc)
                raise
            self._trouble_ended()

    def write_with(self, fn: Write) -> Any:
        """``fn(conn)`` in one write transaction; once more if the file was found corrupt and
        replaced meanwhile (the fresh file takes it)."""
        before = self.replaced
        try:
            with self.write() as c:
                return fn(c)
        except sqlite3.DatabaseError:
            if self.replaced == before:
                raise
        with self.write() as c:
            return fn(c)

    def write_or_hold(self, fn: Write) -> Saved:
        """``fn(conn)`` now; in the daemon, held when the storage is in trouble (written first once
        it takes writes again). ``fn`` may return ``Saved.FENCED`` (a stale owner's write, not made)."""
        try:
            done = self.write_with(fn)
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
                self._guard()
                self._flush(time.monotonic() + self.busy_timeout)
            except (StorageUnavailable, sqlite3.Error):
                return False
            self._trouble_ended()
            return not self._held

    def _flush(self, deadline: float) -> None:
        """Write the held writes, oldest first, each in its own transaction (they are idempotent)."""
        while self._held:
            fn = self._held[0]
            conn = self._begin_checked(deadline)
            try:
                fn(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                trouble.rollback(conn)
                if isinstance(exc, sqlite3.DatabaseError) and not self._replace_if_corrupt(exc):
                    self._check_trouble(exc)
                raise
            self._held.pop(0)

    def _begin_checked(self, deadline: float) -> sqlite3.Connection:
        for tries_left in (1, 0):
            if self._readonly:
                raise StorageUnavailable(f"{self.path}: {self.episode.why or 'read-only'}")
            conn = self.conn
            try:
                trouble.begin(conn, deadline)
                conn.execute("SELECT 1 FROM daemon LIMIT 1")  # a corrupt file fails here, before any change
                return conn
            except sqlite3.DatabaseError as exc:
                trouble.rollback(conn)
                if not tries_left or not self._replace_if_corrupt(exc):
                    self._check_trouble(exc)
                    raise
        raise AssertionError("unreachable")

    def _check_trouble(self, exc: BaseException) -> None:
        """In the daemon, storage trouble begins an episode (logged once) and raises StorageUnavailable."""
        if not self.recover_corrupt or isinstance(exc, StorageUnavailable) or not trouble.storage_trouble(exc):
            return
        self.episode.began(str(exc))
        raise StorageUnavailable(f"{self.path}: {exc}") from exc

    def _trouble_ended(self) -> None:
        if not self._held:
            self.episode.ended()

    @staticmethod
    def lease_now(conn: sqlite3.Connection | None, now: float) -> float:
        """The instant leases are judged and written by: on one host, the caller's ``now``
        (PostgreSQL's store answers its database's clock instead)."""
        return now

    # --- reads -------------------------------------------------------------------

    def read(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self.lock:
            self._guard()
            if self._readonly:
                raise StorageUnavailable(f"{self.path}: {self.episode.why or 'read-only'}")
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                if not self._replace_if_corrupt(exc):
                    raise
            return self.conn.execute(sql, params).fetchall()

    def read_tuples(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Plain tuples (a fraction of the cost of sqlite3.Row), for the hot reads of /metrics."""
        with self.lock:
            cursor = self.conn.cursor()
            cursor.row_factory = None
            return cursor.execute(sql, params).fetchall()

    # --- files that turned read-only, or corrupt ------------------------------------

    def _guard(self) -> None:
        """In the daemon: never touch a connection whose files turned read-only (SIGBUS, trouble.py)."""
        if not self.recover_corrupt:
            return
        writable = trouble.files_writable(self.path)
        if not writable and not self._readonly:
            if self._conn is not None:
                trouble.SET_ASIDE.append(self._conn)  # not closed: closing writes to the -shm map
                self._conn = None
            self._readonly = True
            self.episode.began(f"its files are read-only or immutable ({self.path.name}, -wal, -shm);"
                               " not touched until they are writable again")
        elif writable and self._readonly:
            trouble.close_set_aside()
            self._readonly = False

    def _replace_if_corrupt(self, exc: sqlite3.DatabaseError) -> bool:
        """Move a database that went corrupt under us aside and start a fresh one (daemon only)."""
        if not self.recover_corrupt or not trouble.corrupt(exc):
            return False
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
        try:
            aside = trouble.move_aside(self.path)
            log.error("state database %s became corrupt (%s); moved aside to %s, starting a fresh one", self.path, exc, aside)
            conn = self._connect()
            self._setup(conn)
        except (OSError, sqlite3.Error) as failed:  # a full disk, say: no fresh file either
            self.episode.began(f"corrupt, and no fresh file could be made: {failed}")
            raise StorageUnavailable(f"{self.path}: {failed}") from failed
        self._conn = conn
        self.replaced += 1
        if self.on_replaced is not None:
            try:
                conn.execute("BEGIN IMMEDIATE")
                self.on_replaced(conn)
                conn.execute("COMMIT")
            except sqlite3.Error:
                trouble.rollback(conn)
        return True
