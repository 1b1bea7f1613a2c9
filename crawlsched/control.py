"""What the CLI and the web API share: daemon liveness, the run-now hand-over and its messages,
and the jobs to show while the job file is broken.

Both front ends call these, so ``crawlsched run-now`` and ``POST /api/scheduler/run-now``
refuse a busy job with the same words, and ``list`` and ``GET /api/scheduler/jobs``
agree on what a broken file means. Nothing here imports the daemon, rich or requests:
``crawlsched list`` pays for none of them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, runtime_checkable

from crawlsched.errors import JobBusy, JobFileError

if TYPE_CHECKING:
    from crawlsched.model import Defaults, Job, JobFile
    from crawlsched.state import JobState, State
    from crawlsched.store import JobStore

LOCK_FILE = ".crawlsched-daemon.lock"  # in the home: the daemon holds it (flock) and writes its pid there
DAEMON_FRESH = 90.0  # seconds (three heartbeats of 30 s): a daemon whose heartbeat is older is not up, or stuck

# The words the CLI and the API both say.
HANDED_OVER = "▶️ Job '{name}' handed over to the daemon"
QUEUED = "Job '{name}' queued; the daemon has not taken it within {wait:g} s and runs it as soon as it can"
UPDATED = "✅ Job '{name}' updated"
DELETED = "🗑️ Job '{name}' deleted"
PAUSED = "⏸️ Job '{name}' paused"
RESUMED = "▶️ Job '{name}' resumed"
RETRY_CONFIG_UPDATED = "✅ Retry config updated"


def lock_path(home: Path) -> Path:
    """The home's daemon lock file."""
    return Path(home) / LOCK_FILE


# --- what the web knows of the scheduler ------------------------------------------------------


@runtime_checkable
class SchedulerView(Protocol):
    """The scheduler as the web API sees it: facts to read, and two things it may ask for.

    The web is given a job store, a state store and one of these, never the loop itself:
    none of the values it returns is the loop's own to change (``jobs`` is replaced, never
    changed, on a reload; ``next_fires`` is a copy). The daemon provides one
    (``crawlsched.daemon.DaemonView``); a test may give its own.
    """

    def clock(self) -> float:
        """The scheduler's wall clock (epoch seconds): what ``now`` is for the times shown."""

    def monotonic(self) -> float:
        """Its monotonic clock (for reusing a recent answer)."""

    @property
    def started(self) -> bool:
        """The loop has started (recovered, loaded its jobs, planned)."""

    @property
    def stopping(self) -> bool:
        """The loop is stopping (SIGTERM): it fires nothing more."""

    @property
    def config_error(self) -> str | None:
        """Why the job file as it is now is not applied (it runs its last good one), else None."""

    @property
    def jobs(self) -> Mapping[str, Job]:
        """The jobs the loop runs (its last good file), by id; a new mapping after each reload."""

    @property
    def defaults(self) -> Defaults | None:
        """The ``[defaults]`` the loop runs with (None before its first load)."""

    @property
    def pool_size(self) -> int:
        """Attempts that can run at once."""

    def next_fires(self) -> dict[str, float]:
        """Each planned job's next scheduled fire (epoch seconds), a copy."""

    def is_busy(self, job_id: str) -> bool:
        """The loop has a chain of this job (running, handed to a worker, or waiting for its retry)."""

    def request_reload(self) -> None:
        """Ask the loop to read the job file now (a write just changed it)."""

    def request_wake(self) -> None:
        """Ask the loop to look at its run-now requests now."""


# --- is a daemon up? ------------------------------------------------------------------------


def live_daemon(state: State | None, now: float, home: Path) -> dict[str, Any] | None:
    """The daemon's row when one is up, else None. The one check behind status, stop, run-now
    and the broken-file fallback.

    Up means all of: the row says it runs on this machine (``host`` is
    ``socket.gethostname()``), its pid is alive, its heartbeat is fresh
    (< ``DAEMON_FRESH``), and the home's lock file ``LOCK_FILE`` is held
    (a shared non-blocking flock fails) by that same pid (the daemon writes
    its pid there). A recycled pid, a row from another host sharing the home,
    or a daemon killed with SIGKILL is never signalled.
    """
    import socket

    from crawlsched.procs import pid_alive

    row = state.daemon() if state is not None else None
    if not row or row.get("stopped_at") is not None or not pid_alive(row.get("pid")):
        return _standby_here(state, now, home)
    if row.get("heartbeat") is None or now - row["heartbeat"] > DAEMON_FRESH:
        return _standby_here(state, now, home)
    if row.get("host") != socket.gethostname():
        return _standby_here(state, now, home)
    if lock_holder(home) != int(row["pid"]):
        return _standby_here(state, now, home)
    return row


def _standby_here(state: State | None, now: float, home: Path) -> dict[str, Any] | None:
    """On a shared state the daemon's row is the leader's: this home's daemon may be another
    one (a standby, or a leader on another host): its own row in ``daemons``, held to the same checks."""
    import socket

    from crawlsched.procs import pid_alive

    if state is None or not getattr(state, "shared", False):
        return None
    holder = lock_holder(home)
    if holder is None or not pid_alive(holder):
        return None
    for d in state.daemons():
        if (d.host == socket.gethostname() and d.pid == holder and d.stopped_at is None
                and now - d.heartbeat <= DAEMON_FRESH):
            return {"pid": d.pid, "host": d.host, "started_at": d.started_at, "heartbeat": d.heartbeat, "role": d.role}
    return None


