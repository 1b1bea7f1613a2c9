"""What follows an attempt's result: the next attempt after a backoff, or the end of the run.

A run of a job is a chain of attempts (SPEC §4). ``next_retry`` is the rule
for when the next one is due (the backoff, a server's Retry-After up to the
cap, never at or after the next regular fire); whatever runs an attempt
applies it and saves the retry with the attempt's row. :class:`Chains` is the
loop's side: the chain each job has in progress, what an outcome drained from
the executor means for it (:meth:`Chains.follow`), ending a chain early (its
retry row cleared, its half-written bodies removed, its one ERROR line),
releasing the claims of ended chains, and which fires a daemon stopped now
would owe (:meth:`Chains.handled_until`). The loop does the rest of what a
decision asks (plan the retry, take the next catch-up fire).
"""

from __future__ import annotations

import enum
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping

from crawlsched import logs, timing
from crawlsched.executor import AttemptOutcome, ChainKey, OutcomeKind

if TYPE_CHECKING:
    from crawlsched.model import Job
    from crawlsched.state import State

__all__ = ["Chain", "Chains", "Next", "next_retry"]


def next_retry(job: Job, scheduled_for: float, attempt: int, outcome: Any, now: float,
               anchor: float | None = None) -> tuple[float | None, str | None]:
    """When the next attempt is due, or None with the reason the chain ends (SPEC §4).

    ``outcome`` is the crawl's (``crawl.Outcome``: ``permanent``, ``retry_after``).
    """
    if attempt >= job.max_attempts:
        return None, None
    if outcome.permanent:
        return None, "permanent failure, not retried"
    wait = job.retry_wait(attempt)
    if outcome.retry_after is not None:
        # The server asked for a longer pause: honour it, up to the cap.
        wait = max(wait, outcome.retry_after)
        if job.retry_max_delay is not None:
            wait = min(wait, job.retry_max_delay)
    due = now + wait
    regular = timing.next_fire(job, timing.from_epoch(max(now, scheduled_for)), timing.from_epoch(anchor))
    if regular is not None and due >= regular.timestamp():
        return None, "next run is due"
    return due, None


@dataclass
class Chain:
    """One run of a job in progress: its attempts and retries, until it succeeds or gives up."""

    scheduled_for: float
    trigger: str
    attempt: int
    token: int
    retry_due: float | None = None  # waiting for its next attempt, due then
    handed: bool = False  # its current attempt is with the executor; no outcome collected yet


class Next(enum.Enum):
    """What an outcome means for its chain (``Chains.follow``)."""

    STALE = "stale"  #: not the chain's current attempt (it ended meanwhile): nothing to do
    RETRY = "retry"  #: re-armed: the chain waits for ``chain.retry_due``
    VOID = "void"  #: its job was removed or paused while it ran: the chain ended, its saved retry is void
    KEEP = "keep"  #: stopping: the retry stays saved for the next start
    END = "end"  #: the chain ended


