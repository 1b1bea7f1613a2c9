"""Retention: history rows past ``keep_history`` and daily log files past ``keep_logs`` go, off the hot path.

A daemon duty (``duties.Duties.retention``) calls ``Retention.sweep`` once a
minute. History goes in batches of ``BATCH`` rows, each its own short
transaction, for at most ``BUDGET`` seconds a sweep, and not at all while a
fire or retry is due within ``GUARD`` seconds (or finished attempts wait to be
collected): pruning never makes a fire wait. A home that starts with a large
backlog is worked down over several minutes. The /metrics counters are kept
apart from the history (``job_counters``), so deleting rows never moves them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from crawlsched.logfile import remove_old_logs
from crawlsched.model import Defaults
from crawlsched.state import State

BATCH = 1000  # rows per transaction: a few milliseconds of the state lock
BUDGET = 0.1  # seconds of pruning per sweep, at most
GUARD = 5.0  # seconds: no pruning when a fire or retry is due sooner than this
LOG_SWEEP_EVERY = 3600.0  # seconds between sweeps of logs/ (the files are daily)
DAY = 86400.0


class Retention:
    """Where the history sweep has got to, and when logs/ was last swept."""

    def __init__(self, state: State, home: Path, log: logging.Logger, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.home = Path(home)
        self.log = log
        self.clock = clock
        self.monotonic = monotonic
        self.cursor = 0  # the history sweep goes on after this row id
        self.removed = 0  # rows removed by the sweep in progress
        self.logs_swept_at: float | None = None

    def sweep(self, defaults: Defaults, busy: Callable[[], bool]) -> int:
        """One turn of the duty; returns the history rows removed."""
        removed = self._history(defaults, busy)
        now_m = self.monotonic()
        if self.logs_swept_at is None or now_m - self.logs_swept_at >= LOG_SWEEP_EVERY:
            self.logs_swept_at = now_m
            for path in remove_old_logs(self.home, defaults.keep_logs, self.clock()):
                self.log.info("retention: removed log file %s (older than keep_logs = %d days)", path.name, defaults.keep_logs)
        return removed

    def _history(self, defaults: Defaults, busy: Callable[[], bool]) -> int:
        keep = defaults.keep_history
        if keep.days is None and keep.runs is None:
            return 0
        older_than = self.clock() - keep.days * DAY if keep.days is not None else None
        deadline = self.monotonic() + BUDGET
        removed = 0
        while not busy() and self.monotonic() < deadline:
            n, after = self.state.prune_history(self.cursor, older_than=older_than, keep_rows=keep.runs, batch=BATCH)
            removed += n
            self.removed += n
            if after is None:
                if self.removed:
                    self.log.info("retention: removed %d history rows past keep_history = %s", self.removed, keep)
                self.cursor, self.removed = 0, 0
                break
            self.cursor = after
        return removed
