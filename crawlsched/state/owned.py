"""A worker's writes to the attempts it holds, each fenced by the row (still running, still its own).

The worker's side of crawlsched.state.queue's flow: :func:`finish_owned` closes its attempt (on
PostgreSQL in one statement: the row, its totals, its retry), :func:`note_child_owned` records its
command's process group, :func:`renew` renews its leases (:data:`WORKER_TTL`) and tells it which it
lost. Once a row was settled (its lease lapsed) or is another's, a write is refused
(``Saved.FENCED``) and nothing is written. crawlsched.state.queue re-exports these names.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

from crawlsched.state.attempts import _save_retry
from crawlsched.state.jobs import chunks
from crawlsched.state.metrics import COUNTED_OUTCOMES, DURATION_BUCKETS, LATENESS_BUCKETS, count_finished, pg_bucket_case
from crawlsched.state.records import AttemptKey, Owner, Retry, Saved

log = logging.getLogger("crawlsched")

__all__ = ["WORKER_TTL", "finish_owned", "note_child_owned", "renew"]

WORKER_TTL = 10.0  #: seconds: a worker's lease on an attempt (renewed every 2 s)


def _owned_row(c: Any, key: AttemptKey, owner: Owner) -> int | None:
    """The id of the attempt's row while ``owner`` still holds it (running, its own), else None."""
    row = c.execute("SELECT id, status, owner_id FROM runs WHERE job_id = ? AND scheduled_for = ? AND attempt = ?",
                    (key.job_id, key.scheduled_for, key.attempt)).fetchone()
    if row is None or row["status"] != "running" or row["owner_id"] != owner.id:
        return None
    return int(row["id"])


def finish_owned(store: Any, key: AttemptKey, owner: Owner, *, status: str, finished_at: float, message: str | None,
                 http_status: int | None = None, exit_code: int | None = None, bytes: int | None = None,
                 output: str | None = None, retry: Retry | None = None, started_at: float | None = None) -> Saved:
    """A worker closes its attempt (``finish_attempt`` with the worker's fence): only while the row is
    still running and its own. Once the row was settled (the lease lapsed) the late result is refused,
    ``Saved.FENCED``, nothing written. Fenced by the row, not by the chain's claim: a new leading
    daemon taking the chain's claim over does not void a worker's running attempt. ``started_at``:
    when the crawl really began, for a row taken over ahead of its instant (its lateness and
    duration are counted from it)."""

    if getattr(store.db, "write_row", None) is not None:  # PostgreSQL: one statement under the write lock
        params = (started_at, status, finished_at, message, http_status, exit_code, bytes, output,
                  key.job_id, key.scheduled_for, key.attempt, owner.id)
        if retry is not None:
            params += (retry.job_id, retry.scheduled_for, retry.next_attempt, retry.max_attempts, retry.due_at,
                       retry.trigger)
        sql = _close_owned_pg(status, retry is not None)

        def close_one(c: Any) -> Saved | None:
            if c.execute(sql, params).fetchone() is None:
                _refused(key, status)
                return Saved.FENCED
            return None

        return store.db.write_or_hold(close_one)

    def close(c: Any) -> Saved | None:
        row_id = _owned_row(c, key, owner)
        if row_id is None:
            _refused(key, status)
            return Saved.FENCED
        if started_at is not None:
            c.execute("UPDATE runs SET started_at = ? WHERE id = ?", (started_at, row_id))
        count_finished(c, row_id, status, finished_at)
        c.execute("UPDATE runs SET status = ?, finished_at = ?, message = ?, http_status = ?, exit_code = ?,"
                  " bytes = ?, output = ?, lease_until = NULL WHERE id = ?",
                  (status, finished_at, message, http_status, exit_code, bytes, output, row_id))
        if retry is not None:
            _save_retry(c, retry)
        return None

    return store.db.write_or_hold(close)


def _refused(key: AttemptKey, status: str) -> None:
    log.warning("job %s: attempt %d/%d's outcome (%s) is refused: its lease lapsed and the attempt was"
                " settled meanwhile", key.job_id, key.attempt, key.max_attempts, status)


