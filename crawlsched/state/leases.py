"""Who holds a job's chain: an owner's lease with a fencing epoch (SPEC §4: a job never overlaps itself).

The daemon holds a chain from its first attempt until it ends (its retry waits
included), a ``crawlsched run`` for its whole chain. A claim is a lease: live
until ``lease_until`` (each heartbeat of its owner renews it) or until it is
released. Each new claim of a job takes the next epoch (the row stays when
released, so epochs only grow); a write that carries an older epoch than the
job's claim is refused (``fenced``): its owner lost the chain meanwhile.

On one host this store also knows its holders by process identity
(crawlsched.procs): a holder on this host that is alive keeps its lease (its
process renews it), one that is gone has lost it at once. Holders elsewhere, or
without a process, are judged by ``lease_until`` alone.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from typing import Any

from crawlsched.errors import ChainBusy
from crawlsched.procs import pid_alive
from crawlsched.state.portable import greatest
from crawlsched.state.records import CLAIM_DAEMON, LEASE_SECONDS, AttemptKey, Claim, Lease, Owner, Retry

HOST = socket.gethostname()
NOBODY = Owner("", 0, None, "")


def holder_alive(host: str | None, pid: int | None, ident: str | None, lease_until: float | None, now: float) -> bool:
    """Is a lease (of a claim or a running attempt) still held? ``host`` None: a row from before leases."""
    if (host is None or host == HOST) and pid:
        return pid_alive(pid, ident)  # this host's process renews its lease while it lives, and ends it
    return lease_until is not None and lease_until > now


def _ours(row: sqlite3.Row, owner: Owner) -> bool:
    if row["owner_id"] is not None:
        return bool(row["owner_id"] == owner.id)
    return (row["owner"] == owner.kind and row["owner_pid"] == owner.pid  # a claim from before leases
            and (not owner.ident or not row["owner_ident"] or row["owner_ident"] == owner.ident))


def _retry(row: sqlite3.Row) -> Retry:
    return Retry(row["job_id"], row["scheduled_for"], row["next_attempt"], row["max_attempts"], row["due_at"], row["trigger"])


def blocking_claim(c: sqlite3.Connection, job_id: str, owner: Owner, now: float) -> Claim | None:
    """The live claim on ``job_id`` held by another owner than ``owner``, or None."""
    row = c.execute("SELECT * FROM chain_claims WHERE job_id = ?", (job_id,)).fetchone()
    if row is None or row["lease_until"] is None or _ours(row, owner):
        return None  # free, released, or our own
    if not holder_alive(row["owner_host"], row["owner_pid"], row["owner_ident"], row["lease_until"], now):
        return None  # its holder died (SIGKILL, power cut) or its lease ran out: taken over
    retry = None
    if row["owner"] == CLAIM_DAEMON:
        found = c.execute("SELECT * FROM retries WHERE job_id = ?", (job_id,)).fetchone()
        retry = _retry(found) if found is not None else None
    return Claim(row["job_id"], row["owner"], row["owner_pid"], row["owner_ident"], row["claimed_at"], retry,
                 row["epoch"], row["lease_until"], row["owner_host"])


def take_claim(c: sqlite3.Connection, job_id: str, owner: Owner, now: float, ttl: float) -> int:
    """Claim (or renew our claim on) a chain nobody else holds; returns the lease's epoch."""
    row = c.execute("SELECT * FROM chain_claims WHERE job_id = ?", (job_id,)).fetchone()
    until = now + ttl
    if row is not None and row["lease_until"] is not None and _ours(row, owner):
        c.execute(f"UPDATE chain_claims SET lease_until = {greatest('coalesce(lease_until, 0)', '?')}, owner_id = ?,"
                  " owner_host = ? WHERE job_id = ?", (until, until, owner.id, owner.host, job_id))
        return int(row["epoch"])
    epoch = int(row["epoch"]) + 1 if row is not None else 1
    c.execute(
        "INSERT INTO chain_claims(job_id, owner, owner_pid, owner_ident, claimed_at, owner_id, owner_host, lease_until, epoch)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id) DO UPDATE SET owner = excluded.owner,"
        " owner_pid = excluded.owner_pid, owner_ident = excluded.owner_ident, claimed_at = excluded.claimed_at,"
        " owner_id = excluded.owner_id, owner_host = excluded.owner_host, lease_until = excluded.lease_until,"
        " epoch = excluded.epoch",
        (job_id, owner.kind, owner.pid or 0, owner.ident, now, owner.id, owner.host, until, epoch),
    )
    return epoch


