"""The /metrics totals: kept up in the transaction that writes each history row, read in O(jobs).

Per job: finished attempts by outcome, skipped and missed fires, the newest success
and failure (``job_counters``, each change numbered by ``seq`` so a scrape reads only
what changed); and two histograms with no job label (``histograms``), whose stored
buckets count the values up to their bound and above the one before (not cumulative).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from crawlsched.model import Trigger
from crawlsched.state.portable import greatest

DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HISTOGRAMS = {"attempt_duration": DURATION_BUCKETS, "fire_lateness": LATENESS_BUCKETS}
COUNTED_OUTCOMES = ("success", "failed", "interrupted")  # the attempt outcomes job_counters has a column for
METRIC_COUNTER_COLUMNS = (*COUNTED_OUTCOMES, "skipped", "missed", "last_success", "last_failure")

_NEXT_SEQ = "(SELECT coalesce(max(seq), 0) + 1 FROM job_counters)"  # the index makes it one lookup


def bucket_case(value: str, bounds: tuple[float, ...]) -> str:
    """SQL naming the bucket of ``value`` (for the migration that fills the totals from old history)."""
    whens = " ".join(f"WHEN {value} <= {b!r} THEN {b!r}" for b in bounds)
    return f"CASE {whens} ELSE 9e999 END"


def pg_bucket_case(value: str, bounds: tuple[float, ...]) -> str:
    """:func:`bucket_case` for PostgreSQL, whose float8 has no 9e999: the last bucket is Infinity."""
    return bucket_case(value, bounds).replace("9e999", "'Infinity'::float8")


def bucket(value: float, bounds: tuple[float, ...]) -> float:
    for bound in bounds:
        if value <= bound:
            return bound
    return float("inf")


def count_finished(c: sqlite3.Connection, run_id: int, status: str, finished_at: float) -> None:
    """An attempt closes: its outcome, duration and (first scheduled attempt) lateness go into the totals."""
    row = c.execute("SELECT job_id, attempt, trigger, status, started_at, scheduled_for FROM runs WHERE id = ?",
                    (run_id,)).fetchone()
    if row is None or row["status"] != "running" or row["attempt"] < 1 or status not in COUNTED_OUTCOMES:
        return  # counted once, when the running row closes
    last = "last_success" if status == "success" else "last_failure"
    c.execute(
        f"INSERT INTO job_counters(job_id, {status}, {last}, seq) VALUES (?, 1, ?, {_NEXT_SEQ}) ON CONFLICT(job_id) DO UPDATE SET"
        f" {status} = job_counters.{status} + 1, {last} = {greatest(f'coalesce(job_counters.{last}, 0)', f'excluded.{last}')},"
        " seq = excluded.seq",
        (row["job_id"], finished_at))
    if row["started_at"] is None:
        return
    observe(c, "attempt_duration", max(finished_at - row["started_at"], 0.0))
    if row["attempt"] == 1 and row["trigger"] == Trigger.SCHEDULE:
        observe(c, "fire_lateness", max(row["started_at"] - row["scheduled_for"], 0.0))


def count_not_run(c: sqlite3.Connection, job_id: str, status: str, missed_count: int | None) -> None:
    if status not in ("skipped", "missed"):
        return
    n = (missed_count or 1) if status == "missed" else 1
    c.execute(f"INSERT INTO job_counters(job_id, {status}, seq) VALUES (?, ?, {_NEXT_SEQ}) ON CONFLICT(job_id) DO UPDATE SET"
              f" {status} = job_counters.{status} + excluded.{status}, seq = excluded.seq", (job_id, n))


def observe(c: sqlite3.Connection, name: str, value: float) -> None:
    c.execute("INSERT INTO histograms(name, le, n, total) VALUES (?, ?, 1, ?) ON CONFLICT(name, le) DO UPDATE SET"
              " n = histograms.n + 1, total = histograms.total + excluded.total", (name, bucket(value, HISTOGRAMS[name]), value))


class MetricQueries:
    """The store's /metrics reads (mixed into ``SqliteStore``: ``self.db`` is its ``Database``)."""

    db: Any

    def metric_counters(self, after_seq: int = 0) -> tuple[dict[str, tuple], int]:
        """The /metrics counters of the jobs changed since ``after_seq`` (0: all), as plain tuples
        (``METRIC_COUNTER_COLUMNS``), and the newest change's number, to pass next time."""
        rows = self.db.read_tuples(
            "SELECT job_id, success, failed, interrupted, skipped, missed, coalesce(last_success, 0),"
            " coalesce(last_failure, 0), seq FROM job_counters WHERE seq > ? ORDER BY seq", (after_seq,))
        return {r[0]: r[1:-1] for r in rows}, (rows[-1][-1] if rows else after_seq)

    def metric_first_seen(self, after_rowid: int = 0) -> tuple[dict[str, float], int]:
        """When each job was first seen, for the rows added since ``after_rowid`` (rows are never deleted)."""
        rows = self.db.read_tuples("SELECT rowid, job_id, first_seen FROM jobs_seen WHERE rowid > ? ORDER BY rowid",
                                   (after_rowid,))
        return {r[1]: r[2] for r in rows}, (rows[-1][0] if rows else after_rowid)

    def metric_histograms(self) -> dict[str, list[tuple[float, int, float]]]:
        """Per histogram: (upper bound, count in that bucket alone, sum), lowest bound first."""
        out: dict[str, list[tuple[float, int, float]]] = {name: [] for name in HISTOGRAMS}
        for name, le, n, total in self.db.read_tuples("SELECT name, le, n, total FROM histograms ORDER BY name, le"):
            out.setdefault(name, []).append((le, n, total))
        return out

    def metric_gauges(self) -> dict[str, Any]:
        """Heartbeat, pending retries and running attempts: index lookups, never a history scan."""
        beat = self.db.read_tuples("SELECT heartbeat FROM daemon WHERE id = 1")
        retries = self.db.read_tuples("SELECT count(*) FROM retries")[0][0]
        running = self.db.read_tuples("SELECT count(*) FROM runs WHERE status = 'running'")[0][0]  # the partial index
        return {"heartbeat": beat[0][0] if beat else None, "retries_pending": retries, "attempts_running": running}
