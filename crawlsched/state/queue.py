"""The store's side of ``executor = "workers"``: queued attempts, their take-over by a worker,
worker leases, lapsed leases settled, closed attempts drained, the worker registry.

Every operation is one write transaction (serialized like every other), its SQL portable
(crawlsched.state.portable); leases are judged and written by the database's clock
(``db.lease_now``). The flow of one attempt:

1. :func:`start_queued` (the daemon): the ``running`` row, owned by the queue (:data:`QUEUE_OWNER`)
   with a lease the daemon renews while the job waits, the job's chain claimed, and the queue
   job deferred by the caller's ``defer`` in the same transaction;
2. :func:`take_over` (a worker, before it crawls): the row becomes the worker's, with a lease and
   the next fencing epoch of the job's chain; a row that is closed already (settled meanwhile)
   or someone else's is refused and the job dropped;
3. :func:`renew` (the worker, every few seconds; crawlsched.state.owned holds the worker's writes): the rows it still holds; a row missing from the
   answer was lost (settled): its command is stopped and nothing more is written;
4. the worker closes the row (:func:`finish_owned`: only while the row is still its own), or
   :func:`settle_lapsed` (the leading daemon) closes it ``interrupted`` with the next attempt
   when its lease lapsed, and bumps the epoch, so the late owner's writes are refused;
5. closing a queued row records it in ``attempt_outcomes`` (a trigger in PostgreSQL, which also
   NOTIFYs): :func:`drain_closed` hands the daemon its rows and saved retries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from crawlsched.state import leases
from crawlsched.state.attempts import _save_retry
from crawlsched.state.jobs import chunks, run_of, running_alive
from crawlsched.state.metrics import count_finished
from crawlsched.state.owned import WORKER_TTL, finish_owned, note_child_owned, renew  # noqa: F401 (callers' names)
from crawlsched.state.portable import greatest
from crawlsched.state.records import AttemptKey, Claim, Owner, Retry, Run
from crawlsched.state.workerrows import list_workers, register_worker, unregister_worker  # noqa: F401 (callers' names)

__all__ = ["QUEUE_OWNER", "QUEUE_TTL", "WORKER_TTL", "Queued", "drain_closed", "finish_owned", "list_workers",
           "note_child_owned", "queued_running", "register_worker", "renew", "renew_queued", "settle_lapsed",
           "start_queued", "take_over", "unregister_worker"]

QUEUE_OWNER = Owner("queue", None, None, "")  #: who owns a queued row until a worker takes it over
QUEUE_TTL = 30.0  #: seconds: a queued row's lease (the leading daemon renews it while its job waits)


def _not_leading(c: Any, store: Any, now: float) -> bool:
    """Many daemons on one state: is this store's daemon no longer the leader (its fires fenced)?
    (crawlsched.state.daemons.fire_fenced, when that module is there; never, otherwise.)"""
    epoch = getattr(store, "leader_epoch", None)
    if epoch is None:
        return False
    from crawlsched.state.daemons import fire_fenced  # type: ignore[import-not-found]

    return bool(fire_fenced(c, store.db, epoch, now))


@dataclass(frozen=True)
class Queued:
    """What :func:`start_queued` did with one attempt: queued (``run_id``), or not, and why."""

    run_id: int | None = None
    busy: str | None = None  #: another owner runs the job: the fire is recorded skipped
    claim: Claim | None = None
    duplicate: bool = False  #: this (job, scheduled time, attempt) has a row already
    fenced: bool = False  #: this daemon no longer leads: nothing written


def start_queued(store: Any, attempts: list[dict[str, Any]], claimer: Owner, defer: Callable[[Any, list[dict]], list[int]],
                 *, started_at: float, ttl: float = QUEUE_TTL, claim_ttl: float | None = None) -> list[Queued]:
    """Write each attempt's ``running`` row (owned by the queue) and defer its queue job, all in one transaction.

    ``attempts`` are dicts with ``job_id, scheduled_for, attempt, max_attempts, trigger`` and
    ``payload`` (the task's arguments, to which ``run_id`` is added). The job's chain is claimed
    for ``claimer`` (the daemon) as ``start_attempt(claim=True)`` does.
    """
    db = store.db
    claim_ttl = claim_ttl if claim_ttl is not None else leases.LEASE_SECONDS

    def write(c: Any) -> list[Queued]:
        if _not_leading(c, store, started_at):
            return [Queued(fenced=True) for _ in attempts]
        now = db.lease_now(c, started_at)
        # Set-based, a statement per step and not per attempt: a burst of 200 is one short transaction.
        job_ids = sorted({a["job_id"] for a in attempts})
        running: dict[str, Run] = {}
        claims: dict[str, Any] = {}
        for chunk in chunks(job_ids, 500):
            marks = ",".join("?" * len(chunk))
            for r in c.execute(f"SELECT * FROM runs WHERE status = 'running' AND job_id IN ({marks})", tuple(chunk)).fetchall():
                if r["job_id"] not in running and running_alive(r, now):
                    running[r["job_id"]] = run_of(r)
            for r in c.execute(f"SELECT * FROM chain_claims WHERE job_id IN ({marks})", tuple(chunk)).fetchall():
                claims[r["job_id"]] = r
        out: list[Queued | None] = []
        claim_rows, wanted, taken = [], [], set()
        for a in attempts:
            job_id = a["job_id"]
            other = running.get(job_id)
            if other is not None or job_id in taken:
                where = f" on {other.owner_host}" if other is not None and other.owner_host else ""
                who = f"pid {other.owner_pid}{where}" if other is not None and other.owner_pid else "the queue"
                out.append(Queued(busy=f"running in another process ({who})"))
                continue
            row = claims.get(job_id)
            if row is not None and row["lease_until"] is not None and not leases._ours(row, claimer):
                blocker = leases.blocking_claim(c, job_id, claimer, now)
                if blocker is not None:
                    out.append(Queued(busy=blocker.describe(), claim=blocker))
                    continue
            until = now + claim_ttl
            if row is not None and row["lease_until"] is not None and leases._ours(row, claimer):
                epoch, claimed_at, until = int(row["epoch"]), row["claimed_at"], max(until, float(row["lease_until"]))
            else:
                epoch, claimed_at = (int(row["epoch"]) + 1 if row is not None else 1), now
            claim_rows.append((job_id, claimer.kind, claimer.pid or 0, claimer.ident, claimed_at, claimer.id, claimer.host,
                               until, epoch))
            wanted.append((len(out), a, epoch))
            taken.add(job_id)
            out.append(None)
        if claim_rows:
            c.executemany(
                "INSERT INTO chain_claims(job_id, owner, owner_pid, owner_ident, claimed_at, owner_id, owner_host,"
                " lease_until, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id) DO UPDATE SET"
                " owner = excluded.owner, owner_pid = excluded.owner_pid, owner_ident = excluded.owner_ident,"
                " claimed_at = excluded.claimed_at, owner_id = excluded.owner_id, owner_host = excluded.owner_host,"
                " lease_until = excluded.lease_until, epoch = excluded.epoch", claim_rows)
        ids: dict[tuple[str, float, int], int] = {}
        for chunk in chunks(wanted, 200):
            values = ", ".join("(?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)" for _ in chunk)
            params: list[Any] = []
            for _, a, epoch in chunk:
                params += [a["job_id"], a["scheduled_for"], a["attempt"], a["max_attempts"], a["trigger"], started_at,
                           QUEUE_OWNER.id, now + ttl, epoch]
            for r in c.execute(
                    "INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, trigger, status, started_at,"
                    f" owner_id, lease_until, epoch) VALUES {values} ON CONFLICT DO NOTHING"
                    " RETURNING id, job_id, scheduled_for, attempt", tuple(params)).fetchall():
                ids[(r["job_id"], float(r["scheduled_for"]), int(r["attempt"]))] = int(r["id"])
        queued: list[tuple[int, dict]] = []
        seen, pointed, cleared = [], [], []
        for index, a, _ in wanted:
            run_id = ids.get((a["job_id"], float(a["scheduled_for"]), int(a["attempt"])))
            if run_id is None:
                out[index] = Queued(duplicate=True)
                continue
            out[index] = Queued(run_id=run_id)
            queued.append((run_id, {**a["payload"], "run_id": run_id}))
            seen.append((a["job_id"], started_at))
            pointed.append((run_id, a["scheduled_for"], a["scheduled_for"], a["job_id"]))
            cleared.append((a["job_id"], a["scheduled_for"], a["attempt"]))
        if queued:
            c.executemany("INSERT INTO jobs_seen(job_id, first_seen) VALUES (?, ?) ON CONFLICT DO NOTHING", seen)
            c.executemany(f"UPDATE jobs_seen SET last_attempt_id = ?, last_fire = {greatest('coalesce(last_fire, 0)', '?')}"
                          " WHERE job_id = ?", pointed)
            c.executemany("DELETE FROM retries WHERE job_id = ? AND scheduled_for = ? AND next_attempt <= ?", cleared)
            job_numbers = defer(c, [payload for _, payload in queued])
            c.executemany("UPDATE runs SET queue_job = ? WHERE id = ?",
                          [(job, run_id) for (run_id, _), job in zip(queued, job_numbers)])
        return [r if r is not None else Queued(duplicate=True) for r in out]

    return db.write_with(write)


def renew_queued(store: Any, run_ids: list[int], *, ttl: float = QUEUE_TTL) -> None:
    """The leading daemon renews the queue's lease on rows whose job still waits for a worker."""
    if not run_ids:
        return
    db = store.db
    with db.write() as c:
        until = db.lease_now(c, time.time()) + ttl
        for chunk in chunks(run_ids, 500):
            c.execute(f"UPDATE runs SET lease_until = ? WHERE status = 'running' AND owner_id = ?"
                      f" AND id IN ({','.join('?' * len(chunk))})", (until, QUEUE_OWNER.id, *chunk))


def queued_running(store: Any) -> list[Run]:
    """Queued attempts still open: waiting for a worker, or running in one (a new daemon adopts their chains)."""
    return [run_of(r) for r in store.db.read("SELECT * FROM runs WHERE status = 'running' AND queue_job IS NOT NULL"
                                              " ORDER BY id")]


def take_over(store: Any, run_id: int, owner: Owner, home: str, *, started_at: float,
              ttl: float = WORKER_TTL) -> AttemptKey | None:
    """A worker takes a queued row over before it crawls: its owner, a lease by the database's clock,
    the chain's next fencing epoch. None (nothing written) when the row is closed already (its lease
    lapsed and it was settled) or is not the queue's: the job is dropped, never crawled."""
    db = store.db
    if getattr(db, "write_row", None) is not None:
        return _take_over_pg(db, run_id, owner, home, started_at=started_at, ttl=ttl)

    def write(c: Any) -> AttemptKey | None:
        row = c.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row["status"] != "running" or row["owner_id"] != QUEUE_OWNER.id:
            return None
        now = db.lease_now(c, started_at)
        epoch = _next_epoch(c, row["job_id"], row["epoch"], now)
        c.execute("UPDATE runs SET owner_id = ?, owner_host = ?, owner_pid = ?, owner_ident = ?, lease_until = ?,"
                  " epoch = ?, started_at = ?, run_home = ? WHERE id = ?",
                  (owner.id, owner.host, owner.pid, owner.ident, now + ttl, epoch, started_at, home, run_id))
        return AttemptKey(row["job_id"], row["scheduled_for"], row["attempt"], row["max_attempts"], row["trigger"],
                          started_at, owner.pid, owner.ident, epoch)

    return db.write_with(write)


#: take_over on PostgreSQL in one statement (under the write lock, like every read-then-write): the
#: row is checked (still running, still the queue's), the chain's epoch bumped past both the claim's
#: and the row's (a claim row created when there is none, as _next_epoch does), the row taken over
#: with a lease by the database's clock. Five round trips per attempt instead of nine.
_TAKE_OVER_PG = """
WITH cur AS (
    SELECT r.id, r.job_id, CASE WHEN coalesce(c.epoch, 0) > coalesce(r.epoch, 0) THEN coalesce(c.epoch, 0)
                                ELSE coalesce(r.epoch, 0) END + 1 AS next_epoch,
           extract(epoch from clock_timestamp())::float8 AS now
    FROM runs r LEFT JOIN chain_claims c ON c.job_id = r.job_id
    WHERE r.id = ? AND r.status = 'running' AND r.owner_id = ?
), claim AS (
    INSERT INTO chain_claims(job_id, owner, owner_pid, claimed_at, epoch)
    SELECT job_id, 'queue', 0, now, next_epoch FROM cur
    ON CONFLICT(job_id) DO UPDATE SET epoch = excluded.epoch
    RETURNING job_id
)
UPDATE runs SET owner_id = ?, owner_host = ?, owner_pid = ?, owner_ident = ?, lease_until = cur.now + ?,
    epoch = cur.next_epoch, started_at = ?, run_home = ?
FROM cur WHERE runs.id = cur.id
RETURNING runs.job_id, runs.scheduled_for, runs.attempt, runs.max_attempts, runs.trigger, runs.epoch
"""


def _take_over_pg(db: Any, run_id: int, owner: Owner, home: str, *, started_at: float, ttl: float) -> AttemptKey | None:
    def write(c: Any) -> AttemptKey | None:
        row = c.execute(_TAKE_OVER_PG, (run_id, QUEUE_OWNER.id, owner.id, owner.host, owner.pid, owner.ident, ttl,
                                        started_at, home)).fetchone()
        if row is None:
            return None
        return AttemptKey(row["job_id"], row["scheduled_for"], row["attempt"], row["max_attempts"], row["trigger"],
                          started_at, owner.pid, owner.ident, int(row["epoch"]))

    return db.write_with(write)


def _next_epoch(c: Any, job_id: str, row_epoch: int | None, now: float) -> int:
    """Bump the job's chain epoch (its claim stays with its holder): writes under an older one are refused."""
    claim = c.execute("SELECT epoch FROM chain_claims WHERE job_id = ?", (job_id,)).fetchone()
    epoch = max(int(claim[0]) if claim is not None else 0, int(row_epoch or 0)) + 1
    if claim is not None:
        c.execute("UPDATE chain_claims SET epoch = ? WHERE job_id = ?", (epoch, job_id))
    else:  # a released claim that only carries the epoch
        c.execute("INSERT INTO chain_claims(job_id, owner, owner_pid, claimed_at, epoch) VALUES (?, 'queue', 0, ?, ?)",
                  (job_id, now, epoch))
    return epoch


def settle_lapsed(store: Any, decide: Callable[[Run], tuple[str, str, Retry | None, str | None]],
                  now: float | None = None, *, orphaned: str | None = None, params: tuple[Any, ...] = ()) -> list[Run]:
    """Close every queued attempt whose lease lapsed (its worker was killed, frozen or cut off, or a
    fetched job was never taken over): ``decide(run)`` gives (status, message, retry, output), the
    retry saved in the same transaction. The chain's epoch is bumped: the late owner's writes are
    refused. Returns the rows settled (as they were).

    ``orphaned`` (with its ``params``): a query of run ids whose queued row is settled now though
    the queue's lease runs on (a job fetched by a worker that died before taking the row over).
    Only rows the queue still owns count, judged in the write itself: a take-over and the
    settling are serialized, whichever comes first wins, the other finds the row not its own."""
    db = store.db
    finished = time.time() if now is None else now
    lapsed = "status = 'running' AND queue_job IS NOT NULL AND (lease_until < ?"
    if orphaned is not None:
        lapsed += f" OR (owner_id = ? AND id IN ({orphaned}))"
    lapsed += ")"

    def args(lease_now: float) -> tuple[Any, ...]:
        return (lease_now, QUEUE_OWNER.id, *params) if orphaned is not None else (lease_now,)

    # A read first (no write lock taken): the daemon asks every second, and almost always nothing lapsed.
    if not db.read(f"SELECT id FROM runs WHERE {lapsed} LIMIT 1", args(db.lease_now(None, finished))):
        return []

    def write(c: Any) -> list[Run]:
        if _not_leading(c, store, finished):
            return []  # the leader's to settle (it adopted their chains): a standby's settling would end them
        lease_now = db.lease_now(c, finished)
        rows = [run_of(r) for r in c.execute(f"SELECT * FROM runs WHERE {lapsed}", args(lease_now)).fetchall()]
        for run in rows:
            status, message, retry, output = decide(run)
            count_finished(c, run.id, status, finished)
            c.execute("UPDATE runs SET status = ?, finished_at = ?, message = ?, lease_until = NULL,"
                      " output = coalesce(?, output) WHERE id = ?", (status, finished, message, output, run.id))
            _next_epoch(c, run.job_id, run.epoch, lease_now)
            if retry is not None:
                _save_retry(c, retry)
        return rows

    return db.write_with(write)


def drain_closed(store: Any) -> list[tuple[Run, Retry | None]]:
    """The queued attempts closed since the last drain (taken out), each with the retry its closing saved."""
    db = store.db

    def write(c: Any) -> list[tuple[Run, Retry | None]]:
        if _not_leading(c, store, time.time()):
            return []  # the leader's to take: a daemon that woke up late leaves them
        ids = sorted({int(r[0]) for r in c.execute("DELETE FROM attempt_outcomes RETURNING run_id").fetchall()})
        out: list[tuple[Run, Retry | None]] = []
        for chunk in chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            runs = [run_of(r) for r in c.execute(f"SELECT * FROM runs WHERE id IN ({marks}) ORDER BY id", tuple(chunk))]
            job_ids = sorted({r.job_id for r in runs})
            retries = {}
            for jchunk in chunks(job_ids, 500):
                for r in c.execute(f"SELECT * FROM retries WHERE job_id IN ({','.join('?' * len(jchunk))})",
                                   tuple(jchunk)).fetchall():
                    retries[r["job_id"]] = Retry(r["job_id"], r["scheduled_for"], r["next_attempt"], r["max_attempts"],
                                                 r["due_at"], r["trigger"])
            for run in runs:
                retry = retries.get(run.job_id)
                if retry is not None and (retry.scheduled_for != run.scheduled_for or retry.next_attempt != run.attempt + 1):
                    retry = None
                out.append((run, retry))
        return out

    return db.write_with(write)


# --- the worker registry ----------------------------------------------------------------------
