"""What a daemon does when its role among those sharing the state changes (beside ``crawlsched.cluster``).

``crawlsched.cluster.Membership`` keeps the leader lease and says what a look at
it changed; this is what the daemon then does: take over as a start does (recovery,
retries resumed, the downtime caught up), step down (fire nothing more, leave the
pending retries to the leader), hand the lead over at a stop, and, leading, adopt
the retries another daemon saved and settle the attempts of a leader that died.
``RoleChanges`` is a part of ``crawlsched.daemon.Daemon`` (mixed into it): it reads
the daemon's ``member``, ``chains``, ``planner`` and ``state``.
"""

from __future__ import annotations

import socket

from crawlsched import __version__
from crawlsched.cluster import Change
from crawlsched.model import JobFile
from crawlsched.plan import Planner
from crawlsched.state import LEADER, STANDBY

__all__ = ["RoleChanges"]


class RoleChanges:
    """The daemon's takeover, step-down and hand-over among daemons on one state (mixed into ``Daemon``)."""

    def _check_lease(self) -> None:
        """Renew or look at the leader lease; take over or step down when it changed hands."""
        now = self.clock()
        change = self.member.check(now)
        if change is Change.TOOK:
            self._take_over(now)
        elif change is Change.LOST:
            self._step_down()
        elif self.member.leading:
            self._adopt_retries(now)
            self.take_requests()  # run-now requests left through any daemon (or the CLI of any host)

    def _take_over(self, now: float) -> None:
        """This daemon leads now: what a start does (recovery, retries resumed, the downtime caught up)."""
        self.log.warning("this daemon leads now (leader lease epoch %d): taking over the schedule", self.member.epoch)
        previous = self.state.daemon_started(self.pid, socket.gethostname(), __version__, now)  # the cluster's row
        jobfile = JobFile(self.defaults, tuple(self.jobs.values())) if self.defaults is not None else None
        if jobfile is not None:
            self.planner = Planner()  # planned afresh from now, as a start plans
            self._apply(jobfile, now, previous=previous, recover=True)
        self.fired_until = now
        self.outage_since = self.deferred_since = None  # a takeover handles the whole downtime, an outage's too
        self.state.daemon_ready(self.clock(), http=self.http_url, handled_until=self.handled_until(now), **self.next_info())
        self._send_status()

    def _hand_over_lead(self) -> None:
        """Stopping on a shared state: say until when every fire was handled, and resign the lease
        now, so a standby takes over at its next look (not after this daemon's grace period)."""
        if not (self.member.shared and self.member.leading):
            return
        now = self.clock()
        self.state.heartbeat(now, pid=self.pid, handled_until=self.handled_until(now), **self.next_info())
        self.member.resign()
        self.log.info("stopping: the leader lease is handed over; the attempts running here finish in their grace period")

    def _step_down(self) -> None:
        """Another daemon leads: fire nothing more. Attempts already running finish and are recorded;
        pending retries are left saved in the state for the leader, and their claims released."""
        self.log.warning("this daemon lost the leader lease (another daemon leads, epoch %s): standing by;"
                         " it fires nothing more", self.member.epoch)
        self._hand_over_retries()

    def _hand_over_retries(self) -> None:
        waiting = [job_id for job_id, chain in self.chains.items() if not chain.handed]
        for job_id in waiting:
            del self.chains[job_id]  # its retry row stays: the leader adopts it
        self.chains.ended.update(waiting)
        self.chains.release_claims()

    def _settle_lapsed(self, now: float) -> None:
        """Attempts whose owner's lease lapsed since the takeover (a leader that died on another
        host: its leases outlive it by up to LEASE_SECONDS) are settled as a start settles them;
        their retries are adopted at the next renewal."""
        from crawlsched import recovery

        recovery.settle_stale_runs(self.state, self.jobs, self.home, 0, now, self.log,  # pid 0: nobody's own rows
                                   queued=getattr(self.defaults, "executor", "local") != "workers")

    def _adopt_retries(self, now: float) -> None:
        """Retries another daemon saved (an attempt it ran when it lost the lead) are this leader's to run."""
        from crawlsched import recovery

        known = self.chains.keys() | self.chains.saved_retry  # ours, or a leftover of our own chain
        saved = [r for r in self.state.retries() if r.job_id not in known]
        if not saved:
            return
        resumed = recovery.retries_to_resume(self.state, self.jobs, self.anchors, now, self.log, self.home, saved)
        for retry in resumed:
            chain = self.chains.resume(retry.job_id, retry.scheduled_for, retry.trigger, retry.next_attempt, retry.due_at)
            self.planner.push_retry(retry.job_id, chain.token, retry.due_at)
            self.log.info("job %s: adopted its retry (attempt %d/%d) saved by another daemon", retry.job_id,
                          retry.next_attempt, retry.max_attempts)
        self.state.claim_chains([r.job_id for r in resumed], self.runner.owner, now)

    @property
    def role(self) -> str:
        return LEADER if self.member.leading else STANDBY

    def take_requests(self) -> None:
        """Run-now requests are the leader's to fire (they wait in the state for it, whoever took them in)."""
        if self.member.leading:
            super().take_requests()
