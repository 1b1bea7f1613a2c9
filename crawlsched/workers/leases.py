"""A worker's leases on the attempts it runs: renewed every few seconds, by the database's clock.

:class:`LeaseKeeper` renews every attempt this worker holds, and its registry heartbeat, in one
write every :data:`RENEW_EVERY` seconds (a lease lasts ``WORKER_TTL``). An attempt missing from
the renewal's answer was settled by the leading daemon (the lease had lapsed: this process was
frozen, or cut off from the database): it is *lost*. Its command's process group is stopped at
once (SIGKILL: the attempt is someone else's now), the crawl is told to stop, and nothing more
is written for it (the row's epoch was bumped, so a late close is refused, ``FENCED``). When
the database cannot be reached for longer than a lease, every lease has lapsed there: all are
lost the same way.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from crawlsched import procs
from crawlsched.state import AttemptKey, Owner
from crawlsched.state import queue as q

__all__ = ["RENEW_EVERY", "Held", "LeaseKeeper"]

RENEW_EVERY = 2.0  #: seconds between renewals (a lease lasts state.queue.WORKER_TTL)


@dataclass
class Held:
    """One attempt this worker runs under its lease."""

    run_id: int
    key: AttemptKey
    grace: float  # seconds it may finish in after SIGTERM ([defaults] grace_period)
    cancel: threading.Event = field(default_factory=threading.Event)
    pgid: int | None = None  # its command's process group, while it runs
    closing: bool = False  # the crawl ended: its row is being closed by us
    lost: bool = False


class LeaseKeeper:
    """Renews this worker's leases from a thread; stops what it lost."""

    def __init__(self, store: Any, owner: Owner, log: logging.Logger, *, every: float = RENEW_EVERY,
                 ttl: float = q.WORKER_TTL) -> None:
        self.store, self.owner, self.log = store, owner, log
        self.every, self.ttl = every, ttl
        self.lock = threading.Lock()
        self.held: dict[int, Held] = {}
        self.lost = 0  # attempts lost to a lapsed lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok = time.monotonic()
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="worker-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.every + 5)

    # --- what the attempts tell it ----------------------------------------------------------

    def hold(self, run_id: int, key: AttemptKey, grace: float) -> Held:
        held = Held(run_id, key, grace)
        with self.lock:
            self.held[run_id] = held
        return held

    def release(self, run_id: int) -> None:
        with self.lock:
            self.held.pop(run_id, None)

    def _by_key(self, key: AttemptKey) -> Held | None:
        for held in self.held.values():
            if held.key == key:
                return held
        return None

    def note_child(self, key: AttemptKey, pgid: int | None) -> None:
        with self.lock:
            held = self._by_key(key)
            if held is not None:
                held.pgid = pgid
        if held is not None and held.lost and pgid:  # lost while it was being spawned
            procs.killpg(pgid, signal.SIGKILL)

    def closing(self, key: AttemptKey) -> None:
        """The crawl ended (its command is gone): from now on a renewal that misses it is our own close."""
        with self.lock:
            held = self._by_key(key)
            if held is not None:
                held.closing = True
                held.pgid = None

    def running(self) -> list[Held]:
        with self.lock:
            return list(self.held.values())

    # --- the renewals ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.renew_once()

    def renew_once(self) -> None:
        held = self.running()
        try:
            kept = q.renew(self.store, self.owner, [h.run_id for h in held], ttl=self.ttl)
        except Exception as exc:  # noqa: BLE001 - the database is out of reach: keep trying
            if not self._failing:
                self._failing = True
                # a WARNING: the store logs the outage itself, once, at ERROR
                self.log.warning("worker: cannot renew its leases (%s); trying again",
                               " ".join(str(exc).split()) or type(exc).__name__)
            if time.monotonic() - self._last_ok > self.ttl:
                for h in held:  # cut off for longer than a lease: the database has settled them
                    self._lose(h, "the state database could not be reached for longer than its lease")
            return
        self._last_ok = time.monotonic()
        if self._failing:
            self._failing = False
            self.log.info("worker: leases renewed again")
        for h in held:
            if h.run_id not in kept:
                self._lose(h, "its lease lapsed and the attempt was settled by the daemon")

    def _lose(self, held: Held, why: str) -> None:
        with self.lock:
            if held.lost or held.closing:
                return
            held.lost = True
            pgid = held.pgid
        self.lost += 1
        if pgid:
            procs.killpg(pgid, signal.SIGKILL)  # at once: the attempt may already run elsewhere
        held.cancel.set()
        key = held.key
        self.log.warning("job %s: attempt %d/%d lost: %s; %s, and nothing more is written for it", key.job_id,
                         key.attempt, key.max_attempts, why,
                         f"its process group {pgid} is stopped" if pgid else "its crawl is stopped")
