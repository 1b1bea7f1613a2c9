"""The daemon's loop in-process: a real Daemon over a real job file and SQLite, driven turn by
turn with a fake clock and an inline executor, so a fire happens exactly when the test says."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from crawlsched.daemon import Daemon, InlineExecutor
from crawlsched.state import State
from crawlsched.store import JobStore
from helpers.clock import FakeClock


def make_daemon(home: Path, clock: FakeClock, *, executor: Any = None, log: logging.Logger | None = None) -> Daemon:
    """A daemon of ``home`` on ``clock``; attempts run inline unless ``executor`` says otherwise."""
    store = JobStore(home / "jobs.toml", cache_dir=home / ".cache")
    state = State(home / "crawlsched.db")
    return Daemon(store, state, home, log or logging.getLogger("crawlsched.test"), clock=clock.time,
                  monotonic=clock.monotonic, executor=executor if executor is not None else InlineExecutor(),
                  notify=lambda _msg: False, duties=False)


def run_until(daemon: Daemon, clock: FakeClock, until: datetime) -> None:
    """Drive turns, moving the fake clock to each due time, up to ``until``."""
    end = until.timestamp()
    for _ in range(10_000):
        wait = daemon.turn()
        daemon.collect()
        nxt = clock.time() + max(wait, 0.001)
        if nxt > end:
            clock.advance(end - clock.time())
            daemon.turn()
            daemon.collect()
            return
        clock.advance(nxt - clock.time())
    raise AssertionError("loop did not reach the end time")


def quiet_logger() -> logging.Logger:
    """The reliability suite's logger for in-process daemons (its records reach caplog)."""
    log = logging.getLogger("crawlsched.reliability")
    log.propagate = True
    return log
