"""The job list's body, built again only for the jobs that changed.

``GET /api/scheduler/jobs`` shows every job through ``render.job_dict``: about 35 µs a
job, and as much again to write it as JSON. ``conditional.CachedJobs`` keeps the whole
answer while nothing changes; when something does (a run ends: every few seconds in a
busy fleet), this keeps each job's JSON with what it was built from — the job as the
file defines it and what the state says of it (``JobState``: its newest attempt, its
pending retry, whether it runs) — and writes again only the jobs whose definition or
state changed, or whose next run or next retry has come (the only way ``now`` shows in
a job's dict: its next run is the first fire after now, the same until that fire
passes). The body is byte for byte the one ``json.dumps`` writes of the whole list.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping

from crawlsched import render

if TYPE_CHECKING:
    from crawlsched.model import Job
    from crawlsched.state import JobState

TIME_FIELDS = ("next_run_iso", "next_retry_iso")  # the instants at which a job's dict changes by itself


@dataclass
class _Card:
    job: Job
    state: JobState | None
    built: float  # epoch: the ``now`` it was built for
    until: float  # epoch: the first instant it no longer holds (its next run or retry)
    text: str  # its JSON


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)  # as responses.reply writes a body


def valid_until(card: Mapping[str, Any]) -> float:
    """The first of a job dict's next run and next retry, epoch seconds (inf when neither)."""
    earliest = float("inf")
    for name in TIME_FIELDS:
        text = card.get(name)
        if text:
            try:
                at = datetime.fromisoformat(text).timestamp()
            except ValueError:
                continue
            earliest = min(earliest, at)
    return earliest


class JobCards:
    """Each job's JSON, kept per job id; ``body`` writes the list's answer from them."""

    def __init__(self, render_job: Callable[[Job, JobState | None, datetime], dict[str, Any]] = render.job_dict) -> None:
        self.render_job = render_job
        self._cards: dict[str, _Card] = {}
        self._lock = threading.Lock()
        self.built = 0  # jobs written afresh so far (for tests and the bench)

    def _card(self, job: Job, state: JobState | None, now: datetime, at: float) -> _Card:
        card = self._cards.get(job.id)
        if (card is not None and card.built <= at < card.until
                and (card.job is job or card.job == job) and card.state == state):
            card.job = job  # the next look compares by identity
            return card
        d = self.render_job(job, state, now)
        card = _Card(job, state, at, valid_until(d), _dumps(d))
        self._cards[job.id] = card
        self.built += 1
        return card

    def body(self, jobs: tuple[Job, ...] | list[Job], states: Mapping[str, JobState], now: datetime,
             extra: Mapping[str, Any]) -> tuple[str, float]:
        """(``{"success": true, "jobs": [...], **extra}`` as JSON, the first instant a card in it changes)."""
        at = now.timestamp()
        with self._lock:
            cards = [self._card(job, states.get(job.id), now, at) for job in jobs]
            if len(self._cards) > len(cards):  # jobs removed from the file: forget their cards
                current = {job.id for job in jobs}
                for job_id in [k for k in self._cards if k not in current]:
                    del self._cards[job_id]
        head = '{"success": true, "jobs": [' + ", ".join(card.text for card in cards) + "]"
        tail = ", " + _dumps(dict(extra))[1:] if extra else "}"
        return head + tail, min((card.until for card in cards), default=float("inf"))
