"""The state database (SQLite in the home folder): runs, pending retries, the daemon's heartbeat.

Times are stored as epoch seconds (REAL, UTC). Every write is one short
``BEGIN IMMEDIATE`` transaction: under WAL a read-then-write transaction fails
at once when another writer committed in between, an immediate one waits for
the lock instead. Inside one process all writes go through one connection
behind a lock, so threads never sit in SQLite's busy-sleep against each other;
other processes (the CLI, ``run``) wait on the busy timeout, and a write that
still finds the database locked is retried, never dropped.

The schema is built by numbered migrations recorded in ``PRAGMA user_version``.

Storage trouble in the daemon (SPEC §6): a full disk, an I/O error or a file
made read-only is one *episode*, logged once when it begins and once when it
ends. What must not be lost meanwhile (an attempt's outcome, a fire that could
not run) is *held* in memory, in order, and written before anything else once
the database takes writes again. Attempts are addressed by what they are (job,
scheduled time, attempt number), never by a row number alone: after a corrupt
file is replaced, row 2 of the fresh database is somebody else's.

A file made immutable (``chattr +i``) under a live connection is worse than
read-only: SQLite maps the ``-shm`` file, and the kernel answers a write to
such a page with SIGBUS, which kills the process without a word. Reads write
to that map too (read marks), closing does (the checkpoint), and so does a new
connection in the same process (it shares the map). So before each use the
daemon checks that the files are writable; when they are not, the connection
is set aside *unclosed* and nothing touches the database (reads and writes
raise :class:`StorageUnavailable`) until the files are writable again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from crawlsched.errors import ChainBusy, StateError
from crawlsched.procs import pid_alive

log = logging.getLogger("crawlsched")

#: SQLite's primary result codes that mean the storage itself is in trouble (not a busy lock).
_TROUBLE_CODES = {3, 8, 10, 11, 13, 14, 26}  # PERM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
_SUFFIXES = ("", "-wal", "-shm")
#: Connections set aside on files that turned immutable: never closed while they are (see the module doc).
_SET_ASIDE: list[sqlite3.Connection] = []


class StorageUnavailable(StateError, sqlite3.OperationalError):
    """The database cannot be written now (full disk, I/O error, read-only files); already logged."""


def storage_trouble(exc: BaseException) -> bool:
    """Is ``exc`` the storage failing (disk full, I/O, read-only, corrupt), not a busy lock or a bug?"""
    if isinstance(exc, StorageUnavailable) or isinstance(exc, OSError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.DatabaseError) and code is not None:
        return (code & 0xFF) in _TROUBLE_CODES
    return isinstance(exc, sqlite3.DatabaseError) and any(
        w in str(exc) for w in ("disk", "readonly", "read-only", "I/O", "malformed"))


# /metrics histograms (no job label: their cardinality stays fixed). Upper bounds in seconds; each
# stored bucket counts the values up to its bound and above the one before (not cumulative).
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HISTOGRAMS = {"attempt_duration": DURATION_BUCKETS, "fire_lateness": LATENESS_BUCKETS}
COUNTED_OUTCOMES = ("success", "failed", "interrupted")  # the attempt outcomes job_counters has a column for
METRIC_COUNTER_COLUMNS = (*COUNTED_OUTCOMES, "skipped", "missed", "last_success", "last_failure")


def _bucket_case(value: str, bounds: tuple[float, ...]) -> str:
    whens = " ".join(f"WHEN {value} <= {b!r} THEN {b!r}" for b in bounds)
    return f"CASE {whens} ELSE 9e999 END"


def _bucket(value: float, bounds: tuple[float, ...]) -> float:
    for bound in bounds:
        if value <= bound:
            return bound
    return float("inf")


_MIGRATION_COUNTERS = f"""
        -- What /metrics reports, kept as running totals in the transaction that writes the history
        -- row, so a scrape reads O(jobs) rows (never the history) and retention can delete history
        -- without moving a counter back. Filled once here from the history there is.
        CREATE TABLE job_counters (
            job_id TEXT PRIMARY KEY,
            success INTEGER NOT NULL DEFAULT 0,        -- finished attempts, by outcome
            failed INTEGER NOT NULL DEFAULT 0,
            interrupted INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,        -- fires not run: overlap
            missed INTEGER NOT NULL DEFAULT 0,         -- fires not run: daemon down (fires, not rows)
            last_success REAL,                         -- end of the newest successful attempt
            last_failure REAL,                         -- end of the newest failed or interrupted one
            seq INTEGER NOT NULL DEFAULT 0             -- bumped by every change: a scrape reads only what changed
        );
        CREATE INDEX job_counters_seq ON job_counters(seq);
        CREATE TABLE histograms (
            name TEXT NOT NULL,                        -- attempt_duration, fire_lateness
            le REAL NOT NULL,                          -- the bucket's upper bound (9e999: +Inf)
            n INTEGER NOT NULL,                        -- values in this bucket alone (not cumulative)
            total REAL NOT NULL,                       -- their sum
            PRIMARY KEY (name, le)
        );
        INSERT INTO job_counters(job_id, success, failed, interrupted, skipped, missed, last_success, last_failure)
            SELECT job_id, sum(attempt > 0 AND status = 'success'), sum(attempt > 0 AND status = 'failed'),
                   sum(attempt > 0 AND status = 'interrupted'), sum(attempt = 0 AND status = 'skipped'),
                   sum(CASE WHEN attempt = 0 AND status = 'missed' THEN coalesce(missed_count, 1) ELSE 0 END),
                   max(CASE WHEN attempt > 0 AND status = 'success' THEN finished_at END),
                   max(CASE WHEN attempt > 0 AND status IN ('failed', 'interrupted') THEN finished_at END)
            FROM runs GROUP BY job_id;
        UPDATE job_counters SET seq = rowid;
        INSERT INTO histograms(name, le, n, total)
            SELECT 'attempt_duration', {_bucket_case("d", DURATION_BUCKETS)} AS b, count(*), sum(d)
            FROM (SELECT max(finished_at - started_at, 0) AS d FROM runs
                  WHERE attempt > 0 AND status IN ('success', 'failed', 'interrupted')
                  AND started_at IS NOT NULL AND finished_at IS NOT NULL) GROUP BY b;
        INSERT INTO histograms(name, le, n, total)
            SELECT 'fire_lateness', {_bucket_case("l", LATENESS_BUCKETS)} AS b, count(*), sum(l)
            FROM (SELECT max(started_at - scheduled_for, 0) AS l FROM runs
                  WHERE attempt = 1 AND trigger = 'schedule' AND status IN ('success', 'failed', 'interrupted')
                  AND started_at IS NOT NULL) GROUP BY b;
        """

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_initial",
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            scheduled_for REAL NOT NULL,
            attempt INTEGER NOT NULL,          -- 0 for skipped and missed fires
            max_attempts INTEGER NOT NULL,
            trigger TEXT NOT NULL DEFAULT 'schedule',  -- schedule, catch_up, manual, run
            status TEXT NOT NULL,
            started_at REAL,
            finished_at REAL,
            message TEXT,
            http_status INTEGER,
            exit_code INTEGER,
            bytes INTEGER,
            output TEXT,
            owner_pid INTEGER,
            missed_count INTEGER,
            first_missed REAL,
            last_missed REAL
        );
        -- Nothing runs twice for the same (job, scheduled time, attempt).
        CREATE UNIQUE INDEX runs_once ON runs(job_id, scheduled_for, attempt) WHERE attempt > 0;
        CREATE INDEX runs_by_job ON runs(job_id, id);
        CREATE INDEX runs_running ON runs(status) WHERE status = 'running';

        CREATE TABLE retries (
            job_id TEXT PRIMARY KEY,
            scheduled_for REAL NOT NULL,
            next_attempt INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            due_at REAL NOT NULL,
            trigger TEXT NOT NULL DEFAULT 'schedule'
        );

        -- Every id ever seen (ids are never reused) and what the loop needs per job.
        CREATE TABLE jobs_seen (
            job_id TEXT PRIMARY KEY,
            first_seen REAL NOT NULL,         -- by anyone (the CLI's add, or the daemon)
            daemon_seen REAL,                  -- by the daemon: nothing before it counts as missed
            anchor REAL,                       -- an `every` job's first fire
            last_fire REAL,                    -- newest scheduled time handled (run, skipped or missed)
            last_attempt_id INTEGER            -- newest attempt row, for list and show
        );

        CREATE TABLE daemon (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pid INTEGER,
            host TEXT,
            version TEXT,
            started_at REAL,
            ready_at REAL,
            heartbeat REAL,
            stopped_at REAL,
            config_ok INTEGER,
            config_error TEXT,
            next_job TEXT,
            next_due REAL,
            http TEXT
        );

        CREATE TABLE requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            requested_at REAL NOT NULL,
            taken_at REAL,
            source TEXT
        );
        """,
    ),
    (
        "002_handled_until",
        """
        -- Every fire due before this instant has a row (or a saved retry): catch-up starts here.
        ALTER TABLE daemon ADD COLUMN handled_until REAL;
        """,
    ),
    (
        "003_process_identity",
        """
        -- A pid is reused (after a reboot, on a busy machine): who owns a running row, and
        -- which process group its command runs in, are known by '<boot id>/<start ticks>'.
        ALTER TABLE runs ADD COLUMN owner_ident TEXT;
        ALTER TABLE runs ADD COLUMN child_pgid INTEGER;
        ALTER TABLE runs ADD COLUMN child_ident TEXT;
        """,
    ),
    ("004_metrics_counters", _MIGRATION_COUNTERS),
    # Migrations apply in list order (PRAGMA user_version counts them): a new one is appended,
    # numbered by its place in this list.
    (
        "005_chain_claims",
        """
        -- Who runs a job's chain now (a job never overlaps itself, across processes): the
        -- daemon from a chain's first attempt until it ends (its retry waits included), or a
        -- `crawlsched run` for its whole chain. A claim whose owner is dead is stale.
        CREATE TABLE chain_claims (
            job_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,               -- 'daemon' or 'run'
            owner_pid INTEGER NOT NULL,
            owner_ident TEXT,                  -- crawlsched.procs.identity of the owner
            claimed_at REAL NOT NULL
        );
        """,
    ),
]

