"""Which fires a downtime or a late wake owes: catch-up and coalesce arithmetic, pure.

Nothing here reads a clock, a file or the state database: what the store knows
(the previous daemon's row, a job's first sight and last fire, the rows after
``handled_until``) comes in as plain data, and what is owed goes out as plain
data (``CatchUpPlan``, ``Missed``). The loop records the missed rows and fires
the runs (``crawlsched.recovery.record_missed``, ``crawlsched.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from crawlsched import timing
from crawlsched.model import CatchUp, Job

CATCH_UP_WINDOW = 24 * 3600.0  #: ``catch_up = "latest"`` runs the newest missed fire only this recent
CATCH_UP_ALL_LIMIT = 100  #: ``catch_up = "all"`` runs at most this many, the newest ones
_TINY = timing.timedelta(microseconds=1)
DAEMON_DOWN = "the daemon was down"  #: why a stretch of fires was missed, in its row's message
STATE_LOST = "the state database could not be reached"
HOLE_WHY = "it waited for a worker when the daemon stopped"


class Seen(NamedTuple):
    """What the store knows of one job: when a daemon first saw it, its anchor, its last fire."""

    daemon_seen: float | None = None
    anchor: float | None = None
    last_fire: float | None = None


class LastRun(NamedTuple):
    """The previous daemon of the home, as its row left it: until when it handled every fire,
    when it stopped (None when it was killed) and its last heartbeat."""

    handled_until: float | None = None
    stopped_at: float | None = None
    heartbeat: float | None = None


@dataclass(frozen=True)
class Missed:
    """One history row for fires that never ran: how many, the first and last, and why."""

    job_id: str
    count: int
    first: float
    last: float
    message: str


@dataclass(frozen=True)
class CatchUpPlan:
    """After a downtime: the job's last fire is now ``newest``; ``runs`` are fired now, oldest first.

    ``extra_missed``: fires that waited for a worker when the daemon died (see ``catch_up``).
    """

    newest: float
    runs: list[float]
    missed: Missed | None
    extra_missed: tuple[Missed, ...] = ()


@dataclass(frozen=True)
class Rowed:
    """The fires of one job after ``handled_until`` that have a row: instants (run, skipped)
    and ranges (missed). Between ``handled_until`` and the stop, a fire may have a row or not:
    one that waited for a worker has none, though later fires of its job were recorded."""

    instants: frozenset[float] = frozenset()
    ranges: tuple[tuple[float, float], ...] = ()

    def holds(self, t: float) -> bool:
        return t in self.instants or any(a <= t <= b for a, b in self.ranges)

    def newest(self) -> float | None:
        ends = [*self.instants, *(b for _, b in self.ranges)]
        return max(ends) if ends else None


def catch_up(job: Job, now: float, previous: LastRun, seen: Seen | None, anchor: float | None, *,
             heartbeat_slack: float, rowed: Rowed | None = None, down: str = DAEMON_DOWN) -> CatchUpPlan | None:
    """Fires missed while the daemon was down: some are run (the catch-up policy), the rest recorded missed.

    From ``handled_until`` on, a fire is owed when it has no row (``rowed``): fires that
    waited for a worker when the daemon died (``holes``, before the newest fire with a
    row) are recorded missed, or run with ``catch_up = "all"``; after that newest fire,
    the downtime is handled as always.
    """
    if seen is None or seen.daemon_seen is None:
        return None
    handled = previous.handled_until
    if handled is None:  # a daemon of an older version: assume the last stretch before its heartbeat
        handled = (previous.stopped_at or previous.heartbeat or now) - heartbeat_slack
        # Fires at or before `handled` have rows; the job's last_fire covers those since.
        lo = max(seen.daemon_seen, seen.last_fire or 0.0, handled - 1e-6)
        rowed = None
    else:
        lo = max(seen.daemon_seen, handled - 1e-6)
    if lo >= now:
        return None
    anchor_dt = timing.from_epoch(anchor)
    holes: list[float] = []
    newest_rowed = rowed.newest() if rowed is not None else None
    if rowed is not None and newest_rowed is not None and newest_rowed > lo:
        t = timing.next_fire(job, timing.from_epoch(lo), anchor_dt)
        while t is not None and t.timestamp() < newest_rowed and t.timestamp() <= now:
            if not rowed.holds(t.timestamp()):
                holes.append(t.timestamp())
            t = timing.next_fire(job, t, anchor_dt)
        lo = max(lo, newest_rowed)
    plan = downtime(job, now, lo, anchor_dt, down) if lo < now else None
    if not holes:
        return plan
    assert rowed is not None
    return with_holes(job, holes, plan, anchor_dt, HOLE_WHY if down == DAEMON_DOWN else f"{down} when it was due")


def downtime(job: Job, now: float, lo: float, anchor_dt: datetime | None, down: str = DAEMON_DOWN) -> CatchUpPlan | None:
    """The fires in ``(lo, now]``: the catch-up policy's runs and one missed row for the rest."""
    lo_dt, now_dt = timing.from_epoch(lo), timing.from_epoch(now)
    count = timing.count_fires(job, lo_dt, now_dt, anchor_dt)
    if count == 0:
        return None
    first = timing.next_fire(job, lo_dt, anchor_dt)
    newest = timing.prev_fire(job, now_dt, anchor_dt)
    assert first is not None and newest is not None
    runs: list[float] = []
    if job.catch_up is CatchUp.LATEST and now - newest.timestamp() <= CATCH_UP_WINDOW:
        runs = [newest.timestamp()]
    elif job.catch_up is CatchUp.ALL:
        t: datetime | None = newest
        while t is not None and len(runs) < min(count, CATCH_UP_ALL_LIMIT):
            runs.append(t.timestamp())
            t = timing.prev_fire(job, t - _TINY, anchor_dt)
        runs.reverse()
    missed = None
    count_missed = count - len(runs)
    if count_missed > 0:
        last_missed = timing.prev_fire(job, timing.from_epoch(runs[0]) - _TINY, anchor_dt) if runs else newest
        assert last_missed is not None
        message = (f"missed {count_missed} fire{'s' if count_missed != 1 else ''} while {down}"
                   f" ({_local(job, first)} to {_local(job, last_missed)}); catch_up = {job.catch_up.value}")
        missed = Missed(job.id, count_missed, first.timestamp(), last_missed.timestamp(), message)
    return CatchUpPlan(newest.timestamp(), runs, missed)


