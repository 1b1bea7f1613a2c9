"""The daemon's handling of a lost (PostgreSQL) state (SPEC §10): waited for at start, fires held while lost.

A state that cannot be reached at start is waited for, tried every ``STATE_RETRY``
seconds, until it answers or SIGTERM comes. One lost while the daemon runs holds
every fire (an attempt without its row could run twice); once it answers again,
what came due meanwhile is handled as downtime (missed rows, ``catch_up``), once.
``StateOutage`` is a part of ``crawlsched.daemon.Daemon`` (mixed into it): it reads
and sets the daemon's ``state``, ``wake``, ``stopping``, ``outage_since``,
``probe_at`` and ``waiting_for_state``, and plans through the scheduler's methods.
"""

from __future__ import annotations

from crawlsched import catchup, recovery
from crawlsched.state import StorageUnavailable
from crawlsched.state.trouble import StateUnreachable

__all__ = ["STATE_RETRY", "StateOutage"]

STATE_RETRY = 1.0  # seconds between tries to reach a lost (PostgreSQL) state database


class StateOutage:
    """The daemon's waits for a state database it cannot reach, and the downtime they leave (mixed into ``Daemon``)."""

    def _open_state(self) -> bool:
        """Open the state; a PostgreSQL one that cannot be reached is waited for (SPEC §10), said once
        at ERROR, until it answers or SIGTERM comes (False). Any other error (a SQLite file's trouble,
        a schema the database refuses) is raised as before."""
        while True:
            try:
                self.state.open(recover_corrupt=True)
            except StateUnreachable as exc:  # a server down or cut off; a refused schema still ends the start
                why = " ".join(str(exc).split())  # redacted and scrubbed by the store
                if self.waiting_for_state is None:
                    self.log.error("%s; waiting for it, trying every %g s: the daemon starts once it answers"
                                   " (logged once until then)", why, STATE_RETRY)
                self.waiting_for_state = why
                if not self.stopping:
                    self.wake.wait(STATE_RETRY)
                    self.wake.clear()
                if self.stopping:
                    return False
                continue
            if self.waiting_for_state is not None:
                self.waiting_for_state = None
                self.log.info("state database %s answers again; starting", getattr(self.state, "where", ""))
            return True

    # --- a lost (PostgreSQL) state: fires wait, then are handled as downtime ------------------

    def _state_lost(self) -> bool:
        """True while the state database is out of reach: nothing fires (an attempt without its row
        could run twice). Tried every ``STATE_RETRY`` s; when it is back, what came due meanwhile is
        handled as downtime (``_after_outage``), once. SQLite's storage trouble is not this."""
        state = self.state
        if not getattr(state, "outage_is_downtime", False):
            return False
        if self.outage_since is None:
            if not state.unreachable and self.deferred_since is None:  # type: ignore[attr-defined]
                return False
            handed = [t for t in (self.fired_until, self.deferred_since) if t is not None]
            self.outage_since = min(handed) if handed else self.clock()
            self.probe_at = self.monotonic()
        elif self.deferred_since is not None and self.deferred_since < self.outage_since:
            self.outage_since = self.deferred_since  # an attempt handed out before the loss was noticed
        if self.monotonic() < self.probe_at:
            return True
        self.probe_at = self.monotonic() + STATE_RETRY
        if not state.probe():  # type: ignore[attr-defined]
            return True
        try:
            self._after_outage(self.clock())
        except StorageUnavailable:
            return True  # lost again before the downtime was handled: handled at the next try, from the same instant
        return False

    def _after_outage(self, now: float) -> None:
        """The state is back: every job owed fires since ``outage_since`` gets its downtime handling
        (one missed row for the stretch, ``catch_up``), as at a start; rows written meanwhile (held
        writes, landed first) are not counted twice."""
        since = self.outage_since
        assert since is not None
        rowed = recovery.rows_after(self.state, {"handled_until": since})
        seen = recovery.seen_jobs(self.state)
        self.outage_since = self.deferred_since = None
        last = catchup.LastRun(since, None, None)
        owed = 0
        for job in list(self.jobs.values()):
            if not self.planner.may_fire(job):
                continue  # a paused job owes none; a running chain's owed fires are recorded (missed, skipped)
            due = self.planned.get(job.id)
            if not (due is not None and due <= now or self.last_fire.get(job.id, 0.0) >= since):
                continue
            owed += 1
            self.planner.unplan(job.id)
            self._catch_up(job, now, last, seen.get(job.id), rowed.get(job.id), down=catchup.STATE_LOST)
            self._plan(job, now)
        self.fired_until = now
        self.log.info("state database back: the fires of %d job(s) due in the %.0f s it was out of reach are"
                      " handled as downtime (missed rows, catch_up)", owed, now - since)

    def state_problem(self) -> str | None:
        """Why the state cannot be used now (for ``/healthz``), or None."""
        if self.waiting_for_state is not None:
            return f"{self.waiting_for_state}; the daemon waits for it and starts once it answers"
        episode = getattr(getattr(self.state, "db", None), "episode", None)
        why = getattr(episode, "why", None) if getattr(self.state, "outage_is_downtime", False) else None
        if why is not None or self.outage_since is not None:
            where = getattr(self.state, "where", "")
            return (f"the state database {where} cannot be reached ({why or 'trying again'}); nothing fires until"
                    " it answers, then what was due meanwhile is handled as downtime")
        return None
