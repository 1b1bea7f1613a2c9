"""Many daemons on one state (SPEC §10): each daemon's row, and the leader lease that says which fires.

One row of ``leader`` holds the lease: its owner (a daemon's id), when it ends
(``lease_until``, by the database's clock: ``db.lease_now``) and an ``epoch`` that
only grows, each new leader taking the next one. The leader renews it every few
seconds; a daemon that finds it lapsed (its holder died, froze or was cut off)
takes it over. A daemon's fires (``start_attempt``, ``record_not_run``) carry the
epoch it leads with (``leader_epoch``, set on the store by the daemon): a write
whose epoch is not the lease's current one, or whose lease has lapsed, is refused
(:func:`fire_fenced`), so a frozen ex-leader that wakes writes nothing. Together with
the unique (job, scheduled time, attempt) each fire happens once.

``daemons`` has a row per daemon process (host, pid, started, heartbeat, role,
the digest of the job file it applied, its home); ``workers`` is the worker
processes' registry (created with the workers' queue; read here for ``status``).
On SQLite the home's lock allows one daemon: it is always the leader.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from crawlsched.state.records import LEADER, LEADER_TTL, STANDBY, DaemonEntry, Leadership, WorkerEntry

log = logging.getLogger("crawlsched")

_DAEMON_COLUMNS = ("id", "host", "pid", "started_at", "heartbeat", "role", "jobs_digest", "home", "stopped_at")
_WORKER_COLUMNS = ("id", "host", "pid", "started_at", "heartbeat", "concurrency")


def fire_fenced(c: Any, db: Any, epoch: int | None, now: float) -> bool:
    """Is a fire written with leader ``epoch`` stale: another daemon leads since, or its lease lapsed?

    ``epoch`` None: not a leader's write (``crawlsched run``, a check, SQLite's one daemon).
    """
    if epoch is None:
        return False
    row = c.execute("SELECT epoch, lease_until FROM leader WHERE id = 1").fetchone()
    if row is None or int(row[0]) != epoch or row[1] is None:
        return True
    return float(row[1]) <= db.lease_now(c, now)


class DaemonRegistry:
    """The daemons' rows and the leader lease (mixed into the stores: ``self.db`` is their database)."""

    db: Any
    #: The leader epoch this store's fires carry (set by a daemon sharing the state; None: not fenced).
    leader_epoch: int | None = None

    def fires_fenced(self, now: float) -> bool:
        """Would a fire written now be refused as stale (this daemon no longer leads)? For the log of
        a start that wrote nothing; False when not fenced or when the state cannot say."""
        if self.leader_epoch is None:
            return False
        try:
            with self.db.write() as c:
                return fire_fenced(c, self.db, self.leader_epoch, now)
        except Exception:  # noqa: BLE001 - only the wording of a log line depends on it
            return False

    @property
    def shared(self) -> bool:
        """Several daemons may run on this state (a database server, not the home's file)."""
        return getattr(self, "path", None) is None

    def register_daemon(self, entry: DaemonEntry) -> None:
        """Write this daemon's row (a restart with the same id replaces it)."""
        values = tuple(getattr(entry, k) for k in _DAEMON_COLUMNS)
        updates = ", ".join(f"{k} = excluded.{k}" for k in _DAEMON_COLUMNS[1:])
        with self.db.write() as c:
            c.execute(f"INSERT INTO daemons({', '.join(_DAEMON_COLUMNS)}) VALUES ({', '.join('?' * len(values))})"
                      f" ON CONFLICT(id) DO UPDATE SET {updates}", values)

    def daemon_beat(self, daemon_id: str, now: float, *, jobs_digest: str | None = None,
                    stopped: bool = False) -> None:
        """This daemon is alive at ``now`` (``stopped``: it stops); ``jobs_digest``: the job file it applied now."""
        sets, params = ["heartbeat = ?"], [now]
        if jobs_digest is not None:
            sets.append("jobs_digest = ?")
            params.append(jobs_digest)
        if stopped:
            sets.append("stopped_at = ?")
            params.append(now)
        with self.db.write() as c:
            c.execute(f"UPDATE daemons SET {', '.join(sets)} WHERE id = ?", (*params, daemon_id))

    def elect(self, daemon_id: str, now: float, ttl: float = LEADER_TTL) -> Leadership:
        """Take or renew the leader lease for ``daemon_id`` if nobody else holds it live; its role and the epoch.

        One write transaction (serialized on every engine): two daemons never both lead.
        The holder renewing keeps its epoch; a daemon taking a lapsed or resigned lease
        over takes the next one. The daemon's row gets its role and heartbeat in the same write.
        """
        with self.db.write() as c:
            t = self.db.lease_now(c, now)
            row = c.execute("SELECT owner, lease_until, epoch FROM leader WHERE id = 1").fetchone()
            if row is None:
                c.execute("INSERT INTO leader(id, owner, lease_until, epoch) VALUES (1, ?, ?, 1)", (daemon_id, t + ttl))
                got = Leadership(LEADER, 1)
            elif row[0] == daemon_id and row[1] is not None:
                # Ours (even lapsed: nobody took it meanwhile, so nobody fired with another epoch).
                c.execute("UPDATE leader SET lease_until = ? WHERE id = 1", (t + ttl,))
                got = Leadership(LEADER, int(row[2]))
            elif row[1] is None or float(row[1]) <= t:
                epoch = int(row[2]) + 1
                c.execute("UPDATE leader SET owner = ?, lease_until = ?, epoch = ? WHERE id = 1", (daemon_id, t + ttl, epoch))
                # The one it replaces (dead, frozen, cut off) no longer leads, whatever its row said.
                c.execute("UPDATE daemons SET role = ? WHERE role = ? AND id != ?", (STANDBY, LEADER, daemon_id))
                got = Leadership(LEADER, epoch)
            else:
                got = Leadership(STANDBY, int(row[2]))
            c.execute("UPDATE daemons SET role = ?, heartbeat = ? WHERE id = ?", (got.role, now, daemon_id))
        return got

    def resign(self, daemon_id: str) -> None:
        """The leader stops: its lease ends now (a standby takes over at its next check), the epoch stays."""
        with self.db.write() as c:
            c.execute("UPDATE leader SET lease_until = NULL WHERE id = 1 AND owner = ?", (daemon_id,))
            c.execute("UPDATE daemons SET role = ? WHERE id = ?", (STANDBY, daemon_id))

    def leader(self) -> tuple[str | None, float | None, int] | None:
        """The lease as it is: (owner, lease_until, epoch), or None before the first election."""
        rows = self.db.read("SELECT owner, lease_until, epoch FROM leader WHERE id = 1")
        return (rows[0][0], rows[0][1], int(rows[0][2])) if rows else None

    def daemons(self) -> list[DaemonEntry]:
        """Every daemon's row, the leader first, then by start."""
        rows = self.db.read(f"SELECT {', '.join(_DAEMON_COLUMNS)} FROM daemons"
                            " ORDER BY CASE WHEN role = 'leader' THEN 0 ELSE 1 END, started_at, id")
        return [DaemonEntry(*(row[k] for k in _DAEMON_COLUMNS)) for row in rows]

    def forget_daemons(self, stopped_before: float) -> int:
        """Drop the rows of daemons that stopped (or last beat) before ``stopped_before``."""
        with self.db.write() as c:
            old = c.execute("SELECT id FROM daemons WHERE coalesce(stopped_at, heartbeat) < ?",
                            (stopped_before,)).fetchall()
            c.execute("DELETE FROM daemons WHERE coalesce(stopped_at, heartbeat) < ?", (stopped_before,))
        return len(old)

    def workers(self) -> list[WorkerEntry]:
        """Every worker process's row (none while the workers' table does not exist yet)."""
        try:
            rows = self.db.read("SELECT * FROM workers ORDER BY started_at, id")
        except Exception as exc:  # no such table (an SQLite state, or before the queue's migration)
            if _no_table(exc):
                return []
            raise
        out = []
        for row in rows:
            names = set(row.keys())
            out.append(WorkerEntry(*(row[k] if k in names else None for k in _WORKER_COLUMNS)))
        return out


def _no_table(exc: BaseException | None) -> bool:
    while exc is not None:  # a store may wrap the driver's error
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            return True
        if type(exc).__name__ == "UndefinedTable":
            return True
        exc = exc.__cause__
    return False
