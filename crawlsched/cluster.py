"""This daemon among those sharing one state (SPEC §10): its row, its role, the leader lease's upkeep.

On a shared state (PostgreSQL) the daemon that holds the leader lease fires; the
others stand by: their plan is loaded, they serve the web API and write their
heartbeat, and check the lease every ``CHECK_EVERY`` seconds. The leader renews it
every ``RENEW_EVERY`` seconds for ``LEADER_TTL``; a leader that died or froze is
replaced within ``LEADER_TTL + CHECK_EVERY`` (+ one turn). A leader counts itself
leading only until its last renewal's ``LEADER_TTL`` has passed on its own
monotonic clock (a renewal that fails, a freeze): then it fires nothing until a
renewal lands again; and its fires carry the lease's epoch, which the database
refuses once another daemon leads (crawlsched.state.daemons), whatever this
process believes. On SQLite the home's lock allows one daemon: it always leads,
without a lease.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import socket
from pathlib import Path
from typing import Callable

from crawlsched.state import LEADER, LEADER_TTL, STANDBY, DaemonEntry, Leadership, State, StorageUnavailable

__all__ = ["CHECK_EVERY", "RENEW_EVERY", "Change", "Membership", "digest"]

RENEW_EVERY = 2.0  # seconds between the leader's renewals of its lease
CHECK_EVERY = 1.0  # seconds between a standby's looks at the lease
FORGET_AFTER = 7 * 24 * 3600.0  # rows of daemons gone this long are dropped at a start


class Change(enum.Enum):
    """What a look at the lease changed."""

    NONE = "none"
    TOOK = "took"  #: this daemon leads now: it takes over as a start does
    LOST = "lost"  #: another daemon leads now: this one stands by


def digest(data: bytes) -> str:
    """The job file's fingerprint, to show daemons whose files differ."""
    return hashlib.sha256(data).hexdigest()


class Membership:
    """This daemon's place among those sharing the state."""

    def __init__(self, state: State, daemon_id: str, pid: int, home: Path, log: logging.Logger, *,
                 clock: Callable[[], float], monotonic: Callable[[], float], shared: bool | None = None) -> None:
        self.state, self.id, self.pid, self.home, self.log = state, daemon_id, pid, Path(home), log
        self.clock, self.monotonic = clock, monotonic
        self.shared = bool(getattr(state, "shared", False)) if shared is None else shared
        self.role = LEADER if not self.shared else STANDBY
        self.epoch: int | None = None
        self.valid_until = float("inf") if not self.shared else 0.0  # monotonic: the lease as far as we know
        self.check_at = 0.0  # monotonic: the next look at the lease
        self.digest: str | None = None  # of the job file applied, as written in the row

    @property
    def leading(self) -> bool:
        """This daemon fires now: it leads and its lease has not run out on its own clock."""
        return self.role == LEADER and self.monotonic() < self.valid_until

    def join(self, now: float, jobs_digest: str | None) -> None:
        """Write this daemon's row; on a shared state, take the lease if nobody holds it."""
        self.digest = jobs_digest
        try:  # on one host's file, the daemons before this one are gone (the home's lock says so)
            self.state.forget_daemons(now - FORGET_AFTER if self.shared else now)
        except Exception as exc:  # a housekeeping write: never what stops a start
            self.log.warning("could not drop the rows of daemons long gone: %s", exc)
        self.state.register_daemon(DaemonEntry(self.id, socket.gethostname(), self.pid, now, now, self.role,
                                               jobs_digest, str(self.home)))
        if self.shared:
            self.check(now)

    def due(self) -> bool:
        return self.shared and self.monotonic() >= self.check_at

    def wait(self) -> float | None:
        """Seconds until the next look at the lease (None: no lease to keep)."""
        return max(0.0, self.check_at - self.monotonic()) if self.shared else None

    def check(self, now: float) -> Change:
        """Renew (leader) or look at (standby) the lease; what changed."""
        began = self.monotonic()
        self.check_at = began + CHECK_EVERY  # tried again soon if the database does not answer
        was_leading = self.role == LEADER
        got: Leadership = self.state.elect(self.id, now)
        self.epoch = got.epoch
        if got.leading:
            self.valid_until = began + LEADER_TTL
            self.check_at = began + RENEW_EVERY
            self.state.leader_epoch = got.epoch  # every fire of this daemon carries it
        else:
            self.state.leader_epoch = 0  # no epoch is 0: a standby's fires, if any, are refused
        self.role = got.role
        if got.leading and not was_leading:
            return Change.TOOK
        if was_leading and not got.leading:
            return Change.LOST
        return Change.NONE

    def beat(self, now: float, jobs_digest: str | None = None) -> None:
        """The row's heartbeat (and the job file's digest when it changed)."""
        changed = jobs_digest if jobs_digest is not None and jobs_digest != self.digest else None
        try:
            self.state.daemon_beat(self.id, now, jobs_digest=changed)
        except StorageUnavailable:
            return  # the next beat that lands says it (the episode is logged once, by the state)
        if changed is not None:
            self.digest = changed

    def applied(self, jobs_digest: str | None) -> None:
        """A job file was applied: its digest goes in the row now (``status`` compares them)."""
        if jobs_digest is not None and jobs_digest != self.digest:
            self.beat(self.clock(), jobs_digest)

    def still_leads(self) -> bool:
        """At a stop: does this daemon hold the lease still? (Its grace period can outlast the
        lease: a standby has taken over meanwhile, and the cluster's row is the new leader's.)"""
        if not self.shared:
            return True
        if self.role != LEADER:
            return False
        lease = self.state.leader()
        return lease is not None and lease[0] == self.id and lease[2] == self.epoch

    def resign(self) -> None:
        """Give the lease up now (a stop): this daemon fires nothing more, a standby takes over."""
        if self.shared and self.role == LEADER:
            self.state.resign(self.id)
            self.role = STANDBY
            self.state.leader_epoch = 0

    def leave(self, now: float) -> None:
        """Stopping: a leader resigns (a standby takes over at its next look); the row says stopped."""
        if self.shared and self.role == LEADER:
            self.state.resign(self.id)
            self.role = STANDBY
        self.state.daemon_beat(self.id, now, stopped=True)
