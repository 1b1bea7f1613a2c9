"""Where attempts run, as the loop sees it: specs go in, outcomes come back, nothing else crosses.

The loop hands an executor an :class:`AttemptSpec` (plain data: the job's
definition, which fire, which attempt) and later drains
:class:`AttemptOutcome`\\ s (plain data: what happened, the retry it saved)
from ``results()``, when the wake-up the executor was started with fires. No
closure, future, lock or loop state crosses: an implementation may run the
attempt in a thread of this process (``crawlsched.local_executor``), here and
now (:class:`InlineExecutor`, for tests with a fake clock), or in a worker on
another machine that builds its own ``AttemptRunner`` over the same state
store (SPEC §10).

Everything the loop asks of an executor is in :class:`Executor`: ``start``,
``submit``, ``results``, ``cancel``, ``unstarted``, ``capacity``/``resize``,
``begin_burst``/``end_burst`` and ``shutdown(grace)``. An executor over a
queue (workers on other machines) would queue ``spec_to_json(spec)`` in
``submit`` (a burst's specs in one transaction), have each worker run
``AttemptRunner.run(spec_from_json(...))`` against the shared state store and
put the outcome where ``results()`` finds it, call ``wake`` from its listener,
keep ``cancel`` as a flag the worker reads before saving a retry, and answer
``unstarted`` with the specs still queued.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, NamedTuple, Protocol

from crawlsched.model import CatchUp, Job, RunStatus, ScheduleKind

if TYPE_CHECKING:
    from crawlsched.runner import AttemptRunner

__all__ = ["AttemptOutcome", "AttemptSpec", "ChainKey", "Executor", "InlineExecutor", "OutcomeKind", "outcome_from_json",
           "outcome_to_json", "spec_from_json", "spec_to_json"]


class ChainKey(NamedTuple):
    """A run of a job (its chain of attempts), as the loop and an executor name it to each other."""

    job_id: str
    scheduled_for: float


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """One attempt to run: plain, picklable data, the same for a thread or a remote worker.

    ``job`` is the job's whole definition as the loop applied it (a frozen
    dataclass of values: its URLs or command, headers, timeout, ``max_bytes``,
    ``verify``, ``user_agent``, its retry rule and schedule, ``on_failure``,
    ``keep_runs``); ``${VAR}`` references in it are left as written and
    resolved from the environment of whatever runs the attempt. The run's
    folder and log names follow from ``job_id``, ``scheduled_for`` and
    ``trigger`` (``runner.run_name``). ``anchor`` is the interval job's
    anchor, for the rule that a retry never runs after the next regular fire.
    """

    job_id: str
    scheduled_for: float
    attempt: int  # 1-based
    max_attempts: int
    trigger: str  # a model.Trigger value
    job: Job
    anchor: float | None = None

    @classmethod
    def of(cls, job: Job, scheduled_for: float, attempt: int, trigger: str, anchor: float | None = None) -> AttemptSpec:
        return cls(job.id, scheduled_for, attempt, job.max_attempts, trigger, job, anchor)

    @property
    def key(self) -> ChainKey:
        return ChainKey(self.job_id, self.scheduled_for)


class OutcomeKind(enum.Enum):
    """What became of an attempt handed to an executor."""

    RAN = "ran"  #: it ran and its row is closed: ``status`` is success, failed or interrupted
    BUSY = "busy"  #: another process holds the job's chain: the fire (or retry) is recorded skipped
    MISSED = "missed"  #: the state database took no write when it was due: held as missed, not run
    DEFERRED = "deferred"  #: the (PostgreSQL) state was lost when it was due: not run, no row; handled as downtime
    DUPLICATE = "duplicate"  #: this attempt has a row already: not run twice, nothing written
    CRASHED = "crashed"  #: failed inside crawlsched (a bug, logged): it may have saved a retry


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What happened to one attempt, and what comes next: ``retry_due`` (epoch) or the end of its chain.

    ``status`` is what its history row says (None when this attempt wrote none:
    ``DUPLICATE``, ``CRASHED``). ``retry_due`` is set when the attempt saved
    its chain's next attempt in the state database, in the transaction that
    closed its row.
    """

    job_id: str
    scheduled_for: float
    attempt: int
    kind: OutcomeKind
    status: RunStatus | None
    message: str
    retry_due: float | None = None

    @property
    def key(self) -> ChainKey:
        return ChainKey(self.job_id, self.scheduled_for)

    @property
    def final(self) -> bool:
        """No further attempt of this chain was saved."""
        return self.retry_due is None

    @property
    def label(self) -> str:
        """The word a person reads: the row's status, or the kind when no row was written."""
        return self.status.value if self.status is not None else self.kind.value


#: The Job fields whose values are not JSON as they are, and how each is read back.
JOB_FIELDS_FROM_JSON: Mapping[str, Callable[[Any], Any]] = {
    "kind": ScheduleKind, "catch_up": CatchUp, "urls": tuple, "explicit": frozenset,
    "start_date": date.fromisoformat, "end_date": date.fromisoformat, "created_at": datetime.fromisoformat,
}


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def spec_to_json(spec: AttemptSpec) -> dict[str, Any]:
    """The spec as JSON values (for a queue that carries JSON): ``spec_from_json`` reads it back equal."""
    data = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "job"}
    data["job"] = {f.name: _json_value(getattr(spec.job, f.name)) for f in fields(Job)}
    return data


