"""What the state store hands out: plain dataclasses, never rows or connections.

Times are epoch seconds (UTC). Ownership is an :class:`Owner` holding a
:class:`Lease` with a fencing ``epoch``: a lease is live until it ends (renewed
by the owner's heartbeat) or its holder is known to be gone; each new claim of
a job's chain takes a higher epoch, and a write carrying a lower one than the
job's current claim is refused (:attr:`Saved.FENCED`).
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

CLAIM_DAEMON, CLAIM_RUN = "daemon", "run"  # owner kinds: the daemon's chains, a `crawlsched run`
LEASE_SECONDS = 90.0  # a lease's length: three daemon heartbeats (each renews it)
LEADER, STANDBY = "leader", "standby"  # a daemon's role among those sharing a state
LEADER_TTL = 10.0  # the leader lease's length (SPEC §10: a dead or frozen leader is replaced within 15 s)

RUN_COLUMNS = (
    "id", "job_id", "scheduled_for", "attempt", "max_attempts", "trigger", "status",
    "started_at", "finished_at", "message", "http_status", "exit_code", "bytes",
    "output", "owner_pid", "missed_count", "first_missed", "last_missed",
    "owner_ident", "child_pgid", "child_ident", "epoch", "owner_host", "queue_job", "run_home",
)  # fmt: skip


class _Fields:
    """``record["name"]`` and ``record.get("name")`` for callers written against the old dict rows."""

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


class Saved(enum.Enum):
    """What became of a write: it landed, it is held for the storage, or it was refused (stale epoch)."""

    SAVED = "saved"
    HELD = "held"
    FENCED = "fenced"

    def __bool__(self) -> bool:  # "landed now", as the write methods' bool always said
        return self is Saved.SAVED


@dataclass(frozen=True)
class Owner:
    """Who holds a chain or runs an attempt. ``pid``/``ident`` (crawlsched.procs) and ``host`` let a
    store on one host tell that the holder is gone; the contract itself is the lease."""

    kind: str  # CLAIM_DAEMON, CLAIM_RUN (a worker, later)
    pid: int | None = None
    ident: str | None = None
    host: str = field(default_factory=socket.gethostname)

    @property
    def id(self) -> str:
        return f"{self.kind}@{self.host}/{self.pid}/{self.ident or ''}"


@dataclass(frozen=True)
class Lease:
    """A held claim on a job's chain: ``epoch`` fences the holder's writes once another claims it."""

    job_id: str
    owner: Owner
    epoch: int
    until: float


@dataclass(frozen=True)
class Run:
    """One row of history: an attempt, or a fire that was skipped or missed (attempt 0)."""

    id: int
    job_id: str
    scheduled_for: float
    attempt: int
    max_attempts: int
    trigger: str
    status: str
    started_at: float | None = None
    finished_at: float | None = None
    message: str | None = None
    http_status: int | None = None
    exit_code: int | None = None
    bytes: int | None = None
    output: str | None = None
    owner_pid: int | None = None
    missed_count: int | None = None
    first_missed: float | None = None
    last_missed: float | None = None
    owner_ident: str | None = None  #: the owner process's identity (crawlsched.procs)
    child_pgid: int | None = None  #: a command's process group, while it may run
    child_ident: str | None = None  #: that group leader's identity
    epoch: int | None = None  #: the chain lease's epoch it was started under (None: unfenced)
    owner_host: str | None = None  #: the host of the process that runs (or ran) it
    queue_job: int | None = None  #: executor = "workers": the queue job that carried it
    run_home: str | None = None  #: the home its bodies and run logs went to, when not the daemon's (a worker's)


@dataclass(frozen=True)
class AttemptKey:
    """An attempt by what it is: no other attempt, in this database or a fresh one, has the same key.

    Closing an attempt by its key finds its row whatever number the row has, and writes the
    row again when it is missing (the file was replaced while the attempt ran). ``epoch`` is
    the lease it runs under: a write with it is refused once another owner claimed the chain.
    """

    job_id: str
    scheduled_for: float
    attempt: int
    max_attempts: int
    trigger: str
    started_at: float
    owner_pid: int | None = None
    owner_ident: str | None = None
    epoch: int | None = None

    @classmethod
    def of(cls, run: Run, *, fenced: bool = False) -> AttemptKey:
        """The key of a row read back. Unfenced by default: settling a row whose owner is gone
        (recovery) must close it whoever holds the chain now; ``fenced`` keeps the row's epoch."""
        return cls(run.job_id, run.scheduled_for, run.attempt, run.max_attempts, run.trigger,
                   run.started_at or 0.0, run.owner_pid, run.owner_ident, run.epoch if fenced else None)


