"""What a running daemon tells others: its heartbeat row, systemd's status line, whether it is busy.

The heartbeat (a duty, every few seconds) writes the cluster's row when leading and renews the
leases of the attempts it still runs; ``systemctl status`` shows what it does now and next
(SPEC §6), sent only when it changed; retention's sweeps wait while a fire is near. ``Reports``
is a part of ``crawlsched.daemon.Daemon`` (mixed into it).
"""

from __future__ import annotations

from crawlsched.retention import GUARD
from crawlsched.scheduler import FIRE, RETRY
from crawlsched.status import status_line

__all__ = ["Reports"]


class Reports:
    """The daemon's heartbeat, status line and busy test (mixed into ``Daemon``)."""

    def write_heartbeat(self) -> None:
        now = self.clock()
        if not self.member.shared:
            self.member.beat(now)  # a shared state's rows beat with each look at the lease
        if self.member.leading:  # the cluster's row (its handled_until) is the leader's to write
            self.state.heartbeat(now, pid=self.pid, handled_until=self.handled_until(now), **self.next_info())
            if self.member.shared:
                self._settle_lapsed(now)
        elif self.chains:  # stepped down: the attempts it still runs keep their leases until they end
            self.state.renew_leases(self.runner.owner, now)

    def busy_soon(self) -> bool:
        """A fire or retry is due within retention.GUARD seconds, outcomes wait, or we are stopping."""
        self._clean_top()
        return (self.stopping or (self._executor is not None and self._executor.has_results())
                or bool(self.heap) and self.heap[0][0] - self.clock() < GUARD)

    def _send_status(self) -> None:
        """``systemctl status``'s line, when it changed: what the daemon does now and next (SPEC §6)."""
        self.status.send(self._status_text)

    def _status_text(self) -> str:
        self._clean_top()
        due, _, kind, job_id, _ = self.heap[0] if self.heap else (None, 0, FIRE, None, 0)
        return status_line(self.jobs, has_file=self.reloads.applied_key is not None, config_error=self.config_error,
                           next_due=due, next_job=job_id, retry=kind is RETRY)
