"""Queued rows taken over by a worker, several in one write (crawlsched.workers.takeover groups them),
and rows queued ahead of their instant recalled by the daemon.

The same step as crawlsched.state.queue.take_over, row by row: a row still running and still the
queue's becomes the worker's, with a lease by the database's clock and the chain's next fencing
epoch (past both the claim's and the row's); any other row is refused (absent from the answer)
and its job is dropped. It is one transaction under the state's write lock, like every
read-then-write, so its order with the daemon's settling and recalls is the lock's: whichever
comes first wins, the other finds the row not the queue's any more.

The rows' ``started_at`` is the take-over's instant by the database's clock (the crawl begins
right after), or the row's scheduled instant when it is taken over just ahead of it (its worker
waits for the instant, then lets the command go): an attempt is never shown as started before
its instant.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from crawlsched.state.metrics import count_not_run
from crawlsched.state.queue import QUEUE_OWNER, WORKER_TTL, note_child_owned, take_over
from crawlsched.state.records import AttemptKey, Owner

__all__ = ["recall_ahead", "still_queued", "take_over_many"]

# One row per job in ``ids`` (the caller's promise: crawlsched.workers.takeover): the chain claim's
# upsert touches each claim row once.
# A row given a child (a command spawned ahead, held at its gate) has its process group noted in
# the same statement: it is known before the go-ahead, as ``set_child`` would make it.
_TAKE_OVER_MANY_PG = """
WITH ch AS (
    SELECT * FROM unnest(?::bigint[], ?::integer[], ?::text[]) AS t(id, pgid, ident)
), cur AS (
    SELECT r.id, r.job_id, CASE WHEN coalesce(c.epoch, 0) > coalesce(r.epoch, 0) THEN coalesce(c.epoch, 0)
                                ELSE coalesce(r.epoch, 0) END + 1 AS next_epoch,
           extract(epoch from clock_timestamp())::float8 AS now, r.scheduled_for AS due, ch.pgid, ch.ident
    FROM runs r LEFT JOIN chain_claims c ON c.job_id = r.job_id LEFT JOIN ch ON ch.id = r.id
    WHERE r.id = ANY(?) AND r.status = 'running' AND r.owner_id = ?
), claim AS (
    INSERT INTO chain_claims(job_id, owner, owner_pid, claimed_at, epoch)
    SELECT job_id, 'queue', 0, now, next_epoch FROM cur
    ON CONFLICT(job_id) DO UPDATE SET epoch = excluded.epoch
    RETURNING job_id
)
UPDATE runs SET owner_id = ?, owner_host = ?, owner_pid = ?, owner_ident = ?, lease_until = cur.now + ?,
    epoch = cur.next_epoch, started_at = greatest(cur.now, cur.due), run_home = ?,
    child_pgid = coalesce(cur.pgid, runs.child_pgid),
    child_ident = CASE WHEN cur.pgid IS NULL THEN runs.child_ident ELSE cur.ident END
FROM cur WHERE runs.id = cur.id
RETURNING runs.id, runs.job_id, runs.scheduled_for, runs.attempt, runs.max_attempts, runs.trigger, runs.epoch,
    runs.started_at
"""


def take_over_many(store: Any, run_ids: list[int], owner: Owner, home: str, *, ttl: float = WORKER_TTL,
                   children: Mapping[int, tuple[int, str | None]] | None = None) -> dict[int, AttemptKey]:
    """Take the queued rows ``run_ids`` (one per job) over for ``owner``: {run id: its key} for those taken.

    ``children`` ({run id: (process group, its identity)}): commands spawned ahead and held at
    their gate; each taken row records its group in the same write (``set_child``'s fields)."""
    if not run_ids:
        return {}
    db = store.db
    children = children or {}
    if getattr(db, "write_row", None) is None:  # SQLite (tests): row by row, each its own write
        out = {}
        for run_id in run_ids:
            key = take_over(store, run_id, owner, home, started_at=time.time())
            if key is not None:
                out[run_id] = key
                if run_id in children:
                    note_child_owned(store, key, owner, *children[run_id])
        return out
    ids = [i for i in run_ids if i in children]
    groups = (ids, [children[i][0] for i in ids], [children[i][1] for i in ids])

    def write(c: Any) -> dict[int, AttemptKey]:
        rows = c.execute(_TAKE_OVER_MANY_PG, (*groups, list(run_ids), QUEUE_OWNER.id, owner.id, owner.host, owner.pid,
                                              owner.ident, ttl, home)).fetchall()
        return {int(r["id"]): AttemptKey(r["job_id"], r["scheduled_for"], r["attempt"], r["max_attempts"], r["trigger"],
                                         float(r["started_at"]), owner.pid, owner.ident, int(r["epoch"])) for r in rows}

    return db.write_with(write)


def recall_ahead(store: Any, run_ids: list[int], message: str, *, finished_at: float) -> list[int]:
    """The daemon withdraws attempts it queued ahead of their instant (their job was paused or
    removed since): each row still the queue's and not yet due by the database's clock is closed
    ``skipped`` with ``message`` (its outcome drained as any closed queued row); the ids closed.
    A worker holding such a job finds the row not the queue's and drops the job, never crawled."""
    if not run_ids:
        return []
    db = store.db

    def write(c: Any) -> list[int]:
        now = db.lease_now(c, finished_at)
        rows = c.execute("SELECT id, job_id FROM runs WHERE id IN (" + ",".join("?" * len(run_ids)) + ")"
                         " AND status = 'running' AND owner_id = ? AND scheduled_for > ?",
                         (*run_ids, QUEUE_OWNER.id, now)).fetchall()
        for r in rows:
            c.execute("UPDATE runs SET status = 'skipped', finished_at = ?, message = ?, lease_until = NULL WHERE id = ?",
                      (finished_at, message, r["id"]))
            count_not_run(c, r["job_id"], "skipped", None)
        return [int(r["id"]) for r in rows]

    return db.write_with(write)


def still_queued(store: Any, run_id: int) -> bool:
    """Is the row still running and the queue's (a read: a worker holding a job queued ahead asks
    before it waits for the instant, so a recalled one frees its slot at once)?"""
    return bool(store.db.read("SELECT 1 FROM runs WHERE id = ? AND status = 'running' AND owner_id = ?",
                              (run_id, QUEUE_OWNER.id)))
