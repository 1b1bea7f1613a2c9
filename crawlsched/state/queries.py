"""The reads behind ``list``, ``show``, ``history``, ``logs`` and the page, and history pruning.

Every read goes through an index: rows by ``runs_by_job (job_id, id)``, a run's
attempts by ``runs_once (job_id, scheduled_for, attempt)``, new rows by the
primary key, running rows by ``runs_running``.
"""

from __future__ import annotations

import time
from typing import Any

from crawlsched.state.jobs import chunks, run_of, running_alive
from crawlsched.state.leases import HOST
from crawlsched.state.records import FireMark, Owner, Run, StripRow

_STRIP = ", ".join(StripRow._fields)
_WHEN = "coalesce(started_at, finished_at, scheduled_for)"  # when a row happened (started, or recorded)
_ID_MAX = 2**63 - 1  # a row id is a signed 64-bit integer in both engines


def _id_bound(run_id: int) -> int:
    """An id bound the engines accept: one past the range names the same rows (all, or none)."""
    return max(-_ID_MAX - 1, min(run_id, _ID_MAX))


def _owner(owner: Owner | int) -> Owner:
    return owner if isinstance(owner, Owner) else Owner("", owner, None, HOST)


def _is(row: Any, owner: Owner) -> bool:
    """Is this row the owner's? A process's rows are all its own, whatever role it ran them in."""
    if owner.pid:
        return bool(row["owner_pid"] == owner.pid and row["owner_host"] in (None, owner.host))
    return bool(row["owner_id"] == owner.id)


