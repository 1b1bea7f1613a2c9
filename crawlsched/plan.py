"""What fires when: the heap of next fires and pending retries, and how a job file or a clock jump changes it.

Pure: no clock (``now`` is passed in), no files, no state database, no threads.
The loop (``crawlsched.daemon``) holds one ``Planner``, feeds it what it read
(the job file, the store's ``Seen`` rows) and does what it answers (mark jobs
seen, record missed fires, hand due entries to the executor).

The heap holds one ``Entry`` per planned fire and per pending retry, ordered
by due time and then by a sequence number (so two entries never compare
further). An entry is not removed when its job changes: it goes stale, and is
dropped when it reaches the top. A FIRE entry is current while its job's plan
generation (``gen``) and planned time are what it says; a RETRY entry while its
chain (the loop's; anything with ``token`` and ``retry_due``) waits for it.
A turn that is not due touches nothing; one that is costs O(log n) per entry.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Protocol

from crawlsched import timing
from crawlsched.catchup import CatchUpPlan, Seen
from crawlsched.model import Job, ScheduleKind, Trigger

__all__ = ["Change", "Entry", "EntryKind", "Jumped", "Planner", "Waiting"]


class EntryKind(str, enum.Enum):
    """What a heap entry stands for (a ``str`` enum, as the model's: ``EntryKind.RETRY == "retry"``)."""

    FIRE = "fire"  #: the next regular fire of a job
    RETRY = "retry"  #: the next attempt of a chain that failed


class Entry(NamedTuple):
    """One heap entry. A tuple underneath: it compares (and is built) as fast as one."""

    due: float  #: epoch seconds
    seq: int  #: ties at the same instant keep the order they were planned in; never equal
    kind: EntryKind
    job_id: str
    token: int  #: FIRE: the job's plan generation; RETRY: its chain's token


# Builds an Entry without the Python-level ``__new__`` a NamedTuple has (a fire pushes one: keep it cheap).
_entry = tuple.__new__
_FIRE, _RETRY = EntryKind.FIRE, EntryKind.RETRY
_UNKNOWN = object()


class Waiting(Protocol):
    """A chain as the planner sees it: a RETRY entry is current while the chain waits for it."""

    token: int
    retry_due: float | None


@dataclass
class Change:
    """What applying a job file changed, for the loop to act on (in this order)."""

    removed: list[str] = field(default_factory=list)  #: jobs gone from the file: cancel their retries
    #: first sights for the store: ``(job id, now, anchor)`` (an ``every`` job's anchor, else None)
    unseen: list[tuple[str, float, float | None]] = field(default_factory=list)
    changed: list[Job] = field(default_factory=list)  #: new or changed jobs (all, when ``switched``): re-plan
    switched: bool = False  #: ``[defaults] paused`` flipped: every job counts as changed


@dataclass
class Jumped:
    """A backward clock jump's re-plan: anchors to save, and the new due times of pending retries."""

    anchors: list[tuple[str, float]] = field(default_factory=list)  #: ``every`` jobs re-anchored
    retries: list[tuple[str, float]] = field(default_factory=list)  #: (job id, new ``retry_due``)


class Planner:
    """The plan of one daemon: jobs, next fires, anchors, last fires, catch-up backlogs, and the heap."""

    def __init__(self) -> None:
        self.heap: list[Entry] = []
        self._seq = itertools.count()
        self.jobs: dict[str, Job] = {}
        self.paused: bool | None = None  #: ``[defaults] paused`` of the applied file; None before the first
        self.gen: dict[str, int] = {}  #: job id -> plan generation: bumped when its FIRE entries go stale
        self.planned: dict[str, float] = {}  #: job id -> scheduled time of its current FIRE entry
        self.anchors: dict[str, float] = {}  #: ``every`` jobs: the first fire (SPEC §3)
        self.last_fire: dict[str, float] = {}  #: job id -> its newest fire handed out or accounted for
        self.backlog: dict[str, deque[tuple[float, str]]] = {}  #: catch-up fires waiting their turn
        self._memo_now: float | None = None  #: the ``now`` of ``_memo``: next fires worked out at that instant
        self._memo: dict[tuple[object, ...], float | None] = {}

    # --- a job file ------------------------------------------------------------

    def apply(self, jobs: Iterable[Job], paused: bool, seen: Mapping[str, Seen], now: float) -> Change:
        """Take a new job file: forget removed jobs, learn anchors and last fires, mark changed jobs stale.

        ``seen`` is the store's knowledge of the jobs (``Seen`` by job id). The loop then
        handles ``change.removed`` and ``change.unseen``, and for each job of ``change.changed``
        that may fire, catches it up (at start) and calls ``plan``.
        """
        change = Change(switched=self.paused is not None and self.paused != paused)
        self.paused = paused
        new = {j.id: j for j in jobs}
        old = self.jobs
        for job_id in old:
            if job_id not in new:
                self.drop(job_id)
                change.removed.append(job_id)
        for job in new.values():
            row = seen.get(job.id)
            if row is None or row.daemon_seen is None:
                anchor = self._first_anchor(job, now)
                change.unseen.append((job.id, now, anchor))
                if anchor is not None:
                    self.anchors[job.id] = row.anchor if row is not None and row.anchor else anchor
            else:
                if row.anchor is not None:
                    self.anchors[job.id] = row.anchor
                elif job.kind is ScheduleKind.EVERY:
                    anchor = self._first_anchor(job, now)
                    self.anchors[job.id] = anchor  # type: ignore[assignment]
                    change.unseen.append((job.id, now, anchor))
                if row.last_fire is not None:
                    self.last_fire[job.id] = max(self.last_fire.get(job.id, 0.0), row.last_fire)
        self.jobs = new
        for job in new.values():
            if job.id in old and old[job.id] == job and not change.switched:
                continue
            self.unplan(job.id)
            change.changed.append(job)
        return change

    @staticmethod
    def _first_anchor(job: Job, now: float) -> float | None:
        if job.kind is not ScheduleKind.EVERY:
            return None
        return timing.first_fire_on_sight(job, timing.from_epoch(now)).timestamp()  # type: ignore[arg-type]

    def may_fire(self, job: Job) -> bool:
        """Neither the job nor the scheduler (``[defaults] paused``) is paused."""
        return not job.paused and not self.paused

    def drop(self, job_id: str) -> None:
        """The job is gone: its fires, anchor and backlog go with it."""
        self.unplan(job_id)
        self.anchors.pop(job_id, None)
        self.backlog.pop(job_id, None)

    def unplan(self, job_id: str) -> None:
        """The job's FIRE entries go stale (re-planned by ``plan``, or not at all)."""
        self.gen[job_id] = self.gen.get(job_id, 0) + 1
        self.planned.pop(job_id, None)

    def plan(self, job: Job, now: float) -> float | None:
        """Push the job's next fire after now (and after its last fire: never the same instant twice)."""
        last = self.last_fire.get(job.id, 0.0)
        after = max(now, last)
        anchor = self.anchors.get(job.id)
        from_anchor = job.kind is ScheduleKind.EVERY and anchor is not None and after == now and anchor >= now and last < anchor
        # The next fire is a function of the schedule, the window, the instant and the anchor alone:
        # jobs planned at the same ``now`` (a start, a burst) that share them share the answer.
        if now != self._memo_now:
            self._memo_now, self._memo = now, {}
        key = (job.kind, job.spec, job.timezone, job.start_date, job.end_date, from_anchor, after, anchor)
        due = self._memo.get(key, _UNKNOWN)
        if due is _UNKNOWN:
            if from_anchor:
                after_dt = timing.from_epoch(anchor) - timing.timedelta(microseconds=1)  # the anchor itself fires
            else:
                after_dt = timing.from_epoch(after)
            fire = timing.next_fire(job, after_dt, timing.from_epoch(anchor))  # type: ignore[arg-type]
            due = self._memo[key] = None if fire is None else fire.timestamp()
        if due is None:
            return None
        self.planned[job.id] = due
        heapq.heappush(self.heap, _entry(Entry, (due, next(self._seq), _FIRE, job.id, self.gen.get(job.id, 0))))
        return due

    # --- retries ---------------------------------------------------------------

    def push_retry(self, job_id: str, token: int, due: float) -> None:
        """A chain's next attempt is due at ``due`` (current while the chain's ``retry_due`` is that)."""
        heapq.heappush(self.heap, _entry(Entry, (due, next(self._seq), _RETRY, job_id, token)))

    # --- what is due -------------------------------------------------------------

    def current(self, entry: Entry, chains: Mapping[str, Waiting]) -> bool:
        """Whether the entry still stands (stale ones are left in the heap and skipped)."""
        due, _, kind, job_id, token = entry
        if kind is _FIRE:
            return self.gen.get(job_id) == token and job_id in self.jobs and self.planned.get(job_id) == due
        chain = chains.get(job_id)
        return chain is not None and chain.token == token and chain.retry_due == due

    def clean_top(self, chains: Mapping[str, Waiting]) -> None:
        """Drop stale entries from the top, so the top is what is due next."""
        heap = self.heap
        while heap and not self.current(heap[0], chains):
            heapq.heappop(heap)

    def top(self, chains: Mapping[str, Waiting]) -> Entry | None:
        """The entry due next, or None."""
        self.clean_top(chains)
        return self.heap[0] if self.heap else None

    def pop_due(self, now: float, chains: Mapping[str, Waiting], ahead: float = 0.0) -> list[Entry]:
        """Take every current entry due at ``now`` off the heap, earliest first; with ``ahead``, also
        the fires due within ``ahead`` seconds of a job with no chain in flight (``leads``)."""
        heap, current, pop = self.heap, self.current, heapq.heappop
        due: list[Entry] = []
        held: list[Entry] = []
        while heap and heap[0][0] <= now + ahead:
            entry = pop(heap)
            if not current(entry, chains):
                continue
            if entry[0] > now and not self.leads(entry, chains):
                held.append(entry)
                continue
            due.append(entry)
        for entry in held:
            heapq.heappush(heap, entry)
        return due

    @staticmethod
    def leads(entry: Entry, chains: Mapping[str, Waiting]) -> bool:
        """May the entry be handed out before its instant? A fire whose job has no chain in flight:
        a retry waits for its due time, and a fire while the job still runs or retries is decided
        (skipped) at its instant, as without a lead."""
        return entry[2] is EntryKind.FIRE and entry[3] not in chains

    def next_handout(self, chains: Mapping[str, Waiting], ahead: float = 0.0) -> float | None:
        """When the top entry is to be handed out: its instant, ``ahead`` seconds earlier when it ``leads``."""
        if not self.heap:
            return None
        top = self.heap[0]
        return top[0] - ahead if ahead and self.leads(top, chains) else top[0]

    def take(self, job_id: str) -> None:
        """A FIRE entry of the job was taken: it has no planned fire until ``plan`` (after the burst)."""
        self.planned.pop(job_id, None)

    def fired(self, job_id: str, scheduled: float) -> None:
        """The job fired for ``scheduled`` (after coalescing): the next plan comes after it."""
        self.last_fire[job_id] = max(self.last_fire.get(job_id, 0.0), scheduled)

    # --- catch-up ------------------------------------------------------------------

    def caught_up(self, job_id: str, plan: CatchUpPlan) -> bool:
        """After a downtime: the job's last fire is the newest owed; the runs wait in its backlog.

        True when there is a backlog: the loop fires its first (``next_from_backlog``)."""
        self.last_fire[job_id] = plan.newest
        if not plan.runs:
            return False
        self.backlog[job_id] = deque((t, Trigger.CATCH_UP.value) for t in plan.runs)
        return True

    def next_from_backlog(self, job_id: str) -> tuple[Job, float, str] | None:
        """The job's next catch-up fire (job, scheduled time, trigger), or None (none left, or paused)."""
        backlog = self.backlog.get(job_id)
        job = self.jobs.get(job_id)
        if not backlog or job is None or not self.may_fire(job):
            self.backlog.pop(job_id, None)
            return None
        scheduled_for, trigger = backlog.popleft()
        if not backlog:
            self.backlog.pop(job_id, None)
        return job, scheduled_for, trigger

    def backlog_times(self) -> list[float]:
        """The scheduled times still waiting in catch-up backlogs (they have no row yet)."""
        return [t for backlog in self.backlog.values() for t, _ in backlog]

    # --- clock jumps -----------------------------------------------------------------

    def clock_jumped(self, delta: float, now: float, chains: Mapping[str, Waiting]) -> Jumped:
        """Re-plan after the wall clock moved by ``delta`` seconds against the monotonic clock.

        Forward: nothing to do here (the overdue entries fire at once and ``coalesce``).
        Back: fixed-time jobs wait for their next fire after the last one (no duplicate);
        interval jobs and pending retries keep their real remaining time. The loop saves
        ``anchors`` and sets each chain's ``retry_due`` to what ``retries`` says (its entry
        is pushed already).
        """
        jumped = Jumped()
        if delta >= 0:
            return jumped
        for job_id, job in self.jobs.items():
            if job.kind is ScheduleKind.EVERY and job_id in self.planned and not job.paused:
                new_due = max(now, self.planned[job_id] + delta)
                self.anchors[job_id] = new_due
                self.last_fire[job_id] = min(self.last_fire.get(job_id, 0.0), new_due - 1e-6)
                self.gen[job_id] = self.gen.get(job_id, 0) + 1
                self.planned[job_id] = new_due
                heapq.heappush(self.heap, Entry(new_due, next(self._seq), EntryKind.FIRE, job_id, self.gen[job_id]))
                jumped.anchors.append((job_id, new_due))
        for job_id, chain in chains.items():
            if chain.retry_due is not None:
                due = max(now, chain.retry_due + delta)
                self.push_retry(job_id, chain.token, due)
                jumped.retries.append((job_id, due))
        return jumped