def fenced(c: sqlite3.Connection, key: AttemptKey) -> bool:
    """Is this write stale: has another owner claimed the job's chain since the key's lease?"""
    if key.epoch is None:
        return False
    row = c.execute("SELECT epoch FROM chain_claims WHERE job_id = ?", (key.job_id,)).fetchone()
    return row is not None and int(row[0]) > key.epoch


class ChainLeases:
    """The store's chain claims (mixed into ``SqliteStore``: ``self.db`` is its ``Database``)."""

    db: Any

    def claim_chain(self, job_id: str, owner: Owner, now: float, *, ttl: float = LEASE_SECONDS) -> Lease:
        """Take the job's chain for ``owner``, or raise ``ChainBusy`` naming the live claim that holds it.

        The check and the claim are one transaction: two owners never both get it. A claim
        whose lease ended (or whose holder is known gone) is taken over, with a higher epoch.
        """
        with self.db.write() as c:
            now = self.db.lease_now(c, now)  # the database's clock where it has one
            blocker = blocking_claim(c, job_id, owner, now)
            if blocker is not None:
                raise ChainBusy(blocker, f"job {job_id}: {blocker.describe()}")
            return Lease(job_id, owner, take_claim(c, job_id, owner, now, ttl), now + ttl)

    def claim_chains(self, job_ids: list[str], owner: Owner, now: float, *,
                     ttl: float = LEASE_SECONDS) -> dict[str, Claim]:
        """``claim_chain`` for many jobs in one transaction; returns the claims that hold some of them."""
        blocked: dict[str, Claim] = {}
        if not job_ids:
            return blocked
        with self.db.write() as c:
            now = self.db.lease_now(c, now)
            for job_id in job_ids:
                blocker = blocking_claim(c, job_id, owner, now)
                if blocker is None:
                    take_claim(c, job_id, owner, now, ttl)
                else:
                    blocked[job_id] = blocker
        return blocked

    def release_chains(self, job_ids: list[str], owner: Owner) -> None:
        """The chains ended: end this owner's leases on them (another's claim is left alone)."""
        if not job_ids:
            return
        with self.db.write() as c:
            for job_id in job_ids:
                row = c.execute("SELECT * FROM chain_claims WHERE job_id = ?", (job_id,)).fetchone()
                if row is not None and _ours(row, owner):
                    c.execute("UPDATE chain_claims SET lease_until = NULL WHERE job_id = ?", (job_id,))

    def claim(self, job_id: str, now: float | None = None) -> Claim | None:
        """The live claim on the job's chain, if any (read only)."""
        with self.db.lock:
            conn = self.db.conn
            return blocking_claim(conn, job_id, NOBODY, self.db.lease_now(conn, time.time() if now is None else now))

    def renew_leases(self, owner: Owner, now: float, *, ttl: float = LEASE_SECONDS) -> None:
        """Extend every lease ``owner`` holds (its chains and running attempts) to ``now + ttl``."""
        with self.db.write() as c:  # not held in trouble: the next renewal that lands covers it
            until = self.db.lease_now(c, now) + ttl
            c.execute("UPDATE chain_claims SET lease_until = ? WHERE owner_id = ? AND lease_until IS NOT NULL",
                      (until, owner.id))
            c.execute("UPDATE runs SET lease_until = ? WHERE owner_id = ? AND status = 'running'", (until, owner.id))
