"""A job, its runs and ``now`` as fixed values, for the pure render and table tests."""

from __future__ import annotations

import io
from datetime import datetime, timezone

from rich.console import Console

from crawlsched.state import Run
from crawlsched.validate import build_defaults, build_job

NOW = datetime(2025, 11, 8, 8, 0, tzinfo=timezone.utc)
T = NOW.timestamp()
DEFAULTS = build_defaults({"timezone": "UTC", "url": "https://example.com/"})


def job(**fields):
    """The daily 09:05 job ``daily`` ("Crawl Pagi"); a field given as None is left out."""
    table = {"id": "daily", "name": "Crawl Pagi", "at": "09:05", **fields}
    return build_job({k: v for k, v in table.items() if v is not None}, DEFAULTS)


def run(status="success", attempt=1, *, at=T - 3600, **fields) -> Run:
    """One attempt of ``daily`` (attempt 0: a fire that did not run)."""
    return Run(id=1, job_id="daily", scheduled_for=at, attempt=attempt, max_attempts=4, trigger="schedule",
               status=status, started_at=at if attempt else None, finished_at=at + 2 if attempt else None, **fields)


def text(table, width: int = 200) -> str:
    """What a rich renderable prints at ``width`` columns, without colour."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, legacy_windows=False).print(table)
    return out.getvalue()