class HistoryQueries:
    """The store's history reads (mixed into ``SqliteStore``: ``self.db`` is its ``Database``)."""

    db: Any

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
        rows = self.db.read(f"SELECT * FROM runs {clause}ORDER BY id DESC LIMIT ?", (*params, min(limit, 2**62)))
        return [run_of(r) for r in rows]

    def run(self, run_id: int) -> Run | None:
        if _id_bound(run_id) != run_id:
            return None  # no row has an id outside the 64-bit range (a hostile URL, say)
        rows = self.db.read("SELECT * FROM runs WHERE id = ?", (run_id,))
        return run_of(rows[0]) if rows else None

    def job_rows_before(self, job_id: str, before_id: int, limit: int) -> list[Run]:
        """A job's rows with an id below ``before_id``, newest first (a page of its history)."""
        return [run_of(r) for r in self.db.read("SELECT * FROM runs WHERE job_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                                                (job_id, _id_bound(before_id), min(limit, 2**62)))]

    def chain_attempts(self, job_id: str, scheduled_for: float) -> list[Run]:
        """Every attempt of one run (job, scheduled time), first attempt first."""
        return [run_of(r) for r in self.db.read(
            "SELECT * FROM runs WHERE job_id = ? AND scheduled_for = ? AND attempt > 0 ORDER BY attempt",
            (job_id, scheduled_for))]

    def runs_between(self, job_id: str, since: float, until: float) -> list[Run]:
        """A job's rows that happened in ``[since, until)`` (started, or recorded when never started)."""
        return [run_of(r) for r in self.db.read(
            f"SELECT * FROM runs WHERE job_id = ? AND {_WHEN} >= ? AND {_WHEN} < ?", (job_id, since, until))]

    def attempt_counts_since(self, since: float) -> dict[str, int]:
        """Attempts (not skipped or missed fires) that happened since ``since``, by status, over all jobs."""
        rows = self.db.read(f"SELECT status, count(*) AS n FROM runs WHERE attempt > 0 AND {_WHEN} >= ? GROUP BY status",
                            (since,))
        return {r["status"]: r["n"] for r in rows}

    def chain_outcomes(self, keys: list[tuple[str, float]]) -> dict[tuple[str, float], str]:
        """How each run (job, scheduled time) stands over ALL its attempts, listed or not:
        ``success`` (an attempt succeeded), ``failed`` (the chain ended without one), or
        ``open`` (an attempt is running or a retry is pending)."""
        pending = {(r["job_id"], r["scheduled_for"]) for r in self.db.read("SELECT job_id, scheduled_for FROM retries")}
        statuses: dict[tuple[str, float], set[str]] = {}
        for chunk in chunks(sorted(set(keys)), 400):
            marks = " OR ".join("(job_id = ? AND scheduled_for = ?)" for _ in chunk)
            params = tuple(v for key in chunk for v in key)
            for row in self.db.read(f"SELECT DISTINCT job_id, scheduled_for, status FROM runs WHERE attempt > 0 AND ({marks})",
                                    params):
                statuses.setdefault((row["job_id"], row["scheduled_for"]), set()).add(row["status"])
        out: dict[tuple[str, float], str] = {}
        for key, seen in statuses.items():
            out[key] = "success" if "success" in seen else "open" if "running" in seen or key in pending else "failed"
        return out

    # --- running attempts ------------------------------------------------------------

    def running_elsewhere(self, job_id: str, owner: Owner | int, now: float | None = None) -> Run | None:
        """A live attempt of the job that another owner runs (``owner``: an Owner, or a pid on this host)."""
        me, now = _owner(owner), self.db.lease_now(None, time.time() if now is None else now)
        for row in self.db.read("SELECT * FROM runs WHERE job_id = ? AND status = 'running'", (job_id,)):
            if not _is(row, me) and running_alive(row, now):
                return run_of(row)
        return None

    def stale_running(self, owner: Owner | int, now: float | None = None) -> list[Run]:
        """Attempts left ``running`` by ``owner`` itself (a previous life) or by an owner whose lease is gone."""
        me, now = _owner(owner), self.db.lease_now(None, time.time() if now is None else now)
        rows = self.db.read("SELECT * FROM runs WHERE status = 'running'")
        return [run_of(r) for r in rows if _is(r, me) or not running_alive(r, now)]

    # --- what moved: the history after an instant, the page's strips and its cache key --

    def fire_marks_after(self, since: float) -> list[FireMark]:
        """Rows of scheduled fires (not manual, not ``run``) at or after ``since``: instants, or missed ranges."""
        rows = self.db.read("SELECT job_id, scheduled_for, status, first_missed, last_missed FROM runs"
                            " WHERE (scheduled_for >= ? OR last_missed >= ?) AND trigger NOT IN ('manual', 'run')",
                            (since, since))
        return [FireMark(r["job_id"], r["scheduled_for"], r["status"], r["first_missed"], r["last_missed"]) for r in rows]

    def newest_run_id(self) -> int:
        return int(self.db.read("SELECT max(id) FROM runs")[0][0] or 0)

    def oldest_run_id(self) -> int | None:
        """The smallest row id (pruning removes the oldest rows first); None with no history."""
        return self.db.read("SELECT min(id) FROM runs")[0][0]

    def existing_run_ids(self, ids: list[int]) -> set[int]:
        """Which of ``ids`` the history still has."""
        present: set[int] = set()
        for chunk in chunks([i for i in ids if _id_bound(i) == i], 900):
            present.update(r[0] for r in self.db.read(f"SELECT id FROM runs WHERE id IN ({','.join('?' * len(chunk))})",
                                                      tuple(chunk)))
        return present

    def strip_rows_after(self, after_id: int) -> list[StripRow]:
        """Rows written after ``after_id``, oldest first, with the columns a card's strip shows."""
        return [StripRow(*r) for r in self.db.read(f"SELECT {_STRIP} FROM runs WHERE id > ? ORDER BY id", (after_id,))]

    def strip_rows(self, ids: list[int]) -> list[StripRow]:
        out: list[StripRow] = []
        for chunk in chunks(ids, 900):
            out += [StripRow(*r) for r in self.db.read(
                f"SELECT {_STRIP} FROM runs WHERE id IN ({','.join('?' * len(chunk))})", tuple(chunk))]
        return out

    def job_strip_rows(self, job_id: str, max_id: int, limit: int) -> list[StripRow]:
        """A job's newest ``limit`` rows up to ``max_id``, newest first."""
        return [StripRow(*r) for r in self.db.read(
            f"SELECT {_STRIP} FROM runs WHERE job_id = ? AND id <= ? ORDER BY id DESC LIMIT ?",
            (job_id, _id_bound(max_id), limit))]

    def jobs_view_marks(self) -> tuple:
        """A value that changes whenever the job list's answer may: the newest row, the running
        attempts, the pending retries and the jobs' anchors (a few indexed reads)."""
        read = self.db.read  # portable: no group_concat (each part read apart, in one lock)
        with self.db.lock:
            top = read("SELECT max(id) FROM runs")[0][0]
            running = tuple(r[0] for r in read("SELECT id FROM runs WHERE status = 'running' ORDER BY id"))
            retries = tuple(tuple(r) for r in read("SELECT job_id, next_attempt, due_at FROM retries ORDER BY job_id"))
            seen = tuple(read("SELECT count(anchor), coalesce(sum(anchor), 0), count(*) FROM jobs_seen")[0])
        return (top, running, retries, seen)

    # --- retention -----------------------------------------------------------------------

    def prune_history(self, after_id: int, *, older_than: float | None = None, keep_rows: int | None = None,
                      batch: int = 1000) -> tuple[int, int | None]:
        """Delete one batch of history rows past ``keep_history``; returns (rows deleted, where to go on).

        Looks at the ``batch`` oldest rows after ``after_id`` (ids grow with the time a row was
        written) and deletes those recorded before ``older_than`` or outside the newest
        ``keep_rows``. Never a running attempt, nor the newest attempt of a job (``list`` and
        ``show`` read it). The second value is None when the sweep reached rows that are kept:
        the rest are newer. The counters of /metrics are not touched.
        """
        with self.db.lock:
            cut_id = self.newest_run_id() - keep_rows if keep_rows is not None else None
            rows = self.db.read(f"SELECT id, status, {_WHEN} AS t FROM runs WHERE id > ? ORDER BY id LIMIT ?",
                                (after_id, batch))
            if not rows:
                return 0, None
            first, last = rows[0]["id"], rows[-1]["id"]
            keep = {r[0] for r in self.db.read(
                "SELECT last_attempt_id FROM jobs_seen WHERE last_attempt_id BETWEEN ? AND ?", (first, last))}
            old = [r for r in rows if (older_than is not None and r["t"] < older_than) or (cut_id is not None and r["id"] <= cut_id)]
            done = len(old) < len(rows) or len(rows) < batch
            doomed = [(r["id"],) for r in old if r["status"] != "running" and r["id"] not in keep]
            if doomed:
                with self.db.write() as c:
                    c.executemany("DELETE FROM runs WHERE id = ?", doomed)
            return len(doomed), None if done else last
