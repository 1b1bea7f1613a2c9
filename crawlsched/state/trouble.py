"""Storage trouble in the daemon (SPEC §6): what counts as it, and the episode it makes.

A full disk, an I/O error or a file made read-only is one *episode*, logged once
when it begins and once when it ends. A file made immutable (``chattr +i``)
under a live connection is worse than read-only: SQLite maps the ``-shm`` file,
and the kernel answers a write to such a page with SIGBUS, which kills the
process without a word. Reads write to that map too (read marks), closing does
(the checkpoint), and so does a new connection in the same process (it shares
the map). So before each use the daemon checks that the files are writable;
when they are not, the connection is set aside *unclosed* (``SET_ASIDE``) and
nothing touches the database until the files are writable again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from crawlsched.errors import StateError

log = logging.getLogger("crawlsched")

#: SQLite's primary result codes that mean the storage itself is in trouble (not a busy lock).
_TROUBLE_CODES = {3, 8, 10, 11, 13, 14, 26}  # PERM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
SUFFIXES = ("", "-wal", "-shm")
#: Connections set aside on files that turned immutable: never closed while they are (see the module doc).
SET_ASIDE: list[sqlite3.Connection] = []


class StorageUnavailable(StateError, sqlite3.OperationalError):
    """The database cannot be written now (full disk, I/O error, read-only files); already logged."""


class StateUnreachable(StateError):
    """The state's database server cannot be reached (a PostgreSQL state at open): the daemon waits for it."""


def storage_trouble(exc: BaseException) -> bool:
    """Is ``exc`` the storage failing (disk full, I/O, read-only, corrupt), not a busy lock or a bug?"""
    if isinstance(exc, StorageUnavailable) or isinstance(exc, OSError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.DatabaseError) and code is not None:
        return (code & 0xFF) in _TROUBLE_CODES
    return isinstance(exc, sqlite3.DatabaseError) and any(
        w in str(exc) for w in ("disk", "readonly", "read-only", "I/O", "malformed"))


def corrupt(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class Episode:
    """One stretch of storage trouble, logged once when it begins and once when it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.why: str | None = None

    def began(self, why: str) -> None:
        if self.why is None:
            self.why = why
            log.error("state database %s cannot be written (%s); what must be saved is held until it can be"
                      " (logged once until then)", self.path, why)

    def ended(self) -> None:
        if self.why is not None:
            log.info("state database %s takes writes again; everything held is saved", self.path)
            self.why = None


def files_writable(path: Path) -> bool:
    for suffix in SUFFIXES:
        name = str(path) + suffix
        if not os.access(name, os.W_OK) and os.path.exists(name):
            return False
    return True


def close_set_aside() -> None:
    """The files are writable again: the connections set aside may be closed now."""
    while SET_ASIDE:
        try:
            SET_ASIDE.pop().close()
        except sqlite3.Error:
            pass


def move_aside(path: Path) -> Path:
    """Move a corrupt database (and its -wal, -shm) aside, to ``<name>.corrupt-<stamp>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():  # a second corruption within the same second keeps the first copy
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in SUFFIXES:
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    return aside


def rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def begin(conn: sqlite3.Connection, deadline: float) -> None:
    """``BEGIN IMMEDIATE``, waiting (not failing) while another process holds the write lock."""
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            log.warning("state database busy (%s); waiting", exc)
            time.sleep(0.1)