def live_leader(state: State | None, now: float) -> dict[str, Any] | None:
    """On a shared state, the leading daemon when it is up (on any host), as ``_standby_here``
    gives a row: it takes run-now requests from any home (SPEC §10). None on SQLite, or when no
    leader's heartbeat is fresh (or, on this host, its process is gone)."""
    import socket

    from crawlsched.procs import pid_alive

    if state is None or not getattr(state, "shared", False):
        return None
    for d in state.daemons():
        if d.role != "leader" or d.stopped_at is not None or now - d.heartbeat > DAEMON_FRESH:
            continue
        if d.host == socket.gethostname() and not pid_alive(d.pid):
            continue
        return {"pid": d.pid, "host": d.host, "started_at": d.started_at, "heartbeat": d.heartbeat, "role": d.role}
    return None


def lock_holder(home: Path) -> int | None:
    """The pid in the home's ``LOCK_FILE`` while a daemon holds that lock, else None."""
    import fcntl

    try:
        fd = os.open(lock_path(home), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)  # we got it: nobody holds it, no daemon
        return None
    finally:
        os.close(fd)


# --- run-now ----------------------------------------------------------------------------------


def busy_reason(job: Job, js: JobState | None, *, chain_active: bool = False) -> str | None:
    """Why a run-now of ``job`` would start nothing: its chain runs or waits for a retry; else None.

    ``js`` is what the history says (an attempt row whose process is alive, a saved
    retry: true across processes); ``chain_active`` is the daemon's own knowledge when the
    caller lives in it (a fire handed to the pool whose attempt row is not written yet).
    """
    from crawlsched import timing

    never = "nothing was queued (runs of one job never overlap)"
    if js is not None and js.running:
        last = js.last_attempt
        if last is not None and last.status == "running" and last.started_at > time.time():
            # Handed out ahead of its instant (crawlsched.local_executor.LEAD): its row is written, it begins then.
            at = timing.format_local(timing.from_epoch(last.started_at), job.timezone)
            return f"job {job.id} starts at its scheduled time {at} (attempt {last.attempt}/{last.max_attempts}); {never}"
        if last is not None and last.status == "running":
            since = timing.format_local(timing.from_epoch(last.started_at), job.timezone)
            return f"job {job.id} is running (attempt {last.attempt}/{last.max_attempts}, since {since}); {never}"
        return f"job {job.id} is running; {never}"
    if js is not None and js.retry is not None:
        retry = js.retry
        due = timing.format_local(timing.from_epoch(retry.due_at), job.timezone)
        return (f"job {job.id} is waiting for its retry (attempt {retry.next_attempt}/{retry.max_attempts} "
                f"at {due}); {never}")
    if chain_active:
        return f"job {job.id} is running; {never}"
    return None


def refuse_if_busy(state: State | None, job: Job, *, chain_active: bool = False) -> None:
    """Raise ``JobBusy`` (CLI exit 1, HTTP 409) when the job is running or waiting for a retry,
    in the daemon or in a `crawlsched run` (whose chain, retry waits included, holds a claim)."""
    from crawlsched.state import CLAIM_RUN

    js = state.job_states([job.id]).get(job.id) if state is not None else None
    reason = busy_reason(job, js, chain_active=chain_active)
    if reason is None and state is not None:
        claim = state.claim(job.id)
        if claim is not None and claim.owner == CLAIM_RUN:
            reason = f"job {job.id} is busy: {claim.describe(job.timezone)}; nothing was queued (runs of one job never overlap)"
    if reason is not None:
        raise JobBusy(reason)


def hand_over(state: State, job: Job, *, wake: Callable[[], None], wait: float, source: str,
              poll: float = 0.05) -> tuple[bool, str]:
    """Leave a run-now request for the daemon, wake it, wait up to ``wait`` s for it to take it.

    Returns (taken, message). A request not taken in time stays queued: the daemon
    takes it when it can (sending another would fire twice).
    """
    request_id = state.request_run(job.id, time.time(), source=source)
    wake()
    deadline = time.monotonic() + wait
    taken = state.request_taken(request_id)
    while not taken and time.monotonic() < deadline:
        time.sleep(poll)
        taken = state.request_taken(request_id)
    message = HANDED_OVER.format(name=job.name) if taken else QUEUED.format(name=job.name, wait=wait)
    return taken, message


# --- a broken job file ------------------------------------------------------------------------


def jobs_to_show(store: JobStore, state: State | None, home: Path, now: float) -> tuple[JobFile, str | None]:
    """The job file to show, and the file's error when it is broken (SPEC §5).

    A good file is itself (error None). A broken one, while a daemon is confirmed up,
    is the daemon's last good copy (``<home>/.cache``), with the file's error; with no
    daemon up, or no copy, the ``JobFileError`` is raised as before.
    """
    try:
        return store.load(), None
    except JobFileError as exc:
        if live_daemon(state, now, home) is None:
            raise
        copy = store.load_last_good(home)
        if copy is None:
            raise
        return copy, str(exc)


def showing_last_good(error: str, count: int) -> str:
    """The line on stderr (and in the page's banner) while the last good jobs are shown."""
    return (f"{error} (the file is not applied; showing the {count} job{'s' if count != 1 else ''} "
            "the daemon is running, from the last good file)")
