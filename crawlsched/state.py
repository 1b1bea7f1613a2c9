"""The state database (SQLite in the home folder): runs, pending retries, the daemon's heartbeat.

Times are stored as epoch seconds (REAL, UTC). Every write is one short
``BEGIN IMMEDIATE`` transaction: under WAL a read-then-write transaction fails
at once when another writer committed in between, an immediate one waits for
the lock instead. Inside one process all writes go through one connection
behind a lock, so threads never sit in SQLite's busy-sleep against each other;
other processes (the CLI, ``run``) wait on the busy timeout, and a write that
still finds the database locked is retried, never dropped.

The schema is built by numbered migrations recorded in ``PRAGMA user_version``.
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

from crawlsched.errors import StateError
from crawlsched.procs import pid_alive

log = logging.getLogger("crawlsched")

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
class Retry:
    job_id: str
    scheduled_for: float
    next_attempt: int
    max_attempts: int
    due_at: float
    trigger: str


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
            self.open()
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
        """
        deadline = time.monotonic() + self.write_deadline
        with self._lock:
            for tries_left in (1, 0):
                conn = self.conn
                try:
                    self._begin(conn, deadline)
                    conn.execute("SELECT 1 FROM daemon LIMIT 1")  # a corrupt file fails here, before any change
                    break
                except sqlite3.DatabaseError as exc:
                    _rollback(conn)
                    if not tries_left or not self._replace_if_corrupt(exc):
                        raise
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.DatabaseError):
                    self._replace_if_corrupt(exc)
                raise

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
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                if not self._replace_if_corrupt(exc):
                    raise
            return self.conn.execute(sql, params).fetchall()

    def _replace_if_corrupt(self, exc: sqlite3.DatabaseError) -> bool:
        """Move a database that went corrupt under us aside and start a fresh one (daemon only)."""
        code = getattr(exc, "sqlite_errorcode", None)
        if not self._recover_corrupt or code not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return False
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
        aside = self.move_aside()
        log.error("state database %s became corrupt (%s); moved aside to %s, starting a fresh one", self.path, exc, aside)
        conn = self._open()
        self._setup(conn)
        self._conn = conn
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
        rows = self.read(f"SELECT * FROM runs {clause}ORDER BY id DESC LIMIT ?", (*params, limit))
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
        with self.write() as c:
            c.executemany("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) VALUES (?, ?)", [(i, n) for i, n, _ in items])
            c.executemany("UPDATE jobs_seen SET daemon_seen = ? WHERE job_id = ? AND daemon_seen IS NULL", [(n, i) for i, n, _ in items])
            c.executemany(
                "UPDATE jobs_seen SET anchor = ? WHERE job_id = ? AND anchor IS NULL",
                [(a, i) for i, _, a in items if a is not None],
            )

    def reset_anchor(self, job_id: str, anchor: float | None) -> None:
        with self.write() as c:
            c.execute("UPDATE jobs_seen SET anchor = ? WHERE job_id = ?", (anchor, job_id))

    def start_attempt(self, job_id: str, scheduled_for: float, attempt: int, max_attempts: int, *,
                      trigger: str, started_at: float, pid: int, ident: str | None = None) -> int | None:
        """Write the attempt as ``running`` before it starts; None if this attempt exists already.

        ``ident`` is the owner's identity (``crawlsched.procs.identity``): with it, a later
        process with the same pid does not make the row look alive.
        """
        with self.write() as c:
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

    def finish_attempt(self, run_id: int, *, status: str, finished_at: float, message: str | None,
                       http_status: int | None = None, exit_code: int | None = None,
                       bytes: int | None = None, output: str | None = None,
                       retry: Retry | None = None) -> None:
        """Close an attempt; the next retry's due time is saved in the same transaction."""
        with self.write() as c:
            c.execute(
                "UPDATE runs SET status = ?, finished_at = ?, message = ?, http_status = ?, exit_code = ?, bytes = ?, output = ?"
                " WHERE id = ?",
                (status, finished_at, message, http_status, exit_code, bytes, output, run_id),
            )
            if retry is not None:
                _save_retry(c, retry)

    def set_child(self, run_id: int, pgid: int, ident: str | None) -> None:
        """The attempt's command runs in process group ``pgid``: a successor stops it if we die."""
        with self.write() as c:
            c.execute("UPDATE runs SET child_pgid = ?, child_ident = ? WHERE id = ?", (pgid, ident, run_id))

    def clear_retry(self, job_id: str) -> None:
        with self.write() as c:
            c.execute("DELETE FROM retries WHERE job_id = ?", (job_id,))

    def record_not_run(self, job_id: str, scheduled_for: float, status: str, message: str, *, now: float,
                       missed_count: int | None = None, first_missed: float | None = None,
                       last_missed: float | None = None) -> None:
        """A fire that did not run: ``skipped`` (overlap) or ``missed`` (daemon down), attempt 0."""
        with self.write() as c:
            c.execute(
                "INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, trigger, status, started_at, finished_at,"
                " message, missed_count, first_missed, last_missed) VALUES (?, ?, 0, 0, 'schedule', ?, NULL, ?, ?, ?, ?, ?)",
                (job_id, scheduled_for, status, now, message, missed_count, first_missed, last_missed),
            )
            c.execute("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) VALUES (?, ?)", (job_id, now))
            c.execute("UPDATE jobs_seen SET last_fire = max(coalesce(last_fire, 0), ?) WHERE job_id = ?", (scheduled_for, job_id))

    # daemon bookkeeping

    def daemon_started(self, pid: int, host: str, version: str, now: float) -> dict[str, Any] | None:
        """Record this daemon; returns the previous row (its heartbeat tells how long we were down)."""
        with self.write() as c:
            rows = c.execute("SELECT * FROM daemon WHERE id = 1").fetchall()
            previous = dict(rows[0]) if rows else None
            c.execute(
                "INSERT INTO daemon(id, pid, host, version, started_at, heartbeat, stopped_at, ready_at) VALUES (1, ?, ?, ?, ?, ?, NULL, NULL)"
                " ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, host = excluded.host, version = excluded.version,"
                " started_at = excluded.started_at, heartbeat = excluded.heartbeat, stopped_at = NULL, ready_at = NULL",
                (pid, host, version, now, now),
            )
            return previous

    def daemon_update(self, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as c:
            c.execute(f"UPDATE daemon SET {cols} WHERE id = 1", tuple(fields.values()))

    def request_run(self, job_id: str, now: float, source: str = "cli") -> int:
        with self.write() as c:
            cur = c.execute("INSERT INTO requests(job_id, requested_at, source) VALUES (?, ?, ?)", (job_id, now, source))
            return int(cur.lastrowid or 0)

    def take_requests(self, now: float) -> list[tuple[int, str, float]]:
        with self._lock:
            pending = self.conn.execute("SELECT id FROM requests WHERE taken_at IS NULL LIMIT 1").fetchall()
        if not pending:
            return []
        with self.write() as c:
            rows = c.execute("SELECT id, job_id, requested_at FROM requests WHERE taken_at IS NULL ORDER BY id").fetchall()
            c.execute("UPDATE requests SET taken_at = ? WHERE taken_at IS NULL", (now,))
            return [(r["id"], r["job_id"], r["requested_at"]) for r in rows]

    def request_taken(self, request_id: int) -> bool:
        rows = self.read("SELECT taken_at FROM requests WHERE id = ?", (request_id,))
        return bool(rows and rows[0]["taken_at"] is not None)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _save_retry(c: sqlite3.Connection, retry: Retry) -> None:
    c.execute(
        "INSERT INTO retries(job_id, scheduled_for, next_attempt, max_attempts, due_at, trigger) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(job_id) DO UPDATE SET scheduled_for = excluded.scheduled_for, next_attempt = excluded.next_attempt,"
        " max_attempts = excluded.max_attempts, due_at = excluded.due_at, trigger = excluded.trigger",
        (retry.job_id, retry.scheduled_for, retry.next_attempt, retry.max_attempts, retry.due_at, retry.trigger),
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
