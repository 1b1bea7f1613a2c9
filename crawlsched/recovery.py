"""What a start or a late wake owes: interrupted attempts, pending retries, missed fires.

The daemon calls these with what they need (its state database, jobs,
anchors, the time) and applies what they return to its heap and chains
(which fires a stop leaves owed is ``chains.Chains.handled_until``);
the arithmetic of which fires were missed, which run and what the history
says about it lives here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from crawlsched import logs, procs, timing
from crawlsched.model import CatchUp, Job, RunStatus
from crawlsched.runner import end_run, run_dir
from crawlsched.state import CLAIM_DAEMON, AttemptKey, Owner, Retry, State

CATCH_UP_WINDOW = 24 * 3600.0
CATCH_UP_ALL_LIMIT = 100


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


def record_missed(state: State, log: logging.Logger, missed: Missed, now: float) -> None:
    state.record_not_run(missed.job_id, missed.last, RunStatus.MISSED.value, missed.message, now=now,
                         missed_count=missed.count, first_missed=missed.first, last_missed=missed.last)
    log.warning("job %s: %s", missed.job_id, missed.message)


def settle_stale_runs(state: State, jobs: Mapping[str, Job], home: Path, pid: int, now: float, log: logging.Logger) -> None:
    """Finish the running rows a dead daemon left: complete, or interrupted (with a retry if one is left)."""
    from crawlsched.crawl import bodies_complete, url_output

    for run in state.stale_running(Owner(CLAIM_DAEMON, pid, procs.identity(pid))):
        if procs.stop_orphan_group(run.child_pgid, run.child_ident):
            # Killed outright (SIGKILL, OOM) outside systemd, the old daemon left its command
            # running; stop it before the chain's next attempt could run beside it.
            log.warning("job %s: attempt %d left its command running (process group %d); stopped it",
                        run.job_id, run.attempt, run.child_pgid)
        job = jobs.get(run.job_id)
        if job is not None and job.urls and bodies_complete(job.urls, run_dir(home, job, run.scheduled_for, run.trigger)):
            # The rename of the last body is the commit point: the attempt did succeed.
            state.finish_attempt(AttemptKey.of(run), status=RunStatus.SUCCESS.value, finished_at=now,
                                 message="completed before the daemon stopped (all bodies in place)",
                                 output=url_output(job.urls, run_dir(home, job, run.scheduled_for, run.trigger)))
            log.info("job %s: attempt %d found complete after a restart", run.job_id, run.attempt)
            continue
        retry = None
        # A `crawlsched run` chain is that process's own (its retries are never saved): it ends with it.
        if job is not None and not job.paused and run.attempt < job.max_attempts and run.trigger != "run":
            retry = Retry(job.id, run.scheduled_for, run.attempt + 1, job.max_attempts, now, run.trigger)
        state.finish_attempt(AttemptKey.of(run), status=RunStatus.INTERRUPTED.value, finished_at=now,
                             message="interrupted: the process running it stopped", retry=retry)
        if retry is not None:
            log.warning("job %s: attempt %d/%d was interrupted (the process running it stopped or was killed);"
                        " the chain continues", run.job_id, run.attempt, run.max_attempts)
        else:  # the chain ends failed: its one ERROR line (SPEC §6)
            end_run(home, run.job_id, run.scheduled_for, run.trigger)  # a body it was writing: nobody finishes it
            logs.log_final_failure(log, run.job_id, f"attempt {run.attempt}/{run.max_attempts} was interrupted:"
                                   " the process running it stopped")


def retries_to_resume(state: State, jobs: Mapping[str, Job], anchors: Mapping[str, float], now: float,
                      log: logging.Logger, home: Path | None = None) -> list[Retry]:
    """The saved retries that still stand; the others (job gone, paused, overtaken by its next run) are cleared.

    A retry never runs after the job's next regular fire (SPEC §4): when that fire is
    already due at the start, the chain ends as it is ("next run is due") and the
    catch-up accounts for the newer fires like for any other job.
    """
    keep = []
    for retry in state.retries():
        job = jobs.get(retry.job_id)
        if job is None or job.paused:
            state.clear_retry(retry.job_id)
            if home is not None:
                end_run(home, retry.job_id, retry.scheduled_for, retry.trigger)
            why = "removed from the job file" if job is None else "paused"
            logs.log_final_failure(log, retry.job_id, f"{why} while its retry (attempt {retry.next_attempt}/"
                                   f"{retry.max_attempts}) waited; the retry is cancelled")
            continue
        superseded = timing.next_fire(job, timing.from_epoch(retry.scheduled_for), timing.from_epoch(anchors.get(job.id)))
        if retry.trigger != "manual" and superseded is not None and superseded.timestamp() <= now:
            state.clear_retry(job.id)
            _note_next_run_due(state, retry)
            if home is not None:
                end_run(home, job.id, retry.scheduled_for, retry.trigger)
            logs.log_final_failure(log, job.id, f"its pending retry (attempt {retry.next_attempt}/{retry.max_attempts})"
                                   " is dropped: the next run is due")
            continue
        keep.append(retry)
    return keep


def _note_next_run_due(state: State, retry: Retry) -> None:
    """Say on the chain's last attempt row why no further attempt follows."""
    state.note_chain_end(retry.job_id, retry.scheduled_for, retry.next_attempt - 1, " (next run is due)")


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