RUN_COLUMNS = (
    "id", "job_id", "scheduled_for", "attempt", "max_attempts", "trigger", "status",
    "started_at", "finished_at", "message", "http_status", "exit_code", "bytes",
    "output", "owner_pid", "missed_count", "first_missed", "last_missed",
    "owner_ident", "child_pgid", "child_ident",
)  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One row of history: an attempt, or a fire that was skipped or missed (attempt 0)."""

    id: int
    job_id: str
    scheduled_for: float
    attempt: int
    max_attempts: int
    trigger: str
    status: str
    started_at: float | None = None
    finished_at: float | None = None
    message: str | None = None
    http_status: int | None = None
    exit_code: int | None = None
    bytes: int | None = None
    output: str | None = None
    owner_pid: int | None = None
    missed_count: int | None = None
    first_missed: float | None = None
    last_missed: float | None = None
    owner_ident: str | None = None  #: the owner process's identity (crawlsched.procs)
    child_pgid: int | None = None  #: a command's process group, while it may run
    child_ident: str | None = None  #: that group leader's identity


@dataclass(frozen=True)
class AttemptKey:
    """An attempt by what it is: no other attempt, in this database or a fresh one, has the same key.

    Closing an attempt by its key finds its row whatever number the row has, and writes the
    row again when it is missing (the file was replaced while the attempt ran).
    """

    job_id: str
    scheduled_for: float
    attempt: int
    max_attempts: int
    trigger: str
    started_at: float
    owner_pid: int | None = None
    owner_ident: str | None = None

    @classmethod
    def of(cls, run: Run) -> AttemptKey:
        return cls(run.job_id, run.scheduled_for, run.attempt, run.max_attempts, run.trigger,
                   run.started_at or 0.0, run.owner_pid, run.owner_ident)


@dataclass(frozen=True)
class Retry:
    job_id: str
    scheduled_for: float
    next_attempt: int
    max_attempts: int
    due_at: float
    trigger: str


@dataclass(frozen=True)
class Claim:
    """A live process's hold on a job's chain; ``retry`` is the daemon's pending retry, when it waits for one."""

    job_id: str
    owner: str  # CLAIM_DAEMON or CLAIM_RUN
    owner_pid: int
    owner_ident: str | None
    claimed_at: float
    retry: Retry | None = None

    def describe(self, tz: str = "UTC") -> str:
        """Why the job is busy, for a person: who holds it and what it does."""
        if self.owner == CLAIM_RUN:
            return f"`crawlsched run` (pid {self.owner_pid}) is running it"
        if self.retry is not None:
            from crawlsched import timing

            when = timing.format_local(timing.from_epoch(self.retry.due_at), tz)
            return (f"the daemon (pid {self.owner_pid}) is waiting to retry it"
                    f" (attempt {self.retry.next_attempt}/{self.retry.max_attempts} at {when})")
        return f"the daemon (pid {self.owner_pid}) is running it"


