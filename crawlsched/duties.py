"""The loop's periodic duties: the job file's fallback poll, the heartbeat, run-now requests,
retention and the systemd watchdog, on a ``schedule.Scheduler``.

Their intervals are what idle CPU is made of (docs/BENCHMARKS.md): one wake-up
of an idle Python process costs about 0.1 ms of CPU here, so the fallback
checks run every 10 s, aligned with each other, and the heartbeat (a cold
SQLite write) every 30 s. The scheduler's next runs are naive local times,
which would stall after the wall clock went back, so a clock jump rebuilds it
(``Duties.setup``). A duty that fails is logged and tried again at its next time.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from crawlsched import systemd
from crawlsched.retention import Retention
from crawlsched.state import State, StorageUnavailable

__all__ = ["FALLBACK_EVERY", "HEARTBEAT_EVERY", "HEARTBEAT_SLACK", "POLL_EVERY", "RETENTION_EVERY", "Duties"]

HEARTBEAT_EVERY = 30  # seconds: a cold SQLite write costs ~0.3 ms, so not more often (idle CPU)
HEARTBEAT_SLACK = 2 * HEARTBEAT_EVERY  # a fire this close before the last heartbeat may not have been handled
POLL_EVERY = 1  # seconds between checks of the job file when inotify is not available
FALLBACK_EVERY = 10  # seconds between checks of the file (with inotify) and of run-now requests (with SIGUSR1)
RETENTION_EVERY = 60  # seconds between retention sweeps (crawlsched.retention)


class Loop(Protocol):
    """What the duties use of the daemon's loop."""

    state: State
    log: logging.Logger
    retention: Retention
    defaults: Any
    watch: Any

    def reload(self, force: bool = False) -> bool: ...
    def take_requests(self) -> None: ...
    def write_heartbeat(self) -> None: ...
    def busy_soon(self) -> bool: ...
    def notify(self, message: str) -> bool: ...


class Duties:
    """The duties of one loop, and the scheduler that runs them."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.scheduler: Any = None  # none until ``setup``: a loop driven by tests runs its duties by hand

    def setup(self) -> None:
        """(Re)build the schedule: at start, and after the wall clock jumped."""
        import schedule

        duties = schedule.Scheduler()
        # With inotify the file is seen at once and polled only as a fallback; run-now
        # requests wake the loop (SIGUSR1, or the web API in-process), polled likewise.
        duties.every(FALLBACK_EVERY if self.loop.watch is not None else POLL_EVERY).seconds.do(self.poll_file)
        duties.every(HEARTBEAT_EVERY).seconds.do(self.heartbeat)
        duties.every(FALLBACK_EVERY).seconds.do(self.requests)
        duties.every(RETENTION_EVERY).seconds.do(self.retention)
        interval = systemd.watchdog_interval()
        if interval:
            duties.every(max(1, int(interval))).seconds.do(self.watchdog)
        self.scheduler = duties

    def run_pending(self) -> None:
        if self.scheduler is not None:
            self.scheduler.run_pending()

    @property
    def idle_seconds(self) -> float | None:
        """Seconds until the next duty is due (None: no duty scheduled)."""
        return self.scheduler.idle_seconds if self.scheduler is not None else None

    def poll_file(self) -> None:
        try:
            self.loop.reload()
        except StorageUnavailable:
            pass  # logged once for the episode, by the state; the next poll applies it (applied_key kept)
        except Exception:
            self.loop.log.exception("reloading the job file failed")

    def heartbeat(self) -> None:
        try:
            self.loop.write_heartbeat()
        except StorageUnavailable:
            pass  # logged once for the episode, by the state
        except Exception as exc:
            self.loop.log.error("heartbeat not written: %s", exc)

    def requests(self) -> None:
        try:
            self.loop.take_requests()
        except StorageUnavailable:
            pass
        except Exception as exc:
            self.loop.log.error("run-now requests not read: %s", exc)

    def retention(self) -> None:
        """History and log files past keep_history / keep_logs, in small batches, never near a fire."""
        try:
            if self.loop.defaults is not None:
                self.loop.retention.sweep(self.loop.defaults, self.loop.busy_soon)
        except StorageUnavailable:
            pass  # logged once for the episode, by the state; swept at a later turn
        except Exception as exc:
            self.loop.log.error("retention sweep failed: %s", exc)

    def watchdog(self) -> None:
        self.loop.notify("WATCHDOG=1")
