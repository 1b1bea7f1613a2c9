"""One attempt of one job, from its spec to its outcome: recorded and logged, its retry saved.

Shared by the daemon's executors and ``crawlsched run``: the same rows, the
same log lines, the same retry rule (SPEC §4, ``chains.next_retry``). The row
is written as ``running`` before the crawl starts and closed after it; the due
time of the next retry is saved in the same transaction that closes the
failed attempt, so a process killed at any moment leaves enough behind to
resume the chain without running an attempt twice. Whatever runs an
:class:`~crawlsched.executor.AttemptSpec` (a thread of the daemon, a worker
elsewhere) calls ``AttemptRunner.run`` with it and hands back the outcome.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from crawlsched import __version__, logs, procs, timing
from crawlsched.chains import next_retry
from crawlsched.crawl.runs import UNSCHEDULED_TRIGGERS, end_run, run_dir, run_log, run_name  # noqa: F401 - re-exported
from crawlsched.errors import ChainBusy
from crawlsched.executor import AttemptOutcome, AttemptSpec, OutcomeKind
from crawlsched.goaheads import Ahead
from crawlsched.model import Job, RunStatus, Trigger
from crawlsched.state import CLAIM_DAEMON, AttemptKey, Owner, Retry, State, StorageUnavailable


#: Environment variables never passed to a crawl command or an ``on_failure`` command.
#: ``CRAWLSCHED_TOKEN`` is the web API's bearer token: a crawl script (often someone
#: else's code) has no business holding it. URL jobs still read ``${VAR}`` from the
#: full environment. Extend this tuple for any other secret of crawlsched's own.
CHILD_ENV_DENYLIST = ("CRAWLSCHED_TOKEN",)


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` for a child process, without :data:`CHILD_ENV_DENYLIST`."""
    return {k: v for k, v in environ.items() if k not in CHILD_ENV_DENYLIST}


