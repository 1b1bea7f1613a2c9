"""A worker's take-overs, grouped: the attempts that reach their instant together are taken over in one write.

An attempt queued ahead of its instant (crawlsched.workers.executor: ``QUEUE_AHEAD``) waits in
its task thread until its scheduled time, less the take-over's ``lead``, then asks
:class:`TakeOvers` for its row (its crawl begins at its instant, never earlier: a crawl does not
begin before it is due). The first thread to ask leads: it takes every
request waiting at that moment over in one transaction (crawlsched.state.queue.take_over_many),
hands each thread its answer, and goes on while more wait (group commit). A burst of 50
attempts due at the same second in one worker costs one or two transactions, not 50, each of
which would wait for the state's global write lock in turn.

With a ``lead``, a row is taken over that many seconds before its instant, and its thread waits
for the instant after it (crawlsched.workers.worker): the writes of a burst, four worker
processes' in turn under the state's write lock, are done by the instant instead of after it.
An attempt whose command was spawned ahead (crawlsched.crawl.command.prepare_command, held at its
gate) gives its child: the write records the child's process group with the take-over, so the
group is known before the command is let go.

Each answer is what ``take_over`` answers for one row: its ``AttemptKey`` (the row is this
worker's now, its ``started_at`` the take-over's instant by the database's clock, or the row's
own instant when taken over ahead of it), or None when the row was settled or recalled meanwhile
(the job is dropped, never crawled).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from crawlsched.goaheads import GoAheads, wait_until

__all__ = ["GIVEN_BACK", "GoAheads", "StartsFirst", "TakeOvers", "wait_until"]

#: ``take_many(run_ids, children) -> {run_id: key}``, ``children`` {run_id: (process group, identity)}.
TakeMany = Callable[[list[int], dict[int, tuple[int, Any]]], dict[int, Any]]


GIVEN_BACK = object()  #: what :meth:`TakeOvers.take` answers when ``stop`` was set before the instant


class _Request:
    __slots__ = ("run_id", "job_id", "instant", "child", "finished", "key", "error")

    def __init__(self, run_id: int, job_id: str, instant: float, child: Any = None) -> None:
        self.run_id, self.job_id, self.instant, self.child = run_id, job_id, instant, child
        self.finished = False
        self.key: Any = None
        self.error: BaseException | None = None


class TakeOvers:
    """Group the take-overs of one worker process (``take_many(run_ids, children) -> {run_id: key}``)."""

    def __init__(self, take_many: TakeMany, clock: Callable[[], float] = time.time,
                 on_taken: Callable[[Any], None] = lambda keys: None, lead: float = 0.0) -> None:
        self._take_many = take_many
        self.lead = lead  # seconds before its instant a row is taken over
        self._on_taken = on_taken  # the keys of each write, before any thread goes on with one
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[_Request] = []
        self._leading = False
        self.batches = 0  # transactions run (for tests and profiles)

    def take(self, run_id: int, job_id: str, instant: float = 0.0, stop: threading.Event | None = None,
             child: Any = None) -> Any:
        """Wait for ``instant`` (less the ``lead``), then take the row over; its key, or None
        (refused), or :data:`GIVEN_BACK` (``stop`` set first). Raises what the write raised.
        The caller waits for the instant itself before it crawls.

        ``child`` (``.pgid``, ``.ident``): a command held at its gate, its group recorded by the
        take-over; the caller lets it go at the instant, or abandons it when refused.

        The request is known before the wait: the first thread whose instant comes takes over,
        in one write, every row whose instant has come (one row per job in a write: a chain's
        epoch is bumped once per write); the others find their answer when they wake."""
        request = _Request(run_id, job_id, instant, child)
        with self._cond:
            self._pending.append(request)
        if not wait_until(instant - self.lead, stop, self._clock):
            with self._cond:
                if not request.finished:  # not taken over yet: given back (taken, it must run: the row is ours)
                    self._pending.remove(request)
                    return GIVEN_BACK
        with self._cond:
            while not request.finished:
                if self._leading:
                    self._cond.wait()
                    continue
                self._write_due()
        if request.error is not None:
            raise request.error
        return request.key

    def _write_due(self) -> None:
        """Under the condition's lock, released during the write: every request due now, in one write."""
        self._leading = True
        now = self._clock()
        batch, rest, jobs = [], [], set()
        for r in self._pending:
            if r.instant - self.lead <= now and r.job_id not in jobs:
                batch.append(r)
                jobs.add(r.job_id)
            else:
                rest.append(r)
        self._pending = rest
        keys: dict[int, Any] = {}
        error: BaseException | None = None
        self._cond.release()
        try:
            children = {r.run_id: (r.child.pgid, r.child.ident) for r in batch if r.child is not None}
            keys = self._take_many([r.run_id for r in batch], children)
        except BaseException as exc:  # noqa: BLE001 - each attempt fails as its own take-over would
            error = exc
        finally:
            self._cond.acquire()
        self.batches += error is None
        if keys:
            self._on_taken(list(keys.values()))
        for r in batch:
            r.key, r.error, r.finished = keys.get(r.run_id), error, True
        self._leading = False
        self._cond.notify_all()


class StartsFirst:
    """A worker's attempts that were taken over and have not begun yet go before its closing ones.

    A burst's take-over hands a process's 50 attempts to their threads at once; the first commands
    end within milliseconds, and their closes (a write under the global lock, log lines) would
    share the process's one core of Python with the starts still to come. A close waits (at most
    ``patience`` seconds) until no start is pending: :meth:`taken` counts the attempts a
    take-over gave this process, :meth:`begun` (once per attempt) takes one off."""

    def __init__(self, patience: float = 1.0) -> None:
        self.patience = patience
        self._cond = threading.Condition(threading.Lock())
        self._pending: set[Any] = set()

    def taken(self, keys: Any) -> None:
        with self._cond:
            self._pending.update(keys)

    def begun(self, key: Any) -> None:
        with self._cond:
            if key in self._pending:
                self._pending.discard(key)
                if not self._pending:
                    self._cond.notify_all()

    def wait_for_starts(self) -> bool:
        """Before a close: wait until every pending start has begun; False when ``patience`` ran out
        (those still pending are forgotten then: a start that failed before it began never holds
        the closes up again)."""
        with self._cond:
            if self._cond.wait_for(lambda: not self._pending, self.patience):
                return True
            self._pending.clear()
            return False