class Chains(dict[str, Chain]):
    """The chain each job has in progress (job id -> Chain), as the loop keeps them.

    ``saved_retry``: jobs whose retry row may still be in the state database;
    ``ended``: jobs whose chain ended and whose claim is still to be released.
    """

    def __init__(self, state: State, home: Path, log: logging.Logger, owner: Any) -> None:
        super().__init__()
        self.state, self.home, self.log, self.owner = state, Path(home), log, owner  # owner: state.Owner
        self.tokens = itertools.count(1)
        self.saved_retry: set[str] = set()
        self.ended: set[str] = set()
        self.release_failing = False  # releasing claims failed (storage trouble): logged once per episode

    def begin(self, job_id: str, scheduled_for: float, trigger: str) -> Chain:
        """A new run of the job, its first attempt."""
        if job_id in self.saved_retry:
            self.clear_retry(job_id)  # a leftover of an earlier chain must not show as `retrying`
        chain = self[job_id] = Chain(scheduled_for, trigger, 1, next(self.tokens))
        return chain

    def resume(self, job_id: str, scheduled_for: float, trigger: str, attempt: int, due: float) -> Chain:
        """A run a previous daemon left waiting for attempt ``attempt``, due at ``due``."""
        chain = self[job_id] = Chain(scheduled_for, trigger, attempt, next(self.tokens), retry_due=due)
        self.saved_retry.add(job_id)
        return chain

    def end(self, job_id: str) -> None:
        del self[job_id]
        self.ended.add(job_id)

    def clear_retry(self, job_id: str) -> None:
        self.saved_retry.discard(job_id)
        self.state.clear_retry(job_id)

    def follow(self, outcome: AttemptOutcome, wanted: Callable[[str, int], bool],
               rearm: bool = True) -> tuple[Next, Chain | None]:
        """Apply an outcome to its chain; the decision, and the chain it was about.

        ``wanted(job_id, attempt)``: the job is still planned (not removed, not paused)
        and has that many attempts; a retry it saved when it was not is void: cleared,
        and the chain ends failed.
        ``rearm`` False (stopping): a saved retry is left for the next start.
        """
        job_id = outcome.job_id
        chain = self.get(job_id)
        if (chain is None or not chain.handed or chain.scheduled_for != outcome.scheduled_for
                or chain.attempt != outcome.attempt):
            return Next.STALE, None
        chain.handed = False
        if outcome.kind is OutcomeKind.CRASHED:
            self.saved_retry.add(job_id)  # failed inside crawlsched: it may have saved a retry
        elif outcome.retry_due is not None:
            self.saved_retry.add(job_id)
            if not rearm:
                return Next.KEEP, chain  # saved in the database; re-armed at the next start
            if wanted(job_id, outcome.attempt + 1):
                chain.attempt = outcome.attempt + 1
                chain.retry_due = outcome.retry_due
                return Next.RETRY, chain
            self._void(job_id, chain, "paused or removed while its attempt ran; its retry is cancelled")
            return Next.VOID, chain
        self.end(job_id)
        return Next.END, chain

    def drop_retry(self, job_id: str, why: str) -> None:
        """No further attempts: a running one finishes and is recorded (its outcome ends the
        chain); a pending retry is cancelled, and the chain ends failed here."""
        chain = self.get(job_id)
        if chain is None or chain.handed:
            return
        self._void(job_id, chain, f"{why}; its pending retry is cancelled" if chain.retry_due is not None else None)

    def _void(self, job_id: str, chain: Chain, final: str | None) -> None:
        from crawlsched.runner import end_run

        self.end(job_id)
        self.clear_retry(job_id)
        end_run(self.home, job_id, chain.scheduled_for, chain.trigger)
        if final is not None:  # the chain ends failed here: its one ERROR line (SPEC §6)
            logs.log_final_failure(self.log, job_id, final)

    def release_claims(self) -> None:
        """Drop the claims of chains that ended (not of one a new chain of the job holds again)."""
        from crawlsched.state import StorageUnavailable

        ended = [job_id for job_id in self.ended if job_id not in self]
        if not ended:  # nothing was written: not a sign the storage is back
            self.ended.clear()
            return
        try:
            self.state.release_chains(ended, self.owner)
        except StorageUnavailable:
            return  # tried again next turn; the storage episode is logged once, by the state
        except Exception as exc:  # a locked database: tried again next turn, logged once
            if not self.release_failing:
                self.release_failing = True
                self.log.error("could not release the claims of %d ended chain(s), trying again: %s", len(ended), exc)
            return
        if self.release_failing:
            self.release_failing = False
            self.log.info("the claims of ended chains are released again")
        self.ended.clear()

    def restore_retries(self, jobs: Mapping[str, Job]) -> int:
        """A fresh state database replaced a corrupt one: save the retries the chains wait for again."""
        from crawlsched.state import Retry

        count = 0
        for job_id, chain in self.items():
            job = jobs.get(job_id)
            if job is not None and chain.retry_due is not None:
                self.state.save_retry(Retry(job_id, chain.scheduled_for, chain.attempt, job.max_attempts,
                                            chain.retry_due, chain.trigger))
                count += 1
        return count

    def in_flight(self) -> list[ChainKey]:
        """The chains whose attempt is with the executor."""
        return [ChainKey(job_id, c.scheduled_for) for job_id, c in self.items() if c.handed]

    def handled_until(self, now: float, unstarted: Collection[ChainKey]) -> float:
        """Every fire due before this has a row or a saved retry; a fire still queued for a
        worker (``unstarted``) has neither, so a daemon killed now must catch it up at the next start."""
        if not unstarted:
            return now
        waiting = set(unstarted)
        return min([now, *(c.scheduled_for for job_id, c in self.items()
                           if c.attempt == 1 and c.retry_due is None and ChainKey(job_id, c.scheduled_for) in waiting)])
