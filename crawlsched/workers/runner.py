"""The crawl side of a worker: the daemon's ``AttemptRunner`` with a worker's fenced writes.

:class:`WorkerStore` is the runner's store: each write of an attempt's row goes through
crawlsched.state.queue's ``*_owned`` operations, refused (fenced) when the row is no longer this
worker's (its lease was lost, another took it over). :class:`WorkerRunner` tells the lease keeper
its command's process group and when the crawl ended, and the take-overs' ``StartsFirst`` when
each attempt began.
"""

from __future__ import annotations

from typing import Any, Callable

from crawlsched.runner import AttemptRunner
from crawlsched.state import AttemptKey, Owner, Saved
from crawlsched.state import queue as q
from crawlsched.workers.leases import LeaseKeeper
from crawlsched.workers.takeover import StartsFirst

__all__ = ["WorkerRunner", "WorkerStore"]


class WorkerStore:
    """The runner's store in a worker: its attempt's writes fenced by the row (still running, still
    this worker's: crawlsched.state.queue.finish_owned), the refused ones counted."""

    def __init__(self, store: Any, owner: Owner, on_fenced: Callable[[AttemptKey], None]) -> None:
        self._store = store
        self._owner = owner
        self._on_fenced = on_fenced
        self.began: dict[AttemptKey, float] = {}  # rows taken over ahead: when their crawl really began

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def finish_attempt(self, run: Any, **kwargs: Any) -> Saved:
        key = getattr(run, "key", run)
        began = self.began.pop(key, None)
        if began is not None:
            kwargs["started_at"] = began
        saved = q.finish_owned(self._store, key, self._owner, **kwargs)
        if saved is Saved.FENCED:
            self._on_fenced(key)
        return saved

    def set_child(self, run: Any, pgid: int, ident: str | None) -> Saved:
        return q.note_child_owned(self._store, getattr(run, "key", run), self._owner, pgid, ident)


class WorkerRunner(AttemptRunner):
    """The daemon's runner, telling the lease keeper its command's process group and when the crawl ended."""

    def __init__(self, *args: Any, keeper: LeaseKeeper, starts: StartsFirst | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keeper = keeper
        self.starts = starts or StartsFirst()

    def _child_recorder(self, key: AttemptKey) -> Callable[[int], bool]:
        record = super()._child_recorder(key)

        def note(pgid: int) -> bool:
            self.keeper.note_child(key, pgid)
            try:
                return record(pgid)
            finally:
                self.starts.begun(key)  # its go-ahead follows at once

        return note

    def _execute(self, job: Any, scheduled_for: float, attempt: int, cancel: Any, trigger: str = "schedule",
                 key: AttemptKey | None = None, prepared: Any = None) -> Any:
        if job.urls and key is not None:
            self.starts.begun(key)  # its requests begin now
        return super()._execute(job, scheduled_for, attempt, cancel, trigger, key, prepared=prepared)

    def _conclude(self, job: Any, scheduled_for: float, attempt: int, key: AttemptKey, outcome: Any, *args: Any,
                  **kwargs: Any) -> Any:
        self.starts.begun(key)  # (a command that never spawned)
        self.starts.wait_for_starts()  # the attempts taken over with it begin first
        self.keeper.closing(key)
        return super()._conclude(job, scheduled_for, attempt, key, outcome, *args, **kwargs)
