"""What the state knows per job: ids seen (never reused), anchors, last fires, and their status."""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Iterator

from crawlsched.state.leases import holder_alive
from crawlsched.state.portable import greatest
from crawlsched.state.records import RUN_COLUMNS, JobSeen, JobState, Retry, Run


def run_of(row: sqlite3.Row) -> Run:
    return Run(**{k: row[k] for k in RUN_COLUMNS})


def retry_of(row: sqlite3.Row) -> Retry:
    return Retry(row["job_id"], row["scheduled_for"], row["next_attempt"], row["max_attempts"], row["due_at"], row["trigger"])


def seen_of(row: sqlite3.Row) -> JobSeen:
    return JobSeen(row["job_id"], row["first_seen"], row["daemon_seen"], row["anchor"], row["last_fire"],
                   row["last_attempt_id"])


def running_alive(row: sqlite3.Row, now: float) -> bool:
    """Is the owner of this ``running`` row still there (its lease held)?"""
    return holder_alive(row["owner_host"], row["owner_pid"], row["owner_ident"], row["lease_until"], now)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class JobRecords:
    """The store's per-job records (mixed into ``SqliteStore``: ``self.db`` is its ``Database``)."""

    db: Any

    def known_id(self, job_id: str) -> bool:
        """Has the history ever seen this id? (Ids are never reused.)"""
        row = self.db.read("SELECT 1 FROM jobs_seen WHERE job_id = ? UNION SELECT 1 FROM runs WHERE job_id = ? LIMIT 1",
                           (job_id, job_id))
        return bool(row)

    def job_states(self, job_ids: list[str] | None = None, now: float | None = None) -> dict[str, JobState]:
        """Per job: newest attempt, pending retry, whether an attempt is running now."""
        now = self.db.lease_now(None, time.time() if now is None else now)
        seen = {r["job_id"]: seen_of(r) for r in self.db.read("SELECT * FROM jobs_seen")}
        last_ids = [s.last_attempt_id for s in seen.values() if s.last_attempt_id]
        last: dict[int, Run] = {}
        for chunk in chunks(last_ids, 900):
            marks = ",".join("?" * len(chunk))
            for row in self.db.read(f"SELECT * FROM runs WHERE id IN ({marks})", tuple(chunk)):
                last[row["id"]] = run_of(row)
        retries = {r.job_id: r for r in self.retries()}
        running = {row["job_id"] for row in self.db.read(
            "SELECT job_id, owner_pid, owner_ident, owner_host, lease_until FROM runs WHERE status = 'running'")
            if running_alive(row, now)}
        out: dict[str, JobState] = {}
        for job_id in job_ids if job_ids is not None else list(seen):
            s = seen.get(job_id)
            out[job_id] = JobState(
                job_id=job_id,
                first_seen=s.first_seen if s else None,
                anchor=s.anchor if s else None,
                last_fire=s.last_fire if s else None,
                last_attempt=last.get(s.last_attempt_id) if s and s.last_attempt_id else None,
                retry=retries.get(job_id),
                running=job_id in running,
            )
        return out

    def retries(self) -> list[Retry]:
        return [retry_of(r) for r in self.db.read("SELECT * FROM retries")]

    def seen(self) -> dict[str, JobSeen]:
        return {r["job_id"]: seen_of(r) for r in self.db.read("SELECT * FROM jobs_seen")}

    def remember_id(self, job_id: str, now: float) -> None:
        with self.db.write() as c:
            c.execute("INSERT INTO jobs_seen(job_id, first_seen) VALUES (?, ?) ON CONFLICT DO NOTHING", (job_id, now))

    def mark_seen(self, job_id: str, now: float, anchor: float | None = None) -> None:
        """First sight of a job by the daemon; an ``every`` job's anchor is kept once set."""
        self.mark_seen_many([(job_id, now, anchor)], hold=False)

    def mark_seen_many(self, items: list[tuple[str, float, float | None]], *, hold: bool = True) -> None:
        def mark(c: sqlite3.Connection) -> None:
            # One statement a job (100,000 at a first start): first_seen, daemon_seen and anchor are each kept once set.
            c.executemany(
                "INSERT INTO jobs_seen(job_id, first_seen, daemon_seen, anchor) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(job_id) DO UPDATE SET daemon_seen = coalesce(jobs_seen.daemon_seen, excluded.daemon_seen),"
                " anchor = coalesce(jobs_seen.anchor, excluded.anchor)",
                [(i, n, n, a) for i, n, a in items],
            )

        if hold:
            self.db.write_or_hold(mark)
        else:
            with self.db.write() as c:
                mark(c)

    def restore_seen(self, items: list[tuple[str, float, float | None, float | None]]) -> None:
        """After a replaced file: the daemon's jobs as seen, with their anchors and last fires
        ``(job_id, now, anchor, last_fire)``, so the next start's catch-up still knows them."""

        def restore(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT INTO jobs_seen(job_id, first_seen, daemon_seen, anchor, last_fire) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(job_id) DO UPDATE SET daemon_seen = coalesce(jobs_seen.daemon_seen, excluded.daemon_seen),"
                " anchor = coalesce(jobs_seen.anchor, excluded.anchor),"
                f" last_fire = {greatest('coalesce(jobs_seen.last_fire, 0)', 'coalesce(excluded.last_fire, 0)')}",
                [(i, n, n, a, f) for i, n, a, f in items],
            )

        self.db.write_or_hold(restore)

    def reset_anchor(self, job_id: str, anchor: float | None) -> None:
        self.db.write_or_hold(lambda c: c.execute("UPDATE jobs_seen SET anchor = ? WHERE job_id = ?", (anchor, job_id)))