def rows_after(state: State, previous: Mapping[str, Any] | None) -> dict[str, Rowed]:
    """Per job, the rows of fires scheduled after the previous daemon's ``handled_until``."""
    handled = previous.get("handled_until") if previous else None
    if handled is None:
        return {}
    instants: dict[str, set[float]] = {}
    ranges: dict[str, list[tuple[float, float]]] = {}
    for row in state.fire_marks_after(handled - 1e-6):
        if row.status == RunStatus.MISSED.value and row.first_missed is not None:
            ranges.setdefault(row.job_id, []).append((row.first_missed, row.last_missed))
        else:
            instants.setdefault(row.job_id, set()).add(row.scheduled_for)
    return {j: Rowed(frozenset(instants.get(j, ())), tuple(ranges.get(j, ()))) for j in {*instants, *ranges}}


def catch_up(job: Job, now: float, previous: Mapping[str, Any], seen: Any, anchor: float | None, *,
             heartbeat_slack: float, rowed: Rowed | None = None) -> CatchUpPlan | None:
    """Fires missed while the daemon was down: some are run (the catch-up policy), the rest recorded missed.

    From ``handled_until`` on, a fire is owed when it has no row (``rowed``): fires that
    waited for a worker when the daemon died (``holes``, before the newest fire with a
    row) are recorded missed, or run with ``catch_up = "all"``; after that newest fire,
    the downtime is handled as always.
    """
    if seen is None or seen["daemon_seen"] is None:
        return None
    handled = previous.get("handled_until")
    if handled is None:  # a daemon of an older version: assume the last stretch before its heartbeat
        handled = (previous.get("stopped_at") or previous.get("heartbeat") or now) - heartbeat_slack
        # Fires at or before `handled` have rows; the job's last_fire covers those since.
        lo = max(seen["daemon_seen"], seen["last_fire"] or 0.0, handled - 1e-6)
        rowed = None
    else:
        lo = max(seen["daemon_seen"], handled - 1e-6)
    if lo >= now:
        return None
    anchor_dt = timing.from_epoch(anchor)
    holes: list[float] = []
    newest_rowed = rowed.newest() if rowed is not None else None
    if newest_rowed is not None and newest_rowed > lo:
        t = timing.next_fire(job, timing.from_epoch(lo), anchor_dt)
        while t is not None and t.timestamp() < newest_rowed and t.timestamp() <= now:
            if not rowed.holds(t.timestamp()):
                holes.append(t.timestamp())
            t = timing.next_fire(job, t, anchor_dt)
        lo = max(lo, newest_rowed)
    plan = _downtime(job, now, lo, anchor_dt) if lo < now else None
    if not holes:
        return plan
    return _with_holes(job, holes, rowed, plan, anchor_dt)


