"""A worker's SIGTERM (or SIGINT): no new jobs, a grace period for the running ones, then out.

The first signal: procrastinate's worker is told to stop fetching; each running attempt gets its
grace period (``[defaults] grace_period``, carried by its job), counted from the signal, after
which it is stopped (closed ``interrupted`` with the next attempt due now: given back, as after a
local crash). A guard exits the process (code 1) when attempts would not stop ``EXIT_AFTER``
seconds past the longest grace. A second signal stops every attempt at once, lets no held command
go (crawlsched.workers.takeover.GoAheads) and gives back those waiting for their instant.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from crawlsched.workers.leases import LeaseKeeper
from crawlsched.workers.takeover import GoAheads

__all__ = ["EXIT_AFTER", "Stopping"]

EXIT_AFTER = 15.0  #: seconds after the grace period before a worker whose attempts would not stop exits anyway


class Stopping:
    """One worker's stop: ``at`` (monotonic) once asked, ``now`` set on the second signal."""

    def __init__(self, log: logging.Logger, keeper: LeaseKeeper, go_aheads: GoAheads, *,
                 exit_after: float = EXIT_AFTER, exit: Callable[[], None] | None = None) -> None:
        self.log, self.keeper, self.go_aheads = log, keeper, go_aheads
        self.exit_after = exit_after
        self._exit = exit or _exit_now
        self.at: float | None = None  # monotonic: when the first signal came
        self.now = threading.Event()  # the second signal: attempts waiting for their instant are given back
        self.guard: threading.Timer | None = None  # exits the process when attempts would not stop

    @property
    def asked(self) -> bool:
        return self.at is not None

    def arm(self, held: Any) -> None:
        """``held`` (a LeaseKeeper hold) is cancelled when its grace period, counted from the signal, ends."""
        assert self.at is not None
        left = max(0.0, self.at + held.grace - time.monotonic())
        timer = threading.Timer(left, held.cancel.set)
        timer.daemon = True
        timer.start()

    def request(self, stop_queue: Callable[[], None]) -> None:
        """A signal: the first stops the queue (``stop_queue``) and arms the grace periods; the second stops all now."""
        if self.at is not None:
            self.log.warning("worker: stopping now: %d running attempt(s) are given back", len(self.keeper.running()))
            self.now.set()
            self.go_aheads.stop()
            for held in self.keeper.running():
                held.cancel.set()
            return
        self.at = time.monotonic()
        running = self.keeper.running()
        self.log.info("worker: stopping: no new attempts; %d running attempt(s) get their grace period", len(running))
        for held in running:
            self.arm(held)
        longest = max([h.grace for h in running], default=0.0)
        guard = threading.Timer(longest + self.exit_after, self._exit_anyway)
        self.guard = guard
        guard.daemon = True
        guard.start()
        stop_queue()

    def _exit_anyway(self) -> None:
        self.log.error("worker: attempts did not stop after their grace period; exiting")
        self._exit()


def _exit_now() -> None:
    logging.shutdown()
    os._exit(1)
