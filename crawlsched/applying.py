"""A job file applied to the running plan: only what changed is re-planned; a start's debts paid.

``Planner.apply`` diffs the new jobs against the running ones; a removed or paused job's
pending retry is dropped, a changed one re-planned. The first time (a start, or a standby
taking the lead) the scheduler also pays what a start owes: recovery of what a dead daemon
left (``crawlsched.leftovers``), the downtime's fires recorded missed and those its catch-up
policy runs fired (``crawlsched.catchup``). ``Applying`` is a part of
``crawlsched.scheduler.Scheduler`` (a base class): it reads the scheduler's ``planner``,
``chains``, ``state`` and ``defaults``.
"""

from __future__ import annotations

from crawlsched import catchup, recovery
from crawlsched.duties import HEARTBEAT_SLACK
from crawlsched.model import Job, JobFile, Trigger
from crawlsched.state import DaemonInfo

__all__ = ["Applying"]


class Applying:
    """The scheduler applying a job file and catching a downtime up (``Scheduler``'s base)."""

    def _apply(self, jobfile: JobFile, now: float, previous: DaemonInfo | None = None, *,
               recover: bool | None = None) -> None:
        """Diff the new jobs against the running ones and re-plan only what changed (``Planner.apply``).

        The first time (or ``recover``: a standby taking the lead) it also does what a start
        owes: recovery of what a dead daemon left, its retries resumed, the downtime caught up;
        ``recover`` False (a standby's start) only plans.
        """
        first = not self.started if recover is None else recover
        seen = recovery.seen_jobs(self.state)
        change = self.planner.apply(jobfile.jobs, jobfile.defaults.paused, seen, now)
        # The scheduler's own switch ([defaults] paused, the legacy stop/start): flipping it
        # re-plans every job, as if each had been paused or resumed on its own.
        self.defaults = jobfile.defaults
        if change.switched or (first and jobfile.defaults.paused):
            self.log.info("scheduler stopped ([defaults] paused = true): no job fires until it is started again"
                          if jobfile.defaults.paused else "scheduler started ([defaults] paused removed)")
        for job_id in change.removed:
            self._drop_retry(job_id, "removed from the job file")
        if change.unseen:
            self.state.mark_seen_many(change.unseen)
        rowed = recovery.rows_after(self.state, previous) if first else {}
        last_run = recovery.last_run(previous) if first else None
        if first:
            self._recover(now)
        for job in change.changed:
            chain = self.chains.get(job.id)
            if chain is not None and chain.retry_due is not None and chain.attempt > job.max_attempts:
                self._drop_retry(job.id, f"now has at most {job.max_attempts} attempt(s)")
            if not self.planner.may_fire(job):
                self._drop_retry(job.id, "paused" if job.paused else "paused with the scheduler")
                continue
            if last_run is not None:
                self._catch_up(job, now, last_run, seen.get(job.id), rowed.get(job.id))
            self._plan(job, now)

    def _drop_retry(self, job_id: str, why: str) -> None:
        """No further attempts: a running one finishes and is recorded; a pending retry is cancelled."""
        self.chains.drop_retry(job_id, why)

    def _plan(self, job: Job, now: float) -> None:
        """Push the job's next fire after now (and after its last fire: never the same instant twice)."""
        self.planner.plan(job, now)

    def _catch_up(self, job: Job, now: float, previous: catchup.LastRun, seen: catchup.Seen | None,
                  rowed: catchup.Rowed | None = None, down: str = catchup.DAEMON_DOWN) -> None:
        """Fires missed while the daemon was down: recorded as missed; the catch-up policy runs some.

        A job whose chain is held (an attempt a worker still runs, adopted at a takeover) owes
        the same rows: the stretch missed, and the fires the policy would run recorded skipped
        (its runs never overlap)."""
        plan = catchup.catch_up(job, now, previous, seen, self.planner.anchors.get(job.id), heartbeat_slack=HEARTBEAT_SLACK,
                                rowed=rowed, down=down)
        if plan is None:
            return
        for missed in plan.extra_missed:
            recovery.record_missed(self.state, self.log, missed, now)
        if plan.missed is not None:
            recovery.record_missed(self.state, self.log, plan.missed, now)
        if job.id in self.chains:
            self.planner.last_fire[job.id] = plan.newest
            for scheduled in plan.runs:
                self.fire(job, scheduled, Trigger.CATCH_UP)  # the chain is running: recorded skipped
            return
        if self.planner.caught_up(job.id, plan):
            self._next_from_backlog(job.id)

    def _next_from_backlog(self, job_id: str) -> None:
        following = self.planner.next_from_backlog(job_id)
        if following is not None:
            self.fire(*following)