def _downtime(job: Job, now: float, lo: float, anchor_dt: datetime | None) -> CatchUpPlan | None:
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
            t = timing.prev_fire(job, t - timing.timedelta(microseconds=1), anchor_dt)
        runs.reverse()
    missed = None
    count_missed = count - len(runs)
    if count_missed > 0:
        last_missed = timing.prev_fire(job, timing.from_epoch(runs[0]) - timing.timedelta(microseconds=1), anchor_dt) if runs else newest
        assert last_missed is not None
        fmt = lambda d: timing.format_local(d, job.timezone)  # noqa: E731
        message = (f"missed {count_missed} fire{'s' if count_missed != 1 else ''} while the daemon was down"
                   f" ({fmt(first)} to {fmt(last_missed)}); catch_up = {job.catch_up.value}")
        missed = Missed(job.id, count_missed, first.timestamp(), last_missed.timestamp(), message)
    return CatchUpPlan(newest.timestamp(), runs, missed)


def _with_holes(job: Job, holes: list[float], rowed: Rowed, plan: CatchUpPlan | None,
                anchor_dt: datetime | None) -> CatchUpPlan:
    """Fires that never got a row though later ones did: run them (``all``) or record them missed,
    one row per stretch of consecutive fires, so no missed range holds an instant with a row."""
    newest = max(holes[-1], plan.newest if plan else holes[-1])
    if job.catch_up is CatchUp.ALL:
        runs = (holes + (plan.runs if plan else []))[-CATCH_UP_ALL_LIMIT:]
        return CatchUpPlan(newest, runs, plan.missed if plan else None, extra_missed=())
    fmt = lambda t: timing.format_local(timing.from_epoch(t), job.timezone)  # noqa: E731
    groups: list[list[float]] = []
    for t in holes:
        prev = timing.prev_fire(job, timing.from_epoch(t) - timing.timedelta(microseconds=1), anchor_dt)
        if groups and prev is not None and prev.timestamp() == groups[-1][-1]:
            groups[-1].append(t)
        else:
            groups.append([t])
    extra = tuple(
        Missed(job.id, len(g), g[0], g[-1],
               f"missed {len(g)} fire{'s' if len(g) != 1 else ''} ({fmt(g[0])} to {fmt(g[-1])}): it waited for a"
               " worker when the daemon stopped")
        for g in groups)
    return CatchUpPlan(newest, plan.runs if plan else [], plan.missed if plan else None, extra_missed=extra)


def coalesce(job: Job, scheduled: float, now: float, anchor: float | None) -> tuple[float, Missed | None]:
    """Woken late (suspend, clock jump): the fire to run (the newest one due) and the older ones, missed."""
    anchor_dt = timing.from_epoch(anchor)
    newest = timing.prev_fire(job, timing.from_epoch(now), anchor_dt)
    if newest is None or newest.timestamp() <= scheduled:
        return scheduled, None
    count = timing.count_fires(job, timing.from_epoch(scheduled) - timing.timedelta(microseconds=1),
                               newest - timing.timedelta(microseconds=1), anchor_dt)
    missed = None
    if count > 0:
        last_missed = timing.prev_fire(job, newest - timing.timedelta(microseconds=1), anchor_dt)
        fmt = lambda t: timing.format_local(timing.from_epoch(t) if isinstance(t, float) else t, job.timezone)  # noqa: E731
        message = f"missed {count} fire{'s' if count != 1 else ''} ({fmt(scheduled)} to {fmt(last_missed)}): the daemon woke late"
        last = last_missed.timestamp() if last_missed else scheduled
        missed = Missed(job.id, count, scheduled, last, message)
    return newest.timestamp(), missed
