"""Reading the history: which job a reference names, the filters of ``history``, and its rates.

Shared by ``history``, ``logs`` and the web API's runs route; the CLI only parses
options and prints. Pure except for the state queries it is handed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Iterable

from crawlsched.errors import InvalidValue, JobNotFound
from crawlsched.model import RunStatus, zone
from crawlsched.durations import parse_every
from crawlsched.render import ATTEMPT_OUTCOMES

if TYPE_CHECKING:
    from crawlsched.model import Job, JobFile
    from crawlsched.state import Run, State

RUN_STATUSES = tuple(s.value for s in RunStatus)
_RELATIVE = re.compile(r"^\s*(\d+[smhd])+\s*$")


@dataclass(frozen=True)
class Target:
    """The job a reference names: its id, and the current job when it is still in the file."""

    job_id: str
    job: Job | None


def resolve(jobfile: JobFile, state: State | None, ref: str) -> Target:
    """An id wins over a name (SPEC §5, ``history`` and ``logs``).

    A current job's id; else the id of a removed job the history knows, even when
    a current job now carries that text as its name; else a current job's exact
    name. Nothing matches: ``JobNotFound`` (exit 1).
    """
    by_id = next((j for j in jobfile.jobs if j.id == ref), None)
    if by_id is not None:
        return Target(by_id.id, by_id)
    if state is not None and state.known_id(ref):
        return Target(ref, None)  # removed from the file; its history stays
    by_name = next((j for j in jobfile.jobs if j.name == ref), None)
    if by_name is not None:
        return Target(by_name.id, by_name)
    raise JobNotFound(ref)


def parse_since(text: str, now: datetime, machine_tz: str) -> datetime:
    """``--since``: a span back from ``now`` (``24h``, ``7d``, ``1h30m``), or an ISO date or
    date-time (a date is its midnight; no offset means the machine's zone)."""
    value = text.strip()
    if _RELATIVE.match(value):
        return now - timedelta(seconds=parse_every(value, "--since"))
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidValue("--since", text, "is not a time: give a span back from now (24h, 7d, 1h30m) "
                                            "or an ISO date or date-time (2026-12-01, 2026-12-01T09:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone(machine_tz))
    return parsed


def parse_statuses(text: str) -> tuple[str, ...]:
    """``--status``: one run status, or several separated by commas (``failed,interrupted``)."""
    wanted = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [s for s in wanted if s not in RUN_STATUSES]
    if bad or not wanted:
        raise InvalidValue("--status", text, f"is not a run status (one of {', '.join(RUN_STATUSES)}, "
                                             "or several separated by commas)")
    return wanted


@dataclass(frozen=True)
class Rates:
    """``success_rate`` over the attempts listed; ``run_success_rate`` over the runs they belong to."""

    attempts: int  #: finished attempts listed
    attempts_ok: int
    runs: int  #: runs with an attempt listed whose chain has ended
    runs_ok: int

    @property
    def success_rate(self) -> float | None:
        return self.attempts_ok / self.attempts if self.attempts else None

    @property
    def run_success_rate(self) -> float | None:
        return self.runs_ok / self.runs if self.runs else None


def rates(runs: Iterable[Run], state: State | None) -> Rates:
    """SPEC §5. A run (a fire: job and scheduled time) counts once its chain has ended,
    judged by all of its attempts, also those a ``--limit``, ``--since`` or ``--status``
    left out of the list: a run whose later attempt succeeded is a success even when
    only its failed first attempt is listed. Skipped and missed fires count in neither."""
    attempts = [r for r in runs if r.attempt > 0]
    finished = [r for r in attempts if r.status in ATTEMPT_OUTCOMES]
    keys = list({(r.job_id, r.scheduled_for) for r in attempts})
    outcomes = state.chain_outcomes(keys) if state is not None and keys else {}
    ended = [o for o in outcomes.values() if o != "open"]
    return Rates(len(finished), sum(1 for r in finished if r.status == RunStatus.SUCCESS),
                 len(ended), ended.count(RunStatus.SUCCESS))
