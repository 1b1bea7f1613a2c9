"""What the scheduler takes over from those before it: a dead daemon's rows, a replaced state file.

At a start (or a takeover) the running rows a dead daemon left are settled, its
pending retries resumed as this scheduler's chains and, with ``executor = "workers"``,
the attempts it queued that a worker still runs adopted (``crawlsched.recovery`` does
the reading and recording). A corrupt state file replaced by a fresh one gets back
what the loop knows. ``Leftovers`` is a part of ``crawlsched.scheduler.Scheduler``
(its base class): it reads the scheduler's ``state``, ``jobs``, ``chains`` and ``planner``.
"""

from __future__ import annotations

from crawlsched import recovery

__all__ = ["Leftovers"]


class Leftovers:
    """The scheduler's recovery of what a dead daemon left, and of a replaced state file (``Scheduler``'s base)."""

    def _recover(self, now: float) -> None:
        """Account for what a dead daemon left: running rows and pending retries."""
        workers = getattr(self.defaults, "executor", "local") == "workers"
        recovery.settle_stale_runs(self.state, self.jobs, self.home, self.pid, now, self.log, queued=not workers)
        resumed = recovery.retries_to_resume(self.state, self.jobs, self.anchors, now, self.log, self.home)
        for retry in resumed:
            chain = self.chains.resume(retry.job_id, retry.scheduled_for, retry.trigger, retry.next_attempt, retry.due_at)
            self.planner.push_retry(retry.job_id, chain.token, retry.due_at)
        adopted = self._adopt_queued() if workers else []
        # A chain waiting for its retry is ours: `crawlsched run` refuses it meanwhile. One held by a
        # live `run` (started while no daemon was up) is checked again when the retry is due.
        self.state.claim_chains([r.job_id for r in resumed] + adopted, self.runner.owner, now)

    def _adopt_queued(self) -> list[str]:
        """executor = "workers": attempts a previous daemon queued that a worker still runs (or will):
        their chains are this daemon's now, waiting for the outcome (crawlsched.workers)."""
        from crawlsched.state.queue import queued_running

        adopted = []
        for run in queued_running(self.state):
            if run.job_id in self.jobs and run.job_id not in self.chains:
                chain = self.chains.begin(run.job_id, run.scheduled_for, run.trigger)
                chain.attempt, chain.handed = run.attempt, True
                adopted.append(run.job_id)
        return adopted

    def _restore_after_replace(self) -> None:
        """A corrupt file was replaced by a fresh one: write back what the loop knows, so a
        restart still catches up this daemon's jobs and resumes its pending retries."""
        now = self.clock()
        self.state.restore_seen([(j, now, self.anchors.get(j), self.last_fire.get(j)) for j in self.jobs])
        retries = self.chains.restore_retries(self.jobs)
        self.log.info("state database replaced: %d jobs and %d pending retries written to the fresh one", len(self.jobs),
                      retries)