CLAIM_DAEMON, CLAIM_RUN = "daemon", "run"


@dataclass(frozen=True)
class JobState:
    """What the history says of one job, for its status in ``list`` and ``show``."""

    job_id: str
    first_seen: float | None = None
    anchor: float | None = None
    last_fire: float | None = None
    last_attempt: Run | None = None
    retry: Retry | None = None
    running: bool = False


class State:
    """The state database of one home folder."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0, write_deadline: float = 300.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.write_deadline = write_deadline
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._recover_corrupt = False
        self._daemon_row: dict[str, Any] | None = None  # this process's daemon row, to write it again
        self._held: list[Any] = []  # writes (callables of a connection) waiting for the storage
        self._trouble: str | None = None  # the current storage episode, as logged
        self._readonly = False  # the files are not writable: the connection in use was opened read-only
        self.replaced = 0  # how many times a corrupt file was replaced under us

    # --- connections ---------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def open(self, *, recover_corrupt: bool = False) -> State:
        """Open, switch to WAL and migrate. A corrupt file is moved aside when ``recover_corrupt``."""
        with self._lock:
            if self._conn is not None:
                return self
            try:
                conn = self._open()
                self._setup(conn)
            except sqlite3.DatabaseError as exc:
                if not recover_corrupt or isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise StateError(f"{self.path}: cannot use the state database ({exc})") from None
                aside = self.move_aside()
                log.error("state database %s is corrupt (%s); moved aside to %s, starting a fresh one", self.path, exc, aside)
                conn = self._open()
                self._setup(conn)
            self._conn = conn
            self._recover_corrupt = recover_corrupt
            return self

    def move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():  # a second corruption within the same second keeps the first copy
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        return aside

    def _setup(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("state database %s: journal_mode is %s, not wal", self.path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < len(MIGRATIONS):
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for number in range(version, len(MIGRATIONS)):
                    for statement in _statements(MIGRATIONS[number][1]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        # A quick check that the file really is a database we can read.
        conn.execute("SELECT count(*) FROM daemon").fetchone()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.open(recover_corrupt=self._recover_corrupt)  # a reopen keeps the daemon's mode
        assert self._conn is not None
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction; retried while another process holds the lock.

        In the daemon (``recover_corrupt``) a file found corrupt here is moved
        aside and replaced by a fresh one, as at start-up: a disk that scribbled
        over the database must not stop every later attempt from being recorded.
        Held writes (see the module doc) go first, in order. Storage trouble
        raises :class:`StorageUnavailable` (logged once per episode).
        """
        deadline = time.monotonic() + self.write_deadline
        with self._lock:
            self._guard()
            if self._held:
                self._flush(deadline)
            conn = self._begin_checked(deadline)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.DatabaseError) and not self._replace_if_corrupt(exc):
                    self._check_trouble(exc)
                raise
            self._trouble_ended()

    def _write_with(self, fn: Any) -> Any:
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

    def _begin_checked(self, deadline: float) -> sqlite3.Connection:
        for tries_left in (1, 0):
            if self._readonly:
                raise StorageUnavailable(f"{self.path}: {self._trouble or 'read-only'}")
            conn = self.conn
            try:
                self._begin(conn, deadline)
                conn.execute("SELECT 1 FROM daemon LIMIT 1")  # a corrupt file fails here, before any change
                return conn
            except sqlite3.DatabaseError as exc:
                _rollback(conn)
                if not tries_left or not self._replace_if_corrupt(exc):
                    self._check_trouble(exc)
                    raise
        raise AssertionError("unreachable")

    def _check_trouble(self, exc: BaseException) -> None:
        """In the daemon, storage trouble begins an episode (logged once) and raises StorageUnavailable."""
        if not self._recover_corrupt or isinstance(exc, StorageUnavailable) or not storage_trouble(exc):
            return
        self._trouble_began(str(exc))
        raise StorageUnavailable(f"{self.path}: {exc}") from exc

    def _trouble_began(self, why: str) -> None:
        if self._trouble is None:
            self._trouble = why
            log.error("state database %s cannot be written (%s); what must be saved is held until it can be"
                      " (logged once until then)", self.path, why)

    def _trouble_ended(self) -> None:
        if self._trouble is not None and not self._held:
            log.info("state database %s takes writes again; everything held is saved", self.path)
            self._trouble = None

    # --- held writes ---------------------------------------------------------

    @property
    def held(self) -> int:
        """How many writes wait for the storage to come back."""
        return len(self._held)

    def write_or_hold(self, fn: Any) -> bool:
        """Run ``fn(conn)`` in one write transaction; in the daemon, hold it when the storage is in
        trouble (written first once it takes writes again). True when it landed now."""
        try:
            self._write_with(fn)
            return True
        except StorageUnavailable:
            with self._lock:
                self._held.append(fn)
            return False

    def hold(self, fn: Any) -> None:
        """Keep ``fn(conn)`` for when the storage takes writes again."""
        with self._lock:
            self._held.append(fn)

    def flush_held(self) -> bool:
        """Try to write what is held; True when nothing is held any more."""
        with self._lock:
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
                _rollback(conn)
                if isinstance(exc, sqlite3.DatabaseError) and not self._replace_if_corrupt(exc):
                    self._check_trouble(exc)
                raise
            self._held.pop(0)

    # --- files that turned read-only ------------------------------------------

    def _files_writable(self) -> bool:
        for suffix in _SUFFIXES:
            path = str(self.path) + suffix
            if not os.access(path, os.W_OK) and os.path.exists(path):
                return False
        return True

    def _guard(self) -> None:
        """In the daemon: never touch a connection whose files turned read-only (SIGBUS, module doc)."""
        if not self._recover_corrupt:
            return
        writable = self._files_writable()
        if not writable and not self._readonly:
            if self._conn is not None:
                _SET_ASIDE.append(self._conn)  # not closed: closing writes to the -shm map
                self._conn = None
            self._readonly = True
            self._trouble_began(f"its files are read-only or immutable ({self.path.name}, -wal, -shm);"
                                " not touched until they are writable again")
        elif writable and self._readonly:
            while _SET_ASIDE:
                try:
                    _SET_ASIDE.pop().close()  # writable again: safe to close now
                except sqlite3.Error:
                    pass
            self._readonly = False

    @staticmethod
    def unsafe_to_close() -> bool:
        """Connections are set aside on read-only files: the process must exit without closing them."""
        return bool(_SET_ASIDE)

    @staticmethod
    def _begin(conn: sqlite3.Connection, deadline: float) -> None:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                log.warning("state database busy (%s); waiting", exc)
                time.sleep(0.1)

    def read(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._guard()
            if self._readonly:
                raise StorageUnavailable(f"{self.path}: {self._trouble or 'read-only'}")
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                if not self._replace_if_corrupt(exc):
                    raise
            return self.conn.execute(sql, params).fetchall()

    def _replace_if_corrupt(self, exc: sqlite3.DatabaseError) -> bool:
        """Move a database that went corrupt under us aside and start a fresh one (daemon only).

        The daemon's row is written again at once: ``status``, ``stop`` and ``run-now``
        must not say "not running" about a daemon that is up.
        """
        code = getattr(exc, "sqlite_errorcode", None)
        if not self._recover_corrupt or code not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return False
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
        try:
            aside = self.move_aside()
            log.error("state database %s became corrupt (%s); moved aside to %s, starting a fresh one", self.path, exc, aside)
            conn = self._open()
            self._setup(conn)
        except (OSError, sqlite3.Error) as failed:  # a full disk, say: no fresh file either
            self._trouble_began(f"corrupt, and no fresh file could be made: {failed}")
            raise StorageUnavailable(f"{self.path}: {failed}") from failed
        self._conn = conn
        self.replaced += 1
        if self._daemon_row is not None:
            try:
                conn.execute("BEGIN IMMEDIATE")
                _insert_daemon_row(conn, self._daemon_row)
                conn.execute("COMMIT")
            except sqlite3.Error:
                _rollback(conn)
        return True

    # --- read side -----------------------------------------------------------

    def known_id(self, job_id: str) -> bool:
        """Has the history ever seen this id? (Ids are never reused.)"""
        row = self.read("SELECT 1 FROM jobs_seen WHERE job_id = ? UNION SELECT 1 FROM runs WHERE job_id = ? LIMIT 1", (job_id, job_id))
        return bool(row)

    def job_states(self, job_ids: list[str] | None = None) -> dict[str, JobState]:
        """Per job: newest attempt, pending retry, whether an attempt is running now."""
        seen = {r["job_id"]: r for r in self.read("SELECT * FROM jobs_seen")}
        last_ids = [r["last_attempt_id"] for r in seen.values() if r["last_attempt_id"]]
        last: dict[int, Run] = {}
        for chunk in _chunks(last_ids, 900):
            marks = ",".join("?" * len(chunk))
            for row in self.read(f"SELECT * FROM runs WHERE id IN ({marks})", tuple(chunk)):
                last[row["id"]] = _run(row)
        retries = {r["job_id"]: _retry(r) for r in self.read("SELECT * FROM retries")}
        running: set[str] = set()
        for row in self.read("SELECT job_id, owner_pid, owner_ident FROM runs WHERE status = 'running'"):
            if pid_alive(row["owner_pid"], row["owner_ident"]):
                running.add(row["job_id"])
        out: dict[str, JobState] = {}
        ids = job_ids if job_ids is not None else list(seen)
        for job_id in ids:
            s = seen.get(job_id)
            out[job_id] = JobState(
                job_id=job_id,
                first_seen=s["first_seen"] if s else None,
                anchor=s["anchor"] if s else None,
                last_fire=s["last_fire"] if s else None,
                last_attempt=last.get(s["last_attempt_id"]) if s and s["last_attempt_id"] else None,
                retry=retries.get(job_id),
                running=job_id in running,
            )
        return out

    def runs(self, job_id: str | None = None, limit: int = 50, *, since: float | None = None,
             statuses: tuple[str, ...] | None = None) -> list[Run]:
        """History rows, newest first; ``since`` (epoch) keeps rows that started (or, never
        started, were due) at or after it; ``statuses`` keeps rows with one of those statuses."""
        where, params = [], []
        if job_id is not None:
            where.append("job_id = ?")
            params.append(job_id)
        if since is not None:
            where.append("coalesce(started_at, scheduled_for) >= ?")
            params.append(since)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        # SQLite's LIMIT is a 64-bit integer: a larger one (`--limit 99999999999999999999`) means "all".
        rows = self.read(f"SELECT * FROM runs {clause}ORDER BY id DESC LIMIT ?", (*params, min(limit, 2**62)))
        return [_run(r) for r in rows]

    def chain_outcomes(self, keys: list[tuple[str, float]]) -> dict[tuple[str, float], str]:
        """How each run (job, scheduled time) stands over ALL its attempts, listed or not:
        ``success`` (an attempt succeeded), ``failed`` (the chain ended without one), or
        ``open`` (an attempt is running or a retry is pending)."""
        pending = {(r["job_id"], r["scheduled_for"]) for r in self.read("SELECT job_id, scheduled_for FROM retries")}
        out: dict[tuple[str, float], str] = {}
        wanted = sorted(set(keys))
        for chunk in _chunks(wanted, 400):
            marks = " OR ".join("(job_id = ? AND scheduled_for = ?)" for _ in chunk)
            params = tuple(v for key in chunk for v in key)
            for row in self.read(
                "SELECT job_id, scheduled_for, max(status = 'success') AS ok, max(status = 'running') AS busy"
                f" FROM runs WHERE attempt > 0 AND ({marks}) GROUP BY job_id, scheduled_for", params,
            ):
                key = (row["job_id"], row["scheduled_for"])
                if row["ok"]:
                    out[key] = "success"
                elif row["busy"] or key in pending:
                    out[key] = "open"
                else:
                    out[key] = "failed"
        return out

    def running_elsewhere(self, job_id: str, my_pid: int) -> Run | None:
        for row in self.read("SELECT * FROM runs WHERE job_id = ? AND status = 'running'", (job_id,)):
            if row["owner_pid"] != my_pid and pid_alive(row["owner_pid"], row["owner_ident"]):
                return _run(row)
        return None

    def daemon(self) -> dict[str, Any] | None:
        rows = self.read("SELECT * FROM daemon WHERE id = 1")
        return dict(rows[0]) if rows else None

    def retries(self) -> list[Retry]:
        return [_retry(r) for r in self.read("SELECT * FROM retries")]

    def seen(self) -> dict[str, sqlite3.Row]:
        return {r["job_id"]: r for r in self.read("SELECT * FROM jobs_seen")}

    def stale_running(self, my_pid: int) -> list[Run]:
        """Attempts left ``running`` by a process that is gone."""
        rows = self.read("SELECT * FROM runs WHERE status = 'running'")
        return [_run(r) for r in rows if r["owner_pid"] == my_pid or not pid_alive(r["owner_pid"], r["owner_ident"])]

    # --- write side ----------------------------------------------------------

    def remember_id(self, job_id: str, now: float) -> None:
        with self.write() as c:
            c.execute("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) VALUES (?, ?)", (job_id, now))

    def mark_seen(self, job_id: str, now: float, anchor: float | None = None) -> None:
        """First sight of a job by the daemon; an ``every`` job's anchor is kept once set."""
        with self.write() as c:
            c.execute("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) VALUES (?, ?)", (job_id, now))
            c.execute("UPDATE jobs_seen SET daemon_seen = ? WHERE job_id = ? AND daemon_seen IS NULL", (now, job_id))
            if anchor is not None:
                c.execute("UPDATE jobs_seen SET anchor = ? WHERE job_id = ? AND anchor IS NULL", (anchor, job_id))

    def mark_seen_many(self, items: list[tuple[str, float, float | None]]) -> None:
        def mark(c: sqlite3.Connection) -> None:
            c.executemany("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) VALUES (?, ?)", [(i, n) for i, n, _ in items])
            c.executemany("UPDATE jobs_seen SET daemon_seen = ? WHERE job_id = ? AND daemon_seen IS NULL", [(n, i) for i, n, _ in items])
            c.executemany(
                "UPDATE jobs_seen SET anchor = ? WHERE job_id = ? AND anchor IS NULL",
                [(a, i) for i, _, a in items if a is not None],
            )

        self.write_or_hold(mark)

    def restore_seen(self, items: list[tuple[str, float, float | None, float | None]]) -> None:
        """After a replaced file: the daemon's jobs as seen, with their anchors and last fires
        ``(job_id, now, anchor, last_fire)``, so the next start's catch-up still knows them."""

        def restore(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT INTO jobs_seen(job_id, first_seen, daemon_seen, anchor, last_fire) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(job_id) DO UPDATE SET daemon_seen = coalesce(daemon_seen, excluded.daemon_seen),"
                " anchor = coalesce(anchor, excluded.anchor),"
                " last_fire = max(coalesce(last_fire, 0), coalesce(excluded.last_fire, 0))",
                [(i, n, n, a, f) for i, n, a, f in items],
            )

        self.write_or_hold(restore)

    def save_retry(self, retry: Retry) -> None:
        self.write_or_hold(lambda c: _save_retry(c, retry))

    def reset_anchor(self, job_id: str, anchor: float | None) -> None:
        self.write_or_hold(lambda c: c.execute("UPDATE jobs_seen SET anchor = ? WHERE job_id = ?", (anchor, job_id)))

    # chain claims: a job never overlaps itself, whoever starts it

    def claim_chain(self, job_id: str, owner: str, pid: int, ident: str | None, now: float) -> Claim | None:
        """Take the job's chain for ``owner``; the live claim that holds it instead, or None when taken.

        The check and the claim are one transaction: two processes never both get it.
        A claim whose owner is dead (crawlsched.procs.pid_alive) is stale and taken over.
        """
        with self.write() as c:
            blocker = _blocking_claim(c, job_id, owner, pid, ident)
            if blocker is None:
                _take_claim(c, job_id, owner, pid, ident, now)
            return blocker

    def claim_chains(self, job_ids: list[str], owner: str, pid: int, ident: str | None, now: float) -> dict[str, Claim]:
        """``claim_chain`` for many jobs in one transaction; returns the claims that hold some of them."""
        blocked: dict[str, Claim] = {}
        if not job_ids:
            return blocked
        with self.write() as c:
            for job_id in job_ids:
                blocker = _blocking_claim(c, job_id, owner, pid, ident)
                if blocker is None:
                    _take_claim(c, job_id, owner, pid, ident, now)
                else:
                    blocked[job_id] = blocker
        return blocked

    def release_chains(self, job_ids: list[str], owner: str, pid: int) -> None:
        """The chains ended: drop this owner's claims on them (another's claim is left alone)."""
        if not job_ids:
            return
        with self.write() as c:
            c.executemany("DELETE FROM chain_claims WHERE job_id = ? AND owner = ? AND owner_pid = ?",
                          [(j, owner, pid) for j in job_ids])

    def claim(self, job_id: str) -> Claim | None:
        """The live claim on the job's chain, if any (read only)."""
        with self._lock:
            return _blocking_claim(self.conn, job_id, "", 0, None)

    def start_attempt(self, job_id: str, scheduled_for: float, attempt: int, max_attempts: int, *,
                      trigger: str, started_at: float, pid: int, ident: str | None = None,
                      claim: str | None = None) -> int | None:
        """Write the attempt as ``running`` before it starts; None if this attempt exists already.

        ``ident`` is the owner's identity (``crawlsched.procs.identity``): with it, a later
        process with the same pid does not make the row look alive. With ``claim`` (the
        owner kind), the job's chain is claimed in the same transaction; when another live
        process holds it, nothing is written and ``ChainBusy`` is raised.
        """
        def insert(c: sqlite3.Connection) -> int | None:
            if claim is not None:
                blocker = _blocking_claim(c, job_id, claim, pid, ident)
                if blocker is not None:
                    raise ChainBusy(blocker, f"job {job_id}: {blocker.describe()}")
                _take_claim(c, job_id, claim, pid, ident, started_at)
            try:
                cur = c.execute(
                    "INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, trigger, status, started_at,"
                    " owner_pid, owner_ident) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                    (job_id, scheduled_for, attempt, max_attempts, trigger, started_at, pid, ident),
                )
            except sqlite3.IntegrityError:
                return None
            run_id = cur.lastrowid
            c.execute("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) VALUES (?, ?)", (job_id, started_at))
            c.execute(
                "UPDATE jobs_seen SET last_attempt_id = ?, last_fire = max(coalesce(last_fire, 0), ?) WHERE job_id = ?",
                (run_id, scheduled_for, job_id),
            )
            c.execute("DELETE FROM retries WHERE job_id = ? AND scheduled_for = ? AND next_attempt <= ?", (job_id, scheduled_for, attempt))
            return run_id

        return self._write_with(insert)

    def finish_attempt(self, run: int | AttemptKey, *, status: str, finished_at: float, message: str | None,
                       http_status: int | None = None, exit_code: int | None = None,
                       bytes: int | None = None, output: str | None = None,
                       retry: Retry | None = None) -> bool:
        """Close an attempt; the next retry's due time is saved in the same transaction.

        ``run`` is the attempt's :class:`AttemptKey` (or, outside the daemon, its row id).
        By key, a missing row is written again, closed. In the daemon, storage trouble holds
        the write until it can land; returns False then.
        """
        values = (status, finished_at, message, http_status, exit_code, bytes, output)

        def close(c: sqlite3.Connection) -> None:
            if isinstance(run, AttemptKey):
                row_id = _attempt_id(c, run)
                if row_id is None:  # the file was replaced while it ran: its row again, then closed
                    row_id = _insert_attempt(c, run, "running", None, None, None, None, None, None)
            else:
                row_id = run
            _count_finished(c, row_id, status, finished_at)
            c.execute("UPDATE runs SET status = ?, finished_at = ?, message = ?, http_status = ?, exit_code = ?,"
                      " bytes = ?, output = ? WHERE id = ?", (*values, row_id))
            if retry is not None:
                _save_retry(c, retry)

        return self.write_or_hold(close)

    def set_child(self, run: int | AttemptKey, pgid: int, ident: str | None) -> bool:
        """The attempt's command runs in process group ``pgid``: a successor stops it if we die.

        By key, a missing row (a replaced file) is written again, running, with the group.
        False when it could not be written now (held, in the daemon).
        """

        def note(c: sqlite3.Connection) -> None:
            if isinstance(run, AttemptKey):
                cur = c.execute("UPDATE runs SET child_pgid = ?, child_ident = ? WHERE job_id = ? AND scheduled_for = ?"
                                " AND attempt = ?", (pgid, ident, run.job_id, run.scheduled_for, run.attempt))
                if cur.rowcount == 0:
                    _insert_attempt(c, run, "running", None, None, None, None, None, None)
                    c.execute("UPDATE runs SET child_pgid = ?, child_ident = ? WHERE job_id = ? AND scheduled_for = ?"
                              " AND attempt = ?", (pgid, ident, run.job_id, run.scheduled_for, run.attempt))
            else:
                c.execute("UPDATE runs SET child_pgid = ?, child_ident = ? WHERE id = ?", (pgid, ident, run))

        return self.write_or_hold(note)

    def clear_retry(self, job_id: str) -> None:
        self.write_or_hold(lambda c: c.execute("DELETE FROM retries WHERE job_id = ?", (job_id,)))

    def record_not_run(self, job_id: str, scheduled_for: float, status: str, message: str, *, now: float,
                       missed_count: int | None = None, first_missed: float | None = None,
                       last_missed: float | None = None) -> bool:
        """A fire that did not run: ``skipped`` (overlap) or ``missed`` (daemon down), attempt 0.

        In the daemon, storage trouble holds the row until it can be written (False then).
        """

        def insert(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, trigger, status, started_at, finished_at,"
                " message, missed_count, first_missed, last_missed) VALUES (?, ?, 0, 0, 'schedule', ?, NULL, ?, ?, ?, ?, ?)",
                (job_id, scheduled_for, status, now, message, missed_count, first_missed, last_missed),
            )
            _count_not_run(c, job_id, status, missed_count)
            c.execute("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) VALUES (?, ?)", (job_id, now))
            c.execute("UPDATE jobs_seen SET last_fire = max(coalesce(last_fire, 0), ?) WHERE job_id = ?", (scheduled_for, job_id))

        return self.write_or_hold(insert)

    # daemon bookkeeping

    def daemon_started(self, pid: int, host: str, version: str, now: float) -> dict[str, Any] | None:
        """Record this daemon; returns the previous row (its heartbeat tells how long we were down).

        From here on this State keeps the row's every field: each later update writes it
        whole, so a row lost with a replaced file, or an update the storage refused, is
        made good by the next write that lands.
        """
        with self.write() as c:
            rows = c.execute("SELECT * FROM daemon WHERE id = 1").fetchall()
            previous = dict(rows[0]) if rows else None
            c.execute(
                "INSERT INTO daemon(id, pid, host, version, started_at, heartbeat, stopped_at, ready_at) VALUES (1, ?, ?, ?, ?, ?, NULL, NULL)"
                " ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, host = excluded.host, version = excluded.version,"
                " started_at = excluded.started_at, heartbeat = excluded.heartbeat, stopped_at = NULL, ready_at = NULL",
                (pid, host, version, now, now),
            )
            self._daemon_row = dict(c.execute("SELECT * FROM daemon WHERE id = 1").fetchone())
            return previous

    def daemon_update(self, **fields: Any) -> None:
        """Update this daemon's row (written whole, see ``daemon_started``).

        In the daemon, storage trouble is not raised: the next update that lands carries
        these fields too (the episode is logged once).
        """
        if not fields:
            return
        if self._daemon_row is None:
            cols = ", ".join(f"{k} = ?" for k in fields)
            with self.write() as c:
                c.execute(f"UPDATE daemon SET {cols} WHERE id = 1", tuple(fields.values()))
            return
        self._daemon_row.update(fields)
        row = dict(self._daemon_row)
        try:
            with self.write() as c:
                _insert_daemon_row(c, row)
        except StorageUnavailable:
            pass

    def request_run(self, job_id: str, now: float, source: str = "cli") -> int:
        with self.write() as c:
            cur = c.execute("INSERT INTO requests(job_id, requested_at, source) VALUES (?, ?, ?)", (job_id, now, source))
            return int(cur.lastrowid or 0)

    def take_requests(self, now: float) -> list[tuple[int, str, float]]:
        pending = self.read("SELECT id FROM requests WHERE taken_at IS NULL LIMIT 1")
        if not pending:
            return []
        with self.write() as c:
            rows = c.execute("SELECT id, job_id, requested_at FROM requests WHERE taken_at IS NULL ORDER BY id").fetchall()
            c.execute("UPDATE requests SET taken_at = ? WHERE taken_at IS NULL", (now,))
            return [(r["id"], r["job_id"], r["requested_at"]) for r in rows]

    def request_taken(self, request_id: int) -> bool:
        rows = self.read("SELECT taken_at FROM requests WHERE id = ?", (request_id,))
        return bool(rows and rows[0]["taken_at"] is not None)


    # --- metrics and retention ---------------------------------------------------

    def metric_counters(self, after_seq: int = 0) -> tuple[dict[str, tuple], int]:
        """The /metrics counters of the jobs changed since ``after_seq`` (0: all), as plain tuples
        (``METRIC_COUNTER_COLUMNS``), and the newest change's number, to pass next time."""
        with self._lock:
            cursor = self.conn.cursor()
            cursor.row_factory = None  # tuples: a fraction of the cost of sqlite3.Row
            rows = cursor.execute(
                "SELECT job_id, success, failed, interrupted, skipped, missed, coalesce(last_success, 0),"
                " coalesce(last_failure, 0), seq FROM job_counters WHERE seq > ? ORDER BY seq", (after_seq,)).fetchall()
        return {r[0]: r[1:-1] for r in rows}, (rows[-1][-1] if rows else after_seq)

    def metric_first_seen(self, after_rowid: int = 0) -> tuple[dict[str, float], int]:
        """When each job was first seen, for the rows added since ``after_rowid`` (rows are never deleted)."""
        with self._lock:
            cursor = self.conn.cursor()
            cursor.row_factory = None
            rows = cursor.execute("SELECT rowid, job_id, first_seen FROM jobs_seen WHERE rowid > ? ORDER BY rowid",
                                  (after_rowid,)).fetchall()
        return {r[1]: r[2] for r in rows}, (rows[-1][0] if rows else after_rowid)

    def metric_histograms(self) -> dict[str, list[tuple[float, int, float]]]:
        """Per histogram: (upper bound, count in that bucket alone, sum), lowest bound first."""
        out: dict[str, list[tuple[float, int, float]]] = {name: [] for name in HISTOGRAMS}
        for row in self.read("SELECT name, le, n, total FROM histograms ORDER BY name, le"):
            out.setdefault(row["name"], []).append((row["le"], row["n"], row["total"]))
        return out

    def metric_gauges(self) -> dict[str, Any]:
        """Heartbeat, pending retries and running attempts: index lookups, never a history scan."""
        beat = self.read("SELECT heartbeat FROM daemon WHERE id = 1")
        retries = self.read("SELECT count(*) FROM retries")[0][0]
        running = self.read("SELECT count(*) FROM runs WHERE status = 'running'")[0][0]  # the partial index
        return {"heartbeat": beat[0]["heartbeat"] if beat else None, "retries_pending": retries, "attempts_running": running}

    def prune_history(self, after_id: int, *, older_than: float | None = None, keep_rows: int | None = None,
                      batch: int = 1000) -> tuple[int, int | None]:
        """Delete one batch of history rows past ``keep_history``; returns (rows deleted, where to go on).

        Looks at the ``batch`` oldest rows after ``after_id`` (ids grow with the time a row was
        written) and deletes those recorded before ``older_than`` or outside the newest
        ``keep_rows``. Never a running attempt, nor the newest attempt of a job (``list`` and
        ``show`` read it). The second value is None when the sweep reached rows that are kept:
        the rest are newer. The counters of /metrics are not touched.
        """
        with self._lock:
            cut_id = None
            if keep_rows is not None:
                newest = self.read("SELECT max(id) FROM runs")[0][0] or 0
                cut_id = newest - keep_rows
            rows = self.read(
                "SELECT id, status, coalesce(started_at, finished_at, scheduled_for) AS t FROM runs"
                " WHERE id > ? ORDER BY id LIMIT ?", (after_id, batch))
            if not rows:
                return 0, None
            first, last = rows[0]["id"], rows[-1]["id"]
            keep = {r[0] for r in self.read(
                "SELECT last_attempt_id FROM jobs_seen WHERE last_attempt_id BETWEEN ? AND ?", (first, last))}
            old = [r for r in rows if (older_than is not None and r["t"] < older_than) or (cut_id is not None and r["id"] <= cut_id)]
            done = len(old) < len(rows) or len(rows) < batch
            doomed = [(r["id"],) for r in old if r["status"] != "running" and r["id"] not in keep]
            if doomed:
                with self.write() as c:
                    c.executemany("DELETE FROM runs WHERE id = ?", doomed)
            return len(doomed), None if done else last


_NEXT_SEQ = "(SELECT coalesce(max(seq), 0) + 1 FROM job_counters)"  # the index makes it one lookup


def _count_finished(c: sqlite3.Connection, run_id: int, status: str, finished_at: float) -> None:
    """An attempt closes: its outcome, duration and (first scheduled attempt) lateness go into the totals."""
    row = c.execute("SELECT job_id, attempt, trigger, status, started_at, scheduled_for FROM runs WHERE id = ?",
                    (run_id,)).fetchone()
    if row is None or row["status"] != "running" or row["attempt"] < 1 or status not in COUNTED_OUTCOMES:
        return  # counted once, when the running row closes
    last = "last_success" if status == "success" else "last_failure"
    c.execute(
        f"INSERT INTO job_counters(job_id, {status}, {last}, seq) VALUES (?, 1, ?, {_NEXT_SEQ}) ON CONFLICT(job_id) DO UPDATE SET"
        f" {status} = {status} + 1, {last} = max(coalesce({last}, 0), excluded.{last}), seq = excluded.seq",
        (row["job_id"], finished_at))
    if row["started_at"] is None:
        return
    _observe(c, "attempt_duration", max(finished_at - row["started_at"], 0.0))
    if row["attempt"] == 1 and row["trigger"] == "schedule":
        _observe(c, "fire_lateness", max(row["started_at"] - row["scheduled_for"], 0.0))


def _count_not_run(c: sqlite3.Connection, job_id: str, status: str, missed_count: int | None) -> None:
    if status not in ("skipped", "missed"):
        return
    n = (missed_count or 1) if status == "missed" else 1
    c.execute(f"INSERT INTO job_counters(job_id, {status}, seq) VALUES (?, ?, {_NEXT_SEQ}) ON CONFLICT(job_id) DO UPDATE SET"
              f" {status} = {status} + excluded.{status}, seq = excluded.seq", (job_id, n))


def _observe(c: sqlite3.Connection, name: str, value: float) -> None:
    c.execute("INSERT INTO histograms(name, le, n, total) VALUES (?, ?, 1, ?) ON CONFLICT(name, le) DO UPDATE SET"
              " n = n + 1, total = total + excluded.total", (name, _bucket(value, HISTOGRAMS[name]), value))


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _insert_daemon_row(c: sqlite3.Connection, row: dict[str, Any]) -> None:
    cols = [k for k in row if k != "id"]
    c.execute(f"INSERT OR REPLACE INTO daemon(id, {', '.join(cols)}) VALUES (1, {', '.join('?' * len(cols))})",
              tuple(row[k] for k in cols))


def _attempt_id(c: sqlite3.Connection, key: AttemptKey) -> int | None:
    row = c.execute("SELECT id FROM runs WHERE job_id = ? AND scheduled_for = ? AND attempt = ?",
                    (key.job_id, key.scheduled_for, key.attempt)).fetchone()
    return None if row is None else int(row[0])


def _insert_attempt(c: sqlite3.Connection, key: AttemptKey, status: str, finished_at: float | None,
                    message: str | None, http_status: int | None, exit_code: int | None, bytes: int | None,
                    output: str | None) -> int:
    """Write an attempt's row again (its file was replaced while it ran), and point its job at it."""
    cur = c.execute(
        "INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, trigger, status, started_at, finished_at, message,"
        " http_status, exit_code, bytes, output, owner_pid, owner_ident) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (key.job_id, key.scheduled_for, key.attempt, key.max_attempts, key.trigger, status, key.started_at, finished_at,
         message, http_status, exit_code, bytes, output, key.owner_pid, key.owner_ident),
    )
    c.execute("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) VALUES (?, ?)", (key.job_id, key.started_at))
    c.execute("UPDATE jobs_seen SET last_attempt_id = ?, last_fire = max(coalesce(last_fire, 0), ?) WHERE job_id = ?",
              (cur.lastrowid, key.scheduled_for, key.job_id))
    return int(cur.lastrowid or 0)