class AttemptId(int):
    """What ``start_attempt`` returns: the new row's id, carrying the attempt's ``key`` (with its epoch)."""

    key: AttemptKey

    def __new__(cls, run_id: int, key: AttemptKey) -> AttemptId:
        self = super().__new__(cls, run_id)
        self.key = key
        return self


@dataclass(frozen=True)
class Retry:
    job_id: str
    scheduled_for: float
    next_attempt: int
    max_attempts: int
    due_at: float
    trigger: str


@dataclass(frozen=True)
class Claim:
    """A live hold on a job's chain; ``retry`` is the daemon's pending retry, when it waits for one."""

    job_id: str
    owner: str  # CLAIM_DAEMON or CLAIM_RUN
    owner_pid: int
    owner_ident: str | None
    claimed_at: float
    retry: Retry | None = None
    epoch: int = 0
    lease_until: float | None = None
    owner_host: str | None = None

    def describe(self, tz: str = "UTC") -> str:
        """Why the job is busy, for a person: who holds it and what it does."""
        elsewhere = self.owner_host and self.owner_host != socket.gethostname()
        where = " ".join(filter(None, (f"pid {self.owner_pid}" if self.owner_pid else "",
                                       f"on {self.owner_host}" if elsewhere else "")))
        who = ("`crawlsched run`" if self.owner == CLAIM_RUN else "the daemon") + (f" ({where})" if where else "")
        if self.owner == CLAIM_RUN:
            return f"{who} is running it"
        if self.retry is not None:
            from crawlsched import timing

            when = timing.format_local(timing.from_epoch(self.retry.due_at), tz)
            return (f"{who} is waiting to retry it"
                    f" (attempt {self.retry.next_attempt}/{self.retry.max_attempts} at {when})")
        return f"{who} is running it"


@dataclass(frozen=True)
class JobState:
    """What the history says of one job, for its status in ``list`` and ``show``."""

    job_id: str
    first_seen: float | None = None
    anchor: float | None = None
    last_fire: float | None = None
    last_attempt: Run | None = None
    retry: Retry | None = None
    running: bool = False


@dataclass(frozen=True)
class JobSeen(_Fields):
    """An id the history has seen (ids are never reused) and what the loop keeps per job."""

    job_id: str
    first_seen: float
    daemon_seen: float | None = None  #: first seen by the daemon: nothing before it counts as missed
    anchor: float | None = None  #: an ``every`` job's first fire
    last_fire: float | None = None  #: newest scheduled time handled (run, skipped or missed)
    last_attempt_id: int | None = None


@dataclass(frozen=True)
class DaemonInfo(_Fields):
    """The daemon's row: who runs, since when, its heartbeat and what it says is next."""

    pid: int | None = None
    host: str | None = None
    version: str | None = None
    started_at: float | None = None
    ready_at: float | None = None
    heartbeat: float | None = None
    stopped_at: float | None = None
    config_ok: int | None = None
    config_error: str | None = None
    next_job: str | None = None
    next_due: float | None = None
    http: str | None = None
    handled_until: float | None = None  #: every fire due before it has a row (or a saved retry)


DAEMON_FIELDS = tuple(f.name for f in fields(DaemonInfo))


@dataclass(frozen=True)
class DaemonEntry(_Fields):
    """One daemon of those sharing a state (SPEC §10): its process, its heartbeat, its role."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat: float
    role: str  #: ``leader`` (it fires) or ``standby``
    jobs_digest: str | None = None  #: sha256 of the job file it applied (daemons that differ are shown)
    home: str | None = None
    stopped_at: float | None = None


@dataclass(frozen=True)
class WorkerEntry(_Fields):
    """One ``crawlsched worker`` process (its row in ``workers``)."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat: float
    concurrency: int | None = None


class Leadership(NamedTuple):
    """What an election gave a daemon: its role and the leader lease's epoch (fires carry it)."""

    role: str  #: ``leader`` or ``standby``
    epoch: int  #: the lease's epoch now (the leader's own when ``role`` is leader)

    @property
    def leading(self) -> bool:
        return self.role == LEADER


class RunRequest(NamedTuple):
    """A run-now hand-over (``run-now`` with the daemon up, the API's run)."""

    id: int
    job_id: str
    requested_at: float


class FireMark(NamedTuple):
    """A row of a scheduled fire: its time, or (missed) the stretch it stands for."""

    job_id: str
    scheduled_for: float
    status: str
    first_missed: float | None
    last_missed: float | None


class StripRow(NamedTuple):
    """The columns of a row a card's strip needs (a ``Run`` has them under the same names)."""

    id: int
    job_id: str
    scheduled_for: float
    attempt: int
    max_attempts: int
    status: str
    started_at: float | None
    finished_at: float | None
    message: str | None