@lru_cache(maxsize=16)
def _close_owned_pg(status: str, retry: bool) -> str:
    """:func:`finish_owned`'s close as one PostgreSQL statement: the row (still running, still the
    owner's), its totals (``count_finished``'s), its retry. The write lock is held for three round
    trips (the lock, this, the commit) instead of one per step: a worker thread that waits for its
    process's GIL between steps would hold every host's writes up meanwhile."""
    sql = ["WITH upd AS (UPDATE runs SET started_at = coalesce(?::float8, started_at), status = ?, finished_at = ?,"
           " message = ?, http_status = ?, exit_code = ?, bytes = ?, output = ?, lease_until = NULL"
           " WHERE job_id = ? AND scheduled_for = ? AND attempt = ? AND status = 'running' AND owner_id = ?"
           " RETURNING id, job_id, attempt, trigger, started_at, scheduled_for, finished_at)"]
    if status in COUNTED_OUTCOMES:  # the column names: validated, never a caller's text
        last = "last_success" if status == "success" else "last_failure"
        sql.append(
            f", cnt AS (INSERT INTO job_counters(job_id, {status}, {last}, seq)"
            " SELECT job_id, 1, finished_at, (SELECT coalesce(max(seq), 0) + 1 FROM job_counters) FROM upd"
            f" WHERE attempt >= 1 ON CONFLICT(job_id) DO UPDATE SET {status} = job_counters.{status} + 1,"
            f" {last} = GREATEST(coalesce(job_counters.{last}, 0), excluded.{last}), seq = excluded.seq)"
            ", dur AS (INSERT INTO histograms(name, le, n, total)"
            f" SELECT 'attempt_duration', {pg_bucket_case('d', DURATION_BUCKETS)}, 1, d FROM"
            " (SELECT greatest(finished_at - started_at, 0) AS d FROM upd WHERE attempt >= 1 AND started_at IS NOT NULL) v"
            " ON CONFLICT(name, le) DO UPDATE SET n = histograms.n + 1, total = histograms.total + excluded.total)"
            ", late AS (INSERT INTO histograms(name, le, n, total)"
            f" SELECT 'fire_lateness', {pg_bucket_case('l', LATENESS_BUCKETS)}, 1, l FROM"
            " (SELECT greatest(started_at - scheduled_for, 0) AS l FROM upd"
            "  WHERE attempt = 1 AND trigger = 'schedule' AND started_at IS NOT NULL) v"
            " ON CONFLICT(name, le) DO UPDATE SET n = histograms.n + 1, total = histograms.total + excluded.total)")
    if retry:
        sql.append(", rt AS (INSERT INTO retries(job_id, scheduled_for, next_attempt, max_attempts, due_at, trigger)"
                   " SELECT ?, ?, ?, ?, ?, ? FROM upd ON CONFLICT(job_id) DO UPDATE SET"
                   " scheduled_for = excluded.scheduled_for, next_attempt = excluded.next_attempt,"
                   " max_attempts = excluded.max_attempts, due_at = excluded.due_at, trigger = excluded.trigger)")
    sql.append(" SELECT id FROM upd")
    return "".join(sql)


def note_child_owned(store: Any, key: AttemptKey, owner: Owner, pgid: int, ident: str | None) -> Saved:
    """``set_child`` for a worker's attempt, fenced like :func:`finish_owned`."""

    def note(c: Any) -> Saved | None:
        # One statement fenced by its own row (still running, still ours): no read-then-write, so
        # on PostgreSQL it needs no global write lock (db.write_row), one round trip per attempt.
        found = c.execute("UPDATE runs SET child_pgid = ?, child_ident = ? WHERE job_id = ? AND scheduled_for = ?"
                          " AND attempt = ? AND status = 'running' AND owner_id = ? RETURNING id",
                          (pgid, ident, key.job_id, key.scheduled_for, key.attempt, owner.id)).fetchall()
        return None if found else Saved.FENCED

    write_row = getattr(store.db, "write_row", None)
    return write_row(note) if write_row is not None else store.db.write_or_hold(note)


def renew(store: Any, owner: Owner, run_ids: list[int], *, ttl: float = WORKER_TTL) -> set[int]:
    """A worker renews its leases (and its registry heartbeat); the ids it still holds.
    An id missing from the answer was settled meanwhile: the worker lost it."""
    db = store.db
    with db.write() as c:
        now = db.lease_now(c, time.time())
        held: set[int] = set()
        for chunk in chunks(run_ids, 500):
            rows = c.execute(f"UPDATE runs SET lease_until = ? WHERE owner_id = ? AND status = 'running'"
                             f" AND id IN ({','.join('?' * len(chunk))}) RETURNING id",
                             (now + ttl, owner.id, *chunk)).fetchall()
            held.update(int(r[0]) for r in rows)
        c.execute("UPDATE workers SET heartbeat = ? WHERE id = ?", (now, owner.id))
    return held
