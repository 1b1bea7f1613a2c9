"""How the daemon stops (SIGTERM/SIGINT): the lead handed over, a grace period, then interrupted.

Attempts that have not begun are dropped first, so none starts during the grace period
(``handled_until`` makes the next start catch them up); one handed out ahead of its instant
(crawlsched.local_executor.LEAD), its row written and its command held, begins at its instant
within the grace period, or is given back (``interrupted``, its retry saved) when the grace ends first. The running ones share one deadline;
those still running then are interrupted and get at most ``CANCEL_WAIT`` seconds in all
(systemd's TimeoutStopSec is 45 s). ``Shutdown`` is a part of ``crawlsched.daemon.Daemon``
(mixed into it): it reads the daemon's executor, member, state and lock.
"""

from __future__ import annotations

__all__ = ["CANCEL_WAIT", "Shutdown"]

CANCEL_WAIT = 10.0  #: seconds, in all, for cancelled attempts to end after the grace period


class Shutdown:
    """The daemon's stop (mixed into ``Daemon``)."""

    def shutdown(self) -> int:
        """Stop firing; give running attempts the grace period; then record them interrupted.

        Attempts that have not begun are dropped first, so none starts during the grace
        period (``handled_until`` makes the next start catch them up). The running ones
        share one deadline; those still running then are interrupted and get at most
        ``CANCEL_WAIT`` seconds in all (systemd's TimeoutStopSec is 45 s).
        """
        self.notify("STOPPING=1")
        self._step("handing the lead over", self._hand_over_lead)  # the others fire while our attempts finish
        grace = self.grace if self.grace is not None else (self.defaults.grace_period if self.defaults else 30.0)
        if self._executor is not None:
            # A chain whose attempt ends meanwhile is recorded and its claim released then: the daemon
            # that took the lead fires that job while the slower attempts finish their grace.
            self._executor.shutdown(grace, CANCEL_WAIT, on_wait=self.release_ended)
        self.release_ended()  # what it cannot release is stale once we exit
        now = self.clock()
        try:
            if self.member.still_leads():  # the cluster's row: a standby's stop leaves it to the leader
                self.state.daemon_stopped(now, handled_until=self.handled_until(now))
            self.member.leave(now)  # a leader resigns: a standby takes over at its next look
        except Exception as exc:  # the database may be the reason we stop
            self.log.error("could not record the stop in the state database: %s", exc)
        if self.state.held and not self.state.flush_held():
            self.log.error("stopping with %d write(s) the state database did not take; the next start records"
                           " their attempts as interrupted", self.state.held)
        if self.watch is not None:
            self.watch.close()
        self.release_lock()
        self.log.info("crawlsched daemon stopped")
        return 0
