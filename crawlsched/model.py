"""Jobs, defaults and the words for their states: dataclasses and enums, no I/O.

The types only; building them from a job file's tables, with a message that names
the field, the value and what is allowed, is ``crawlsched.validate`` (and the
modules it uses: ``durations``, ``schedules``, ``urls``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from crawlsched.durations import MAX_SECONDS, parse_every

MIB = 1024 * 1024
# SPEC §7: bounds the whole program can hold (those of seconds and whole numbers are in
# ``durations``). 9999-12-30 leaves a day for a window's end (end_date + 1 day) and for
# any zone's offset before datetime runs out.
MIN_DATE = date(1900, 1, 1)
MAX_DATE = date(9999, 12, 30)

# cron's macros (Vixie cron, cronie): what each means as five fields. @reboot is no schedule.
CRON_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}  # fmt: skip
RANGE_STEP_RE = re.compile(r"(\d+)-(\d+)/\d+")


class ScheduleKind(str, enum.Enum):
    """How a job's fire times are given: exactly one per job."""

    AT = "at"  #: every day at HH:MM in the job's zone (the cron ``M H * * *``)
    CRON = "cron"  #: a five-field cron expression, Vixie semantics
    EVERY = "every"  #: a fixed interval from an anchor (SPEC §3)


class CatchUp(str, enum.Enum):
    """What the daemon does with fires it missed while it was down (SPEC §4)."""

    LATEST = "latest"  #: run the newest missed fire once, if it is within 24 h
    NONE = "none"  #: run none; they are recorded as missed
    ALL = "all"  #: run each missed fire, oldest first (at most the newest 100)


class RunStatus(str, enum.Enum):
    """The status of one row in the history: an attempt, or a fire that did not run."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"  #: fired while the job was still running or retrying
    MISSED = "missed"  #: due while the daemon was down
    INTERRUPTED = "interrupted"  #: the process running it stopped before it ended


class Trigger(enum.StrEnum):
    """What started a run (its first attempt); stored by value in the history (SPEC §5).

    A ``StrEnum``: it formats as its value, so it can name a run's folder (``…-manual``)."""

    SCHEDULE = "schedule"  #: the job's own schedule
    CATCH_UP = "catch_up"  #: a fire missed while the daemon was down, run on start (``catch_up = "all"``)
    MANUAL = "manual"  #: run-now, handed to the daemon
    RUN = "run"  #: ``crawlsched run JOB`` in the foreground

    @property
    def scheduled(self) -> bool:
        """Whether the run stands for a fire of the schedule (run-now and ``run`` do not)."""
        return self in (Trigger.SCHEDULE, Trigger.CATCH_UP)


class JobStatus(str, enum.Enum):
    """A job's status as shown to people; the first that applies wins (SPEC §5)."""

    PAUSED = "paused"
    FINISHED = "finished"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCESS = "success"
    FAILED = "failed"
    ACTIVE = "active"


JOB_KEYS = (
    "id", "name", "at", "cron", "every", "start_date", "end_date", "url", "command",
    "max_retries", "retry_delay", "retry_backoff", "retry_max_delay", "timezone",
    "timeout", "headers", "catch_up", "on_failure", "max_bytes", "verify",
    "user_agent", "keep_runs", "paused", "created_at",
)  # fmt: skip
EXECUTORS = ("local", "workers")
DEFAULT_KEYS = (
    "max_retries", "retry_delay", "retry_backoff", "retry_max_delay", "timezone",
    "max_concurrent", "catch_up", "url", "command", "timeout", "headers",
    "on_failure", "max_bytes", "verify", "user_agent", "keep_runs",
    "allow_http_commands", "grace_period", "allow_http_env", "http_targets", "keep_history", "keep_logs", "paused",
    "state", "executor",
)  # fmt: skip


@dataclass(frozen=True)
class Defaults:
    """The ``[defaults]`` table: values every job inherits unless it sets its own."""

    max_retries: int = 3
    retry_delay: float = 300
    retry_backoff: float = 1.0
    retry_max_delay: float | None = None
    timezone: str | None = None
    max_concurrent: int = 8
    catch_up: CatchUp = CatchUp.LATEST
    url: tuple[str, ...] = ()
    command: str | None = None
    timeout: float = 300
    headers: Mapping[str, str] = field(default_factory=dict)
    on_failure: str | None = None
    max_bytes: int = 100 * MIB
    verify: bool | str = True
    user_agent: str | None = None
    keep_runs: int = 30
    allow_http_commands: bool = False
    grace_period: float = 30
    allow_http_env: tuple[str, ...] = ()  # ${NAME}s a URL or header sent through the HTTP API may use
    http_targets: str = "any"  # "public": no crawl reaches a private, loopback or link-local address
    keep_history: KeepHistory = field(default_factory=lambda: KeepHistory(days=365))
    keep_logs: int = 30  # days of daily log files
    paused: bool = False  #: the scheduler's own switch (legacy stop/start): no job fires; jobs keep their own ``paused``
    state: str | None = None  #: a PostgreSQL DSN as written (``${VAR}`` unexpanded); None: the home's SQLite file
    executor: str = "local"  #: "local" (this daemon's threads) or "workers" (``crawlsched worker`` processes)


