"""Attempts and the fires that did not run: written before they start, closed by what they are.

An attempt's row is written ``running`` before the crawl starts, unique per (job,
scheduled time, attempt); closing it saves the next retry's due time in the same
transaction (SPEC §4). A row is found by its :class:`AttemptKey`, never by its
number alone, and written again, closed, when it is missing (a corrupt file was
replaced while the attempt ran). A write whose key carries an epoch older than
the job's chain claim is refused (crawlsched.state.leases).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from crawlsched.errors import ChainBusy
from crawlsched.state import leases
from crawlsched.state.daemons import fire_fenced
from crawlsched.state.metrics import count_finished, count_not_run
from crawlsched.state.portable import greatest, one
from crawlsched.state.records import CLAIM_DAEMON, LEASE_SECONDS, AttemptId, AttemptKey, Owner, Retry, Saved

log = logging.getLogger("crawlsched")


class AttemptWrites:
    """The store's attempt writes (mixed into ``SqliteStore``: ``self.db`` is its ``Database``)."""

    db: Any
    leader_epoch: int | None  # crawlsched.state.daemons: the epoch a daemon's fires carry

    def start_attempt(self, job_id: str, scheduled_for: float, attempt: int, max_attempts: int, *,
                      trigger: str, started_at: float, owner: Owner | None = None, claim: bool | str | None = None,
                      ttl: float = LEASE_SECONDS, pid: int | None = None, ident: str | None = None) -> AttemptId | None:
        """Write the attempt as ``running`` before it starts; None if this attempt exists already.

        ``owner`` runs it under a lease of ``ttl`` seconds (``pid``/``ident`` alone name a process
        owner on this host). With ``claim`` (True, or the owner kind), the job's chain is claimed
        in the same transaction; when another live owner holds it, nothing is written and
        ``ChainBusy`` is raised. The returned id carries the attempt's key, with the epoch of the
        claim (None without one): writes with that key are refused once another owner claims.
        A daemon that no longer leads (``leader_epoch`` stale) writes nothing and gets None.
        """
        if owner is None:
            owner = Owner(claim if isinstance(claim, str) else CLAIM_DAEMON, pid, ident)
        elif isinstance(claim, str) and claim != owner.kind:
            owner = Owner(claim, owner.pid, owner.ident, owner.host)

        def insert(c: sqlite3.Connection) -> AttemptId | None:
            if fire_fenced(c, self.db, self.leader_epoch, started_at):
                _log_fenced(job_id, scheduled_for, f"attempt {attempt}/{max_attempts}", self.leader_epoch)
                return None
            epoch = None
            now = self.db.lease_now(c, started_at)  # leases by the database's clock where it has one
            if claim:
                blocker = leases.blocking_claim(c, job_id, owner, now)
                if blocker is not None:
                    raise ChainBusy(blocker, f"job {job_id}: {blocker.describe()}")
                epoch = leases.take_claim(c, job_id, owner, now, ttl)
            row = one(c.execute(
                "INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, trigger, status, started_at,"
                " owner_pid, owner_ident, owner_id, owner_host, lease_until, epoch)"
                " VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (job_id, scheduled_for, attempt, max_attempts, trigger, started_at, owner.pid, owner.ident,
                 owner.id, owner.host, now + ttl, epoch),
            ))
            if row is None:  # this (job, scheduled time, attempt) exists already
                return None
            run_id = int(row[0])
            _point_job_at(c, job_id, run_id, scheduled_for, started_at)
            c.execute("DELETE FROM retries WHERE job_id = ? AND scheduled_for = ? AND next_attempt <= ?",
                      (job_id, scheduled_for, attempt))
            key = AttemptKey(job_id, scheduled_for, attempt, max_attempts, trigger, started_at, owner.pid, owner.ident, epoch)
            return AttemptId(run_id, key)

        return self.db.write_with(insert)

    def finish_attempt(self, run: int | AttemptKey, *, status: str, finished_at: float, message: str | None,
                       http_status: int | None = None, exit_code: int | None = None,
                       bytes: int | None = None, output: str | None = None,
                       retry: Retry | None = None, started_at: float | None = None) -> Saved:
        """Close an attempt; the next retry's due time is saved in the same transaction.

        ``run`` is the attempt's :class:`AttemptKey` (or what ``start_attempt`` returned, or,
        outside the daemon, its row id). By key, a missing row is written again, closed. In
        the daemon, storage trouble holds the write until it can land (``Saved.HELD``); a
        key whose lease was taken over is refused (``Saved.FENCED``), nothing written.
        ``started_at``: when it really began, for a row written ahead of its instant (its
        command was let go later: crawlsched.goaheads).
        """
        key = getattr(run, "key", run)
        values = (status, finished_at, message, http_status, exit_code, bytes, output)

        def close(c: sqlite3.Connection) -> Saved | None:
            if isinstance(key, AttemptKey):
                if leases.fenced(c, key):
                    log.warning("job %s: attempt %d/%d's outcome (%s) is refused: its lease ended and another owner"
                                " took the chain meanwhile", key.job_id, key.attempt, key.max_attempts, status)
                    return Saved.FENCED
                row_id = _attempt_id(c, key)
                if row_id is None:  # the file was replaced while it ran: its row again, then closed
                    row_id = _insert_attempt(c, key)
            else:
                row_id = key
            if started_at is not None:  # before the totals: its duration and lateness are from it
                c.execute("UPDATE runs SET started_at = ? WHERE id = ? AND status = 'running'", (started_at, row_id))
            count_finished(c, row_id, status, finished_at)
            c.execute("UPDATE runs SET status = ?, finished_at = ?, message = ?, http_status = ?, exit_code = ?,"
                      " bytes = ?, output = ?, lease_until = NULL WHERE id = ?", (*values, row_id))
            if retry is not None:
                _save_retry(c, retry)
            return None

        return self.db.write_or_hold(close)

    def set_child(self, run: int | AttemptKey, pgid: int, ident: str | None) -> Saved:
        """The attempt's command runs in process group ``pgid``: a successor stops it if we die.

        By key, a missing row (a replaced file) is written again, running, with the group.
        ``Saved.HELD`` when it could not be written now (in the daemon).
        """
        key = getattr(run, "key", run)

        def note(c: sqlite3.Connection) -> Saved | None:
            if not isinstance(key, AttemptKey):
                c.execute("UPDATE runs SET child_pgid = ?, child_ident = ? WHERE id = ?", (pgid, ident, key))
                return None
            if leases.fenced(c, key):
                return Saved.FENCED
            row_id = _attempt_id(c, key)
            if row_id is None:
                row_id = _insert_attempt(c, key)
            c.execute("UPDATE runs SET child_pgid = ?, child_ident = ? WHERE id = ?", (pgid, ident, row_id))
            return None

        return self.db.write_or_hold(note)

    def record_not_run(self, job_id: str, scheduled_for: float, status: str, message: str, *, now: float,
                       missed_count: int | None = None, first_missed: float | None = None,
                       last_missed: float | None = None) -> Saved:
        """A fire that did not run: ``skipped`` (overlap) or ``missed`` (daemon down), attempt 0.

        In the daemon, storage trouble holds the row until it can be written (``Saved.HELD``).
        A daemon that no longer leads writes nothing (``Saved.FENCED``, crawlsched.state.daemons).
        """

        def insert(c: sqlite3.Connection) -> Saved | None:
            if fire_fenced(c, self.db, self.leader_epoch, now):
                _log_fenced(job_id, scheduled_for, f"its {status} row", self.leader_epoch)
                return Saved.FENCED
            c.execute(
                "INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, trigger, status, started_at, finished_at,"
                " message, missed_count, first_missed, last_missed) VALUES (?, ?, 0, 0, 'schedule', ?, NULL, ?, ?, ?, ?, ?)",
                (job_id, scheduled_for, status, now, message, missed_count, first_missed, last_missed),
            )
            count_not_run(c, job_id, status, missed_count)
            c.execute("INSERT INTO jobs_seen(job_id, first_seen) VALUES (?, ?) ON CONFLICT DO NOTHING", (job_id, now))
            c.execute(f"UPDATE jobs_seen SET last_fire = {greatest('coalesce(last_fire, 0)', '?')} WHERE job_id = ?",
                      (scheduled_for, scheduled_for, job_id))

        return self.db.write_or_hold(insert)

    def save_retry(self, retry: Retry) -> Saved:
        return self.db.write_or_hold(lambda c: _save_retry(c, retry))

    def clear_retry(self, job_id: str) -> Saved:
        return self.db.write_or_hold(lambda c: c.execute("DELETE FROM retries WHERE job_id = ?", (job_id,)))

    def note_chain_end(self, job_id: str, scheduled_for: float, attempt: int, note: str) -> Saved:
        """Say on a closed attempt's row why no further attempt follows (``note`` appended once)."""

        def append(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT id, message FROM runs WHERE job_id = ? AND scheduled_for = ? AND attempt = ?"
                            " AND status != 'running'", (job_id, scheduled_for, attempt)).fetchone()
            if row is not None and note.strip(" ()") not in (row["message"] or ""):
                c.execute("UPDATE runs SET message = ? WHERE id = ?", ((row["message"] or "") + note, row["id"]))

        return self.db.write_or_hold(append)