def with_holes(job: Job, holes: list[float], plan: CatchUpPlan | None, anchor_dt: datetime | None,
               why: str | None = None) -> CatchUpPlan:
    """Fires that never got a row though later ones did: run them (``all``) or record them missed,
    one row per stretch of consecutive fires, so no missed range holds an instant with a row."""
    newest = max(holes[-1], plan.newest if plan else holes[-1])
    if job.catch_up is CatchUp.ALL:
        runs = (holes + (plan.runs if plan else []))[-CATCH_UP_ALL_LIMIT:]
        dropped = [t for t in holes if t < runs[0]]  # the oldest holes, past the limit: missed, never lost
        extra = _missed_stretches(job, dropped, anchor_dt, why) if dropped else ()
        return CatchUpPlan(newest, runs, plan.missed if plan else None, extra_missed=extra)
    return CatchUpPlan(newest, plan.runs if plan else [], plan.missed if plan else None,
                       extra_missed=_missed_stretches(job, holes, anchor_dt, why))


def _missed_stretches(job: Job, holes: list[float], anchor_dt: datetime | None,
                      why: str | None = None) -> tuple[Missed, ...]:
    """One missed row per stretch of consecutive fires that waited for a worker."""
    groups: list[list[float]] = []
    for t in holes:
        prev = timing.prev_fire(job, timing.from_epoch(t) - _TINY, anchor_dt)
        if groups and prev is not None and prev.timestamp() == groups[-1][-1]:
            groups[-1].append(t)
        else:
            groups.append([t])
    return tuple(
        Missed(job.id, len(g), g[0], g[-1],
               f"missed {len(g)} fire{'s' if len(g) != 1 else ''} ({_local(job, g[0])} to {_local(job, g[-1])}):"
               f" {why or HOLE_WHY}")
        for g in groups)


def coalesce(job: Job, scheduled: float, now: float, anchor: float | None) -> tuple[float, Missed | None]:
    """Woken late (suspend, clock jump): the fire to run (the newest one due) and the older ones, missed."""
    anchor_dt = timing.from_epoch(anchor)
    newest = timing.prev_fire(job, timing.from_epoch(now), anchor_dt)
    if newest is None or newest.timestamp() <= scheduled:
        return scheduled, None
    count = timing.count_fires(job, timing.from_epoch(scheduled) - _TINY, newest - _TINY, anchor_dt)
    missed = None
    if count > 0:
        last_missed = timing.prev_fire(job, newest - _TINY, anchor_dt)
        last = last_missed.timestamp() if last_missed else scheduled
        message = (f"missed {count} fire{'s' if count != 1 else ''} ({_local(job, scheduled)} to"
                   f" {_local(job, last_missed)}): the daemon woke late")
        missed = Missed(job.id, count, scheduled, last, message)
    return newest.timestamp(), missed


def _local(job: Job, instant: datetime | float | None) -> str | None:
    """An instant in the job's zone, as the history's messages write it."""
    if isinstance(instant, float):
        instant = timing.from_epoch(instant)
    return timing.format_local(instant, job.timezone)
