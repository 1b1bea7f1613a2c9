"""The one history reader of the tests: the runs of a home, through the state store's public
methods (no SQL), oldest first, each as a dict of the run's fields (enums as their values)."""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any

from crawlsched.errors import CrawlschedError
from crawlsched.state import State

ALL = 2**62


def runs(home: Path, job: str | None = None, *, status: str | None = None, attempt: int | None = None,
         settled: bool = False) -> list[dict[str, Any]]:
    """The history of ``home``'s state database, oldest first; ``job``, ``status`` and ``attempt``
    keep the runs that match, ``settled`` the ones no longer running.

    No database yet, or one that cannot be read right now (locked, or corrupt and not yet moved
    aside by the daemon): no runs, so a ``wait_for`` polls again.
    """
    path = home / "crawlsched.db"
    if not path.exists():
        return []
    state = State(path)
    try:
        found = state.runs(job, limit=ALL, statuses=(status,) if status else None)
    except (CrawlschedError, sqlite3.DatabaseError):
        return []
    finally:
        state.close()
    out = [_plain(asdict(run)) for run in reversed(found)]
    return [r for r in out if (attempt is None or r["attempt"] == attempt) and not (settled and r["status"] == "running")]


def rows(home: Path) -> list[tuple]:
    """The history as ``(job_id, scheduled_for, attempt, status, trigger, missed_count)``, oldest first."""
    return [(r["job_id"], r["scheduled_for"], r["attempt"], r["status"], r["trigger"], r["missed_count"])
            for r in runs(home)]


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in fields.items()}


def retries(home: Path) -> list[dict[str, Any]]:
    """The pending retries of ``home``'s state database, each as a dict of its fields."""
    path = home / "crawlsched.db"
    if not path.exists():
        return []
    state = State(path)
    try:
        return [_plain(asdict(r)) for r in state.retries()]
    finally:
        state.close()