@dataclass(frozen=True)
class KeepHistory:
    """``[defaults] keep_history``: history rows kept for ``days``, or the newest ``runs`` rows; neither: forever."""

    days: int | None = None
    runs: int | None = None

    def __str__(self) -> str:
        if self.days is not None:
            return f"{self.days}d"
        return f"{self.runs} runs" if self.runs is not None else "forever"


@dataclass(frozen=True)
class Job:
    """One job with its defaults already applied. ``explicit`` names the keys its table sets."""

    id: str
    name: str
    kind: ScheduleKind
    spec: str  # "09:05", "0 10 * * 1" or "15m": as written
    timezone: str
    start_date: date | None = None
    end_date: date | None = None
    urls: tuple[str, ...] = ()
    command: str | None = None
    max_retries: int = 3
    retry_delay: float = 300
    retry_backoff: float = 1.0
    retry_max_delay: float | None = None
    timeout: float = 300
    headers: Mapping[str, str] = field(default_factory=dict)
    catch_up: CatchUp = CatchUp.LATEST
    on_failure: str | None = None
    max_bytes: int = 100 * MIB
    verify: bool | str = True
    user_agent: str | None = None
    keep_runs: int = 30
    paused: bool = False
    created_at: datetime | None = None
    http_targets: str = "any"  # from [defaults]: "public" = only public addresses are fetched
    explicit: frozenset[str] = field(default=frozenset(), compare=False)
    line: int | None = field(default=None, compare=False)  # its [[jobs]] header in the file

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    @property
    def cron(self) -> str | None:
        """The cron expression behind an ``at`` or ``cron`` job: one code path for both."""
        if self.kind is ScheduleKind.AT:
            hour, minute = self.spec.split(":")
            return f"{int(minute)} {int(hour)} * * *"
        if self.kind is ScheduleKind.CRON:
            return vixie_cron(self.spec)
        return None

    @property
    def every_seconds(self) -> float | None:
        return parse_every(self.spec) if self.kind is ScheduleKind.EVERY else None

    @property
    def schedule_text(self) -> str:
        """What ``list`` and the API show: "09:05", "0 10 * * 1" or "every 15m"."""
        return f"every {self.spec}" if self.kind is ScheduleKind.EVERY else self.spec

    @property
    def max_attempts(self) -> int:
        return 1 + self.max_retries

    def retry_wait(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the second attempt), at most ten years.

        1000 retries × a backoff of 100 is no float (100^999): the power is taken
        only while it can still matter.
        """
        wait = self.retry_delay
        if self.retry_backoff != 1 and wait > 0:
            try:
                wait *= self.retry_backoff ** (retry_number - 1)
            except OverflowError:
                wait = float(MAX_SECONDS)
        if self.retry_max_delay is not None:
            wait = min(wait, self.retry_max_delay)
        return min(wait, float(MAX_SECONDS))


@dataclass(frozen=True)
class JobFile:
    """A parsed, validated job file."""

    defaults: Defaults
    jobs: tuple[Job, ...]
    raw_defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def find(self, ref: str) -> Job | None:
        """The job whose id is ``ref``, else whose exact name is ``ref``."""
        for job in self.jobs:
            if job.id == ref:
                return job
        for job in self.jobs:
            if job.name == ref:
                return job
        return None


# --- what a job's spec means: used by its properties, so here and not in validate ---


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """A ZoneInfo, cached: building one reads a file."""
    return ZoneInfo(name)


@lru_cache(maxsize=4096)
def vixie_cron(expr: str) -> str:
    """``expr`` with each one-value range that has a step (``3-3/2``) written as that value (``3``).

    Vixie cron reads ``3-3/2`` as just 3; cronsim reads a range of one value
    with a step as ``3/2`` (3 to the end of the field, every second one), so a
    month field ``3-3/2`` would fire in May too. The file keeps the text as written.
    A macro (``@daily``) becomes its five fields.
    """
    if expr in CRON_MACROS:
        return CRON_MACROS[expr]
    fields = []
    for part in expr.split():
        terms = []
        for term in part.split(","):
            match = RANGE_STEP_RE.fullmatch(term)
            terms.append(match[1] if match and int(match[1]) == int(match[2]) else term)
        fields.append(",".join(terms))
    return " ".join(fields)