class AttemptRunner:
    """Runs attempts of jobs and records them in the state database."""

    def __init__(self, state: State, home: Path, log: logging.Logger, *,
                 clock: Callable[[], float] = time.time, environ: Mapping[str, str] | None = None,
                 persist_retries: bool = True, claim: str | None = None) -> None:
        self.state = state
        self.claim = claim  # the owner kind each attempt claims the job's chain as (state.CLAIM_*)
        self.home = Path(home)
        self.log = log
        self.clock = clock
        self.environ = environ
        self.persist_retries = persist_retries
        self.pid = os.getpid()
        self.ident = procs.identity(self.pid)
        self.owner = Owner(claim or CLAIM_DAEMON, self.pid, self.ident)  # whose lease each attempt runs under

    def run(self, spec: AttemptSpec, *, started_at: float | None = None, cancel: threading.Event | None = None,
            still_wanted: Callable[[], bool] = lambda: True, ahead: Ahead | None = None) -> AttemptOutcome:
        """The daemon's attempt: run and record it, unless another process runs the job (then
        it is recorded skipped). Never raises: a failure inside crawlsched is logged and comes
        back as ``CRASHED``. ``ahead``: handed out before its instant (crawlsched.goaheads.Ahead),
        it begins at the instant, its row written now."""
        started = started_at if started_at is not None else self.clock()
        try:
            try:
                other = self.state.running_elsewhere(spec.job_id, self.owner)
            except StorageUnavailable:
                other = None  # the attempt cannot start without its row: ``attempt`` holds the fire as missed
            busy = f"running in another process (pid {other.owner_pid})" if other is not None else None
            if busy is None:
                try:
                    return self.attempt(spec, cancel=cancel, still_wanted=still_wanted, started_at=started,
                                        ahead=ahead)
                except ChainBusy as exc:  # a `crawlsched run` of it holds its chain
                    busy = exc.claim.describe(spec.job.timezone)
            return self._skip_busy(spec, busy)
        except StorageUnavailable:  # not run and not recorded: the episode is logged once, by the state
            message = "the state database could not be written"
        except Exception as exc:
            self.log.exception("attempt %d of job %s failed inside crawlsched", spec.attempt, spec.job_id)
            message = f"internal error: {type(exc).__name__}"
        return AttemptOutcome(spec.job_id, spec.scheduled_for, spec.attempt, OutcomeKind.CRASHED, None, message)

    def _skip_busy(self, spec: AttemptSpec, busy: str) -> AttemptOutcome:
        """Another process runs this job (a `crawlsched run`): the fire, or the retry, is recorded skipped."""
        job, attempt = spec.job, spec.attempt
        self.state.record_not_run(job.id, spec.scheduled_for, RunStatus.SKIPPED.value,
                                  f"skipped: {busy} (runs of one job never overlap)", now=self.clock())
        self.log.warning("job %s: %s for %s skipped: %s", job.id, "fire" if attempt == 1 else f"attempt {attempt}",
                         timing.format_local(timing.from_epoch(spec.scheduled_for), job.timezone), busy)
        if attempt > 1:
            self.state.clear_retry(job.id)  # the chain ends here, failed: its saved retry goes too
            logs.log_final_failure(self.log, job.id, f"its retry was skipped: {busy}")
        return AttemptOutcome(job.id, spec.scheduled_for, attempt, OutcomeKind.BUSY, RunStatus.SKIPPED, busy)

    def attempt(self, spec: AttemptSpec, *, cancel: threading.Event | None = None,
                still_wanted: Callable[[], bool] = lambda: True, started_at: float | None = None,
                ahead: Ahead | None = None) -> AttemptOutcome:
        """Run attempt number ``spec.attempt`` (1-based) of the run scheduled for ``spec.scheduled_for``.

        ``started_at`` is when the attempt began in its worker, taken before any
        I/O (lateness is measured from it); now, when not given. ``still_wanted``
        is asked before a retry is saved; ``cancel`` set stops the crawl. ``ahead``:
        the attempt was handed out before its instant: its row is written now (its
        ``started_at`` the instant, corrected at its close to when it was let go), its
        command's group noted, and it begins when ``ahead`` lets it go.
        """
        job, scheduled_for, attempt, trigger = spec.job, spec.scheduled_for, spec.attempt, spec.trigger
        started = started_at if started_at is not None else self.clock()
        if ahead is not None:
            started = max(started, scheduled_for)
        try:
            run_id = self.state.start_attempt(
                job.id, scheduled_for, attempt, job.max_attempts, trigger=trigger, started_at=started, owner=self.owner,
                claim=self.claim is not None,
            )  # raises ChainBusy, writing nothing, when another live process holds the job's chain
        except StorageUnavailable:
            # Not run: without its row, a daemon killed now could not tell it ran.
            if attempt == 1 and trigger != Trigger.MANUAL and getattr(self.state, "outage_is_downtime", False):
                # A lost PostgreSQL state: no row now; the loop holds its fires and, once the database
                # is back, handles the stretch from this one on as downtime (missed rows, catch_up).
                return AttemptOutcome(job.id, scheduled_for, attempt, OutcomeKind.DEFERRED, None,
                                      "the state database could not be reached when it was due")
            # The fire is held as missed until the database takes writes (the episode is logged once).
            message = "missed: the state database could not be written when it was due"
            self.state.record_not_run(job.id, scheduled_for, RunStatus.MISSED.value, message, now=self.clock(),
                                      missed_count=1, first_missed=scheduled_for, last_missed=scheduled_for)
            return AttemptOutcome(job.id, scheduled_for, attempt, OutcomeKind.MISSED, RunStatus.MISSED, message)
        if run_id is None:
            fenced = getattr(self.state, "fires_fenced", None)
            if fenced is not None and fenced(started):
                self.log.warning("attempt %d of job %s for %s not started: refused: this daemon no longer leads"
                                 " (another daemon took over the state's leader lease)", attempt, job.id,
                                 timing.format_local(timing.from_epoch(scheduled_for), job.timezone))
                return AttemptOutcome(job.id, scheduled_for, attempt, OutcomeKind.DUPLICATE, None,
                                      "refused: this daemon no longer leads")
            self.log.warning("attempt %d of job %s for %s exists already; not running it twice",
                             attempt, job.id, timing.format_local(timing.from_epoch(scheduled_for), job.timezone))
            return AttemptOutcome(job.id, scheduled_for, attempt, OutcomeKind.DUPLICATE, None, "attempt exists already")
        # The row is addressed by what the attempt is, never by its number alone: a number
        # names another job's row once a corrupt file was replaced while this one ran.
        key: AttemptKey = run_id.key  # with the epoch of the chain's lease: a stale owner's writes are refused
        if ahead is None:
            return self.run_started(spec, key, cancel=cancel, still_wanted=still_wanted)
        if ahead.child is not None:  # stopped if we die before or while it runs (recovery, the next start)
            self.state.set_child(key, ahead.child.pgid, ahead.child.ident)
        began = ahead.begin()
        if began is None:
            return self.give_back(spec, key, "interrupted: the daemon stopped before its instant")
        return self.run_started(spec, key, cancel=cancel, still_wanted=still_wanted, prepared=ahead.child,
                                began=began if began != key.started_at else None)

    def prepare(self, spec: AttemptSpec, gates: Any = None) -> Any:
        """A command job's process spawned now and held at its gate (crawlsched.crawl.command.Prepared),
        for an attempt that waits for its instant; None for a URL job, or when it cannot start
        (the attempt then runs as any other, and says why). ``gates`` (crawlsched.goaheads.GoAheads):
        its gate is the one shared by the commands due at its instant."""
        job = spec.job
        if job.urls or not job.command:
            return None
        from crawlsched import crawl

        env = child_env(os.environ if self.environ is None else self.environ)
        env.update(self._command_env(job, spec.scheduled_for, spec.attempt))
        try:
            held = crawl.prepare_command(job.command, run_log(self.home, job, spec.scheduled_for, spec.attempt,
                                                              spec.trigger), env=env,
                                         gate=gates.gate(spec.scheduled_for) if gates is not None else None)
        except Exception:  # noqa: BLE001 - spawned at the instant instead
            return None
        return held if isinstance(held, crawl.Prepared) else None

    def run_started(self, spec: AttemptSpec, key: AttemptKey, *, cancel: threading.Event | None = None,
                    still_wanted: Callable[[], bool] = lambda: True, prepared: Any = None,
                    began: float | None = None) -> AttemptOutcome:
        """Run the attempt whose ``running`` row exists already under ``key`` (written by ``attempt``,
        or by the daemon and taken over by a worker), and close the row. ``prepared``: its command,
        spawned ahead (:meth:`prepare`), its group recorded and let go already; ``began``: when it
        was let go, the row's ``started_at`` at its close (a row written ahead of its instant)."""
        job, scheduled_for, attempt, trigger = spec.job, spec.scheduled_for, spec.attempt, spec.trigger
        logs.log_started(self.log, job.id, attempt - 1, job.max_retries)
        try:
            outcome = self._execute(job, scheduled_for, attempt, cancel, trigger, key, prepared=prepared)
        except BaseException:
            # Ctrl-C / SystemExit while the crawl ran (run_command has stopped its group):
            # close the row, so it does not stay `running` forever, then let it propagate.
            self._close_interrupted(job, key)
            raise
        return self._conclude(job, scheduled_for, attempt, key, outcome, trigger, still_wanted, spec.anchor,
                              **({} if began is None else {"began": began}))

    def give_back(self, spec: AttemptSpec, key: AttemptKey, message: str) -> AttemptOutcome:
        """An attempt whose row is ours and that never began (its worker stops before its instant):
        closed ``interrupted``, the next attempt due now when one is left, as after a shutdown."""
        from crawlsched.crawl import Outcome

        return self._conclude(spec.job, spec.scheduled_for, spec.attempt, key, Outcome(False, message, interrupted=True),
                              spec.trigger, lambda: True, spec.anchor)

    def _child_recorder(self, key: AttemptKey) -> Callable[[int], bool]:
        def record(pgid: int) -> bool:
            return self.state.set_child(key, pgid, procs.identity(pgid))

        return record

    def _close_interrupted(self, job: Job, key: AttemptKey) -> None:
        try:
            self.state.finish_attempt(key, status=RunStatus.INTERRUPTED.value, finished_at=self.clock(),
                                      message="interrupted")
            logs.log_failed(self.log, "interrupted", job.id)
            logs.log_final_failure(self.log, job.id, "interrupted")
        except Exception:  # noqa: BLE001 - the interruption is what must propagate
            self.log.exception("could not record the interrupted attempt of job %s", job.id)

    def _execute(self, job: Job, scheduled_for: float, attempt: int, cancel: threading.Event | None,
                 trigger: str = Trigger.SCHEDULE, key: AttemptKey | None = None, prepared: Any = None):
        from crawlsched import crawl

        environ = os.environ if self.environ is None else self.environ
        try:
            if prepared is not None:
                return prepared.run(timeout=job.timeout, cancel=cancel)
            if job.urls:
                return crawl.fetch_urls(
                    job.urls, run_dir(self.home, job, scheduled_for, trigger), headers=job.headers,
                    timeout=job.timeout, max_bytes=job.max_bytes, verify=job.verify,
                    user_agent=job.user_agent or f"crawlsched/{__version__}", env=dict(environ), cancel=cancel,
                    public_only=job.http_targets == "public",
                )
            env = child_env(environ)
            env.update(self._command_env(job, scheduled_for, attempt))
            return crawl.run_command(job.command or "", run_log(self.home, job, scheduled_for, attempt, trigger),
                                     env=env, timeout=job.timeout, cancel=cancel,
                                     on_spawn=None if key is None else self._child_recorder(key))
        except Exception as exc:  # a bug or an unexpected OS error must not lose the attempt
            self.log.exception("attempt of job %s crashed", job.id)
            return crawl.Outcome(ok=False, message=f"internal error: {type(exc).__name__}")

    @staticmethod
    def _command_env(job: Job, scheduled_for: float, attempt: int) -> dict[str, str]:
        return {
            "CRAWLSCHED_JOB_ID": job.id,
            "CRAWLSCHED_ATTEMPT": str(attempt),
            "CRAWLSCHED_MAX_ATTEMPTS": str(job.max_attempts),
            "CRAWLSCHED_SCHEDULED_FOR": timing.iso_local(timing.from_epoch(scheduled_for), job.timezone) or "",
        }

    def _conclude(self, job: Job, scheduled_for: float, attempt: int, key: AttemptKey, outcome, trigger: str,
                  still_wanted: Callable[[], bool], anchor: float | None = None,
                  began: float | None = None) -> AttemptOutcome:
        now = self.clock()
        fields = dict(http_status=outcome.http_status, exit_code=outcome.exit_code, bytes=outcome.bytes, output=outcome.output)
        if began is not None:
            fields["started_at"] = began
        if outcome.ok:
            self.state.finish_attempt(key, status=RunStatus.SUCCESS.value, finished_at=now, message=outcome.message, **fields)
            logs.log_success(self.log, job.id)
            end_run(self.home, job.id, scheduled_for, trigger)
            self._prune(job)
            return AttemptOutcome(job.id, scheduled_for, attempt, OutcomeKind.RAN, RunStatus.SUCCESS, outcome.message)

        if outcome.interrupted:
            # Stopped from outside: a shutdown resumes the chain at start-up with the next
            # attempt; a removed or paused job ends it here.
            retry = None
            if still_wanted() and attempt < job.max_attempts and self.persist_retries:
                retry = Retry(job.id, scheduled_for, attempt + 1, job.max_attempts, now, trigger)
            self.state.finish_attempt(key, status=RunStatus.INTERRUPTED.value, finished_at=now,
                                      message=outcome.message or "interrupted", retry=retry, **fields)
            logs.log_failed(self.log, outcome.message or "interrupted", job.id)
            if retry is None:
                logs.log_final_failure(self.log, job.id, outcome.message or "interrupted")
                end_run(self.home, job.id, scheduled_for, trigger)
            return AttemptOutcome(job.id, scheduled_for, attempt, OutcomeKind.RAN, RunStatus.INTERRUPTED, outcome.message,
                                  retry_due=retry.due_at if retry else None)

        due, reason = next_retry(job, scheduled_for, attempt, outcome, now, anchor)
        if due is not None and not still_wanted():
            due, reason = None, "job was removed or paused"
        message = outcome.message if not reason else f"{outcome.message} ({reason})"
        retry = Retry(job.id, scheduled_for, attempt + 1, job.max_attempts, due, trigger) if due is not None else None
        self.state.finish_attempt(key, status=RunStatus.FAILED.value, finished_at=now, message=message,
                                  retry=retry if self.persist_retries else None, **fields)
        logs.log_failed(self.log, outcome.message, job.id)
        if retry is not None:
            logs.log_retry_scheduled(self.log, attempt, due - now, job.id)
            return AttemptOutcome(job.id, scheduled_for, attempt, OutcomeKind.RAN, RunStatus.FAILED, message, retry_due=due)
        if attempt >= job.max_attempts:
            logs.log_max_retries(self.log, job.id)
        else:  # the chain ended early: still exactly one ERROR line per failed run
            early = outcome.message if reason in (None, "permanent failure, not retried") else f"{outcome.message}; {reason}"
            logs.log_final_failure(self.log, job.id, early)
        self.on_failure(job, scheduled_for, attempt, message, trigger)
        end_run(self.home, job.id, scheduled_for, trigger)
        self._prune(job)
        return AttemptOutcome(job.id, scheduled_for, attempt, OutcomeKind.RAN, RunStatus.FAILED, message)

    def on_failure(self, job: Job, scheduled_for: float, attempt: int, message: str, trigger: str = Trigger.SCHEDULE) -> None:
        """Run the job's ``on_failure`` command once after the final failed attempt (no shell)."""
        if not job.on_failure:
            return
        from crawlsched.crawl import run_command

        env = child_env(os.environ if self.environ is None else self.environ)
        env.update(self._command_env(job, scheduled_for, attempt))
        env["CRAWLSCHED_MESSAGE"] = message
        log_path = run_log(self.home, job, scheduled_for, attempt, trigger)
        path = log_path.with_name(log_path.stem + "-on_failure.log")
        result = run_command(job.on_failure, path, env=env, timeout=60)
        if not result.ok:
            self.log.warning("on_failure command of job %s failed: %s", job.id, result.message)

    def _prune(self, job: Job) -> None:
        from crawlsched.crawl import prune_runs

        try:
            if job.urls:
                prune_runs(self.home / "data" / job.id, job.keep_runs)
            else:
                prune_runs(self.home / "logs" / "runs" / job.id, job.keep_runs)
        except OSError as exc:
            self.log.warning("could not prune old runs of job %s: %s", job.id, exc)


__all__ = ["CHILD_ENV_DENYLIST", "AttemptRunner", "child_env", "end_run", "run_dir", "run_log", "run_name"]