def _save_retry(c: sqlite3.Connection, retry: Retry) -> None:
    c.execute(
        "INSERT INTO retries(job_id, scheduled_for, next_attempt, max_attempts, due_at, trigger) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(job_id) DO UPDATE SET scheduled_for = excluded.scheduled_for, next_attempt = excluded.next_attempt,"
        " max_attempts = excluded.max_attempts, due_at = excluded.due_at, trigger = excluded.trigger",
        (retry.job_id, retry.scheduled_for, retry.next_attempt, retry.max_attempts, retry.due_at, retry.trigger),
    )


def _blocking_claim(c: sqlite3.Connection, job_id: str, owner: str, pid: int, ident: str | None) -> Claim | None:
    """The claim on ``job_id`` held by a live process other than (owner, pid), or None."""
    row = c.execute("SELECT * FROM chain_claims WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    if row["owner"] == owner and row["owner_pid"] == pid and (not ident or not row["owner_ident"] or row["owner_ident"] == ident):
        return None  # our own
    if not pid_alive(row["owner_pid"], row["owner_ident"]):
        return None  # stale: its owner died (SIGKILL, power cut) and is ignored
    retry = None
    if row["owner"] == CLAIM_DAEMON:
        found = c.execute("SELECT * FROM retries WHERE job_id = ?", (job_id,)).fetchone()
        retry = _retry(found) if found is not None else None
    return Claim(row["job_id"], row["owner"], row["owner_pid"], row["owner_ident"], row["claimed_at"], retry)


def _take_claim(c: sqlite3.Connection, job_id: str, owner: str, pid: int, ident: str | None, now: float) -> None:
    c.execute(
        "INSERT INTO chain_claims(job_id, owner, owner_pid, owner_ident, claimed_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(job_id) DO UPDATE SET owner = excluded.owner, owner_pid = excluded.owner_pid,"
        " owner_ident = excluded.owner_ident, claimed_at = excluded.claimed_at"
        " WHERE NOT (chain_claims.owner = excluded.owner AND chain_claims.owner_pid = excluded.owner_pid)",
        (job_id, owner, pid, ident, now),
    )


def _run(row: sqlite3.Row) -> Run:
    return Run(**{k: row[k] for k in RUN_COLUMNS})


def _retry(row: sqlite3.Row) -> Retry:
    return Retry(row["job_id"], row["scheduled_for"], row["next_attempt"], row["max_attempts"], row["due_at"], row["trigger"])


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _statements(script: str) -> list[str]:
    out, buf = [], []
    for line in script.splitlines():
        stripped = line.split("--", 1)[0]
        buf.append(stripped)
        if stripped.rstrip().endswith(";"):
            statement = "\n".join(buf).strip()
            if statement.strip(";").strip():
                out.append(statement)
            buf = []
    return out
