"""The daemon's row (who runs, its heartbeat, what is next) and the run-now requests handed to it.

From ``daemon_started`` on, the store keeps the row's every field in memory and
writes it whole at each update: a row lost with a replaced file, or an update the
storage refused, is made good by the next write that lands. In the daemon, storage
trouble is not raised by these updates (the episode is logged once).
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any

from crawlsched.procs import identity
from crawlsched.state.portable import one
from crawlsched.state.records import CLAIM_DAEMON, DAEMON_FIELDS, LEASE_SECONDS, DaemonInfo, Owner, RunRequest
from crawlsched.state.trouble import StorageUnavailable

_KEEP: Any = object()  # "leave this field as it is"
_SET_ALL = ", ".join(f"{k} = excluded.{k}" for k in DAEMON_FIELDS)  # the row written whole


def _info(row: sqlite3.Row) -> DaemonInfo:
    return DaemonInfo(**{k: row[k] for k in DAEMON_FIELDS})


def _insert_row(c: sqlite3.Connection, info: DaemonInfo) -> None:
    c.execute(f"INSERT INTO daemon(id, {', '.join(DAEMON_FIELDS)}) VALUES (1, {', '.join('?' * len(DAEMON_FIELDS))})"
              f" ON CONFLICT(id) DO UPDATE SET {_SET_ALL}", tuple(getattr(info, k) for k in DAEMON_FIELDS))


class DaemonRows:
    """The store's daemon row and requests (mixed into ``SqliteStore``: ``self.db`` is its ``Database``)."""

    db: Any
    _daemon: DaemonInfo | None
    daemon_owner: Owner | None

    def daemon_started(self, pid: int, host: str, version: str, now: float) -> DaemonInfo | None:
        """Record this daemon; returns the previous row (its heartbeat tells how long we were down)."""
        with self.db.write() as c:
            rows = c.execute("SELECT * FROM daemon WHERE id = 1").fetchall()
            previous = _info(rows[0]) if rows else None
            c.execute(
                "INSERT INTO daemon(id, pid, host, version, started_at, heartbeat, stopped_at, ready_at) VALUES (1, ?, ?, ?, ?, ?, NULL, NULL)"
                " ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, host = excluded.host, version = excluded.version,"
                " started_at = excluded.started_at, heartbeat = excluded.heartbeat, stopped_at = NULL, ready_at = NULL",
                (pid, host, version, now, now),
            )
            self._daemon = _info(c.execute("SELECT * FROM daemon WHERE id = 1").fetchone())
        self.daemon_owner = Owner(CLAIM_DAEMON, pid, identity(pid), host)
        self.db.on_replaced = lambda conn: _insert_row(conn, self._daemon) if self._daemon is not None else None
        return previous

    def daemon(self) -> DaemonInfo | None:
        rows = self.db.read("SELECT * FROM daemon WHERE id = 1")
        return _info(rows[0]) if rows else None

    def daemon_ready(self, now: float, *, http: str | None, handled_until: float | None = _KEEP,
                     next_job: str | None = _KEEP, next_due: float | None = _KEEP) -> None:
        """The daemon took its jobs and serves: ready, its job file applied."""
        self._update(ready_at=now, config_ok=1, config_error=None, http=http, handled_until=handled_until,
                     next_job=next_job, next_due=next_due)

    def heartbeat(self, now: float, *, handled_until: float | None = _KEEP, next_job: str | None = _KEEP,
                  next_due: float | None = _KEEP, pid: int | None = _KEEP, ttl: float = LEASE_SECONDS) -> None:
        """The loop is alive at ``now``: the row says so, and the daemon's leases are renewed."""
        self._update(heartbeat=now, handled_until=handled_until, next_job=next_job, next_due=next_due, pid=pid)
        if self.daemon_owner is not None:
            try:
                self.renew_leases(  # type: ignore[attr-defined]  # ChainLeases
                    self.daemon_owner, now, ttl=ttl)
            except StorageUnavailable:
                pass

    def config_status(self, error: str | None, *, next_job: str | None = _KEEP, next_due: float | None = _KEEP) -> None:
        """The job file as it is now: applied (``error`` None) or not, and why."""
        self._update(config_ok=0 if error else 1, config_error=error, next_job=next_job, next_due=next_due)

    def daemon_stopped(self, now: float, *, handled_until: float | None = _KEEP) -> None:
        self._update(heartbeat=now, stopped_at=now, handled_until=handled_until)

    def _update(self, **fields: Any) -> None:
        fields = {k: v for k, v in fields.items() if v is not _KEEP}
        if self._daemon is None:  # not the daemon's store (a check, a test): a plain update
            cols = ", ".join(f"{k} = ?" for k in fields)
            with self.db.write() as c:
                c.execute(f"UPDATE daemon SET {cols} WHERE id = 1", tuple(fields.values()))
            return
        self._daemon = info = replace(self._daemon, **fields)
        try:
            with self.db.write() as c:
                _insert_row(c, info)
        except StorageUnavailable:
            pass

    # --- run-now requests ----------------------------------------------------------

    def request_run(self, job_id: str, now: float, source: str = "cli") -> int:
        with self.db.write() as c:
            return int(one(c.execute("INSERT INTO requests(job_id, requested_at, source) VALUES (?, ?, ?) RETURNING id",
                                     (job_id, now, source)))[0])

    def take_requests(self, now: float) -> list[RunRequest]:
        """The requests not taken yet, oldest first, each taken once (whoever else asks gets none of them)."""
        pending = self.db.read("SELECT id FROM requests WHERE taken_at IS NULL LIMIT 1")
        if not pending:
            return []
        with self.db.write() as c:
            rows = c.execute("SELECT id, job_id, requested_at FROM requests WHERE taken_at IS NULL ORDER BY id").fetchall()
            c.execute("UPDATE requests SET taken_at = ? WHERE taken_at IS NULL", (now,))
            return [RunRequest(r["id"], r["job_id"], r["requested_at"]) for r in rows]

    def request_taken(self, request_id: int) -> bool:
        rows = self.db.read("SELECT taken_at FROM requests WHERE id = ?", (request_id,))
        return bool(rows and rows[0]["taken_at"] is not None)

    def count_requests(self, *, pending: bool = False) -> int:
        """How many run-now requests were made (``pending``: wait to be taken)."""
        where = " WHERE taken_at IS NULL" if pending else ""
        return int(self.db.read(f"SELECT count(*) FROM requests{where}")[0][0])
