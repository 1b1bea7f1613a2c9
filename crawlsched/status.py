"""The daemon's one-line status for ``systemctl status`` (SPEC §6: it follows every change)."""

from __future__ import annotations

from typing import Mapping

from crawlsched import timing
from crawlsched.model import Job

__all__ = ["status_line"]


def status_line(jobs: Mapping[str, Job], *, has_file: bool, config_error: str | None,
                next_due: float | None = None, next_job: str | None = None, retry: bool = False) -> str:
    """What the daemon does now and next: ``3 jobs; next: a (retry) at 2025-11-08 09:05:00 UTC``."""
    head = f"{len(jobs)} jobs"
    if not has_file and not config_error:
        head += " (no job file yet)"
    if next_due is not None and next_job is not None:
        job = jobs.get(next_job)
        when = timing.format_local(timing.from_epoch(next_due), job.timezone if job else "UTC")
        what = f"{next_job} (retry)" if retry else next_job
        text = f"{head}; next: {what} at {when}"
    else:
        text = f"{head}; nothing due"
    if config_error:
        text = f"job file error: {config_error}; {text}"
    return " ".join(text.split())  # one line: a newline would start another assignment