def _log_fenced(job_id: str, scheduled_for: float, what: str, epoch: int | None) -> None:
    log.warning("job %s: %s for %.3f is not written: this daemon no longer leads (its epoch %s is stale);"
                " the leader fires it", job_id, what, scheduled_for, epoch)


def _point_job_at(c: sqlite3.Connection, job_id: str, run_id: int, scheduled_for: float, now: float) -> None:
    c.execute("INSERT INTO jobs_seen(job_id, first_seen) VALUES (?, ?) ON CONFLICT DO NOTHING", (job_id, now))
    c.execute(f"UPDATE jobs_seen SET last_attempt_id = ?, last_fire = {greatest('coalesce(last_fire, 0)', '?')}"
              " WHERE job_id = ?", (run_id, scheduled_for, scheduled_for, job_id))


def _attempt_id(c: sqlite3.Connection, key: AttemptKey) -> int | None:
    row = c.execute("SELECT id FROM runs WHERE job_id = ? AND scheduled_for = ? AND attempt = ?",
                    (key.job_id, key.scheduled_for, key.attempt)).fetchone()
    return None if row is None else int(row[0])


def _insert_attempt(c: sqlite3.Connection, key: AttemptKey) -> int:
    """Write an attempt's row again, running (its file was replaced while it ran), and point its job at it."""
    run_id = int(one(c.execute(
        "INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, trigger, status, started_at,"
        " owner_pid, owner_ident, epoch) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?) RETURNING id",
        (key.job_id, key.scheduled_for, key.attempt, key.max_attempts, key.trigger, key.started_at,
         key.owner_pid, key.owner_ident, key.epoch),
    ))[0])
    _point_job_at(c, key.job_id, run_id, key.scheduled_for, key.started_at)
    return run_id


def _save_retry(c: sqlite3.Connection, retry: Retry) -> None:
    c.execute(
        "INSERT INTO retries(job_id, scheduled_for, next_attempt, max_attempts, due_at, trigger) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(job_id) DO UPDATE SET scheduled_for = excluded.scheduled_for, next_attempt = excluded.next_attempt,"
        " max_attempts = excluded.max_attempts, due_at = excluded.due_at, trigger = excluded.trigger",
        (retry.job_id, retry.scheduled_for, retry.next_attempt, retry.max_attempts, retry.due_at, retry.trigger),
    )
