"""The daemon's one-line status for ``systemctl status`` (SPEC §6: it follows every change)."""

from __future__ import annotations

import os
from typing import Callable, Mapping

from crawlsched import systemd, timing
from crawlsched.model import Job

__all__ = ["SystemdStatus", "status_line"]


class SystemdStatus:
    """``STATUS=`` to systemd, sent only when it changed since the last one (a no-op outside systemd)."""

    def __init__(self, notify: Callable[[str], bool]) -> None:
        self.notify = notify
        self.sent: str | None = None

    def send(self, text: Callable[[], str]) -> None:
        if self.notify is systemd.notify and not os.environ.get("NOTIFY_SOCKET"):
            return  # not under systemd: not even the text is worth building, once per turn
        line = text()
        if line != self.sent:
            self.sent = line
            self.notify(f"STATUS={line}")


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