def spec_from_json(data: Mapping[str, Any]) -> AttemptSpec:
    job = {name: (JOB_FIELDS_FROM_JSON[name](value) if name in JOB_FIELDS_FROM_JSON and value is not None else value)
           for name, value in data["job"].items()}
    return AttemptSpec(**{k: v for k, v in data.items() if k != "job"}, job=Job(**job))


def outcome_to_json(outcome: AttemptOutcome) -> dict[str, Any]:
    return {**asdict(outcome), "kind": outcome.kind.value, "status": outcome.status.value if outcome.status else None}


def outcome_from_json(data: Mapping[str, Any]) -> AttemptOutcome:
    status = data.get("status")
    return AttemptOutcome(**{**data, "kind": OutcomeKind(data["kind"]),
                             "status": RunStatus(status) if status is not None else None})


class Executor(Protocol):
    """Runs attempts for the loop (SPEC §10: threads here, or workers elsewhere).

    Every call is made from the loop's thread. ``wake`` (given to ``start``)
    may be called from any thread and takes no lock: the loop then drains
    ``results()``.
    """

    def start(self, runner: AttemptRunner, wake: Callable[[], None]) -> None:
        """Begin taking specs. A local executor runs them with ``runner``; a remote one's
        workers build their own. ``wake`` is called whenever an outcome is ready."""

    def submit(self, spec: AttemptSpec) -> None:
        """Hand over one attempt; its outcome comes back through ``results()`` (exactly one)."""

    def results(self) -> list[AttemptOutcome]:
        """The outcomes that arrived since the last call, oldest first (never blocks)."""

    def has_results(self) -> bool:
        """Whether ``results()`` would return something now."""

    def cancel(self, key: ChainKey) -> None:
        """The loop no longer wants the chain ``key`` (its job was removed or paused): the attempt
        handed over still runs and is recorded, but saves no retry. A no-op for an unknown key."""

    def unstarted(self) -> Collection[ChainKey]:
        """Chains whose attempt was handed over and has not begun (waiting for a worker, or
        dropped by ``shutdown``): they have no row, so a daemon stopped now owes their fires."""

    @property
    def capacity(self) -> int:
        """How many attempts can run at once."""

    def resize(self, size: int) -> None:
        """Run up to ``size`` attempts at once from now on (running ones finish)."""

    def begin_burst(self) -> None:
        """Attempts submitted until ``end_burst`` are one burst: they start together."""

    def end_burst(self) -> None:
        """The burst is handed out: its attempts may go on."""

    def shutdown(self, grace: float, cancel_wait: float, on_wait: Callable[[], None] | None = None) -> None:
        """Stop: attempts not begun are dropped (``unstarted``); running ones get ``grace``
        seconds to end, then are interrupted and get at most ``cancel_wait`` seconds more.
        ``on_wait`` is called in the caller's thread every fraction of a second while it waits,
        so that the outcomes of attempts that ended meanwhile are taken (``results``) then."""


class InlineExecutor:
    """Runs each attempt at once, in the caller's thread: for tests with a fake clock.

    A subclass can override ``submit`` to queue, drop or die instead, and call
    ``run(spec)`` (the runner) and ``deliver(outcome)`` itself.
    """

    def __init__(self) -> None:
        self.runner: AttemptRunner | None = None
        self.wake: Callable[[], None] = lambda: None
        self.cancelled: set[ChainKey] = set()
        self._results: deque[AttemptOutcome] = deque()
        self._capacity = 1

    def start(self, runner: AttemptRunner, wake: Callable[[], None]) -> None:
        self.runner = runner
        self.wake = wake

    def submit(self, spec: AttemptSpec) -> None:
        self.deliver(self.run(spec))

    def run(self, spec: AttemptSpec, started_at: float | None = None) -> AttemptOutcome:
        assert self.runner is not None, "start() the executor first"
        key = spec.key
        try:
            return self.runner.run(spec, started_at=started_at, still_wanted=lambda: key not in self.cancelled)
        finally:
            self.cancelled.discard(key)

    def deliver(self, outcome: AttemptOutcome) -> None:
        self._results.append(outcome)
        self.wake()

    def results(self) -> list[AttemptOutcome]:
        out = list(self._results)
        self._results.clear()
        for outcome in out:  # a cancel after the attempt ended: nothing left to cancel
            self.cancelled.discard(outcome.key)
        return out

    def has_results(self) -> bool:
        return bool(self._results)

    def cancel(self, key: ChainKey) -> None:
        self.cancelled.add(key)

    def unstarted(self) -> Collection[ChainKey]:
        return ()

    @property
    def capacity(self) -> int:
        return self._capacity

    def resize(self, size: int) -> None:
        self._capacity = size

    def begin_burst(self) -> None:
        pass

    def end_burst(self) -> None:
        pass

    def shutdown(self, grace: float, cancel_wait: float, on_wait: Callable[[], None] | None = None) -> None:
        pass
