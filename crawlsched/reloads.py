"""When the daemon applies its job file again, and what it keeps while the file is bad (SPEC §7).

A changed file is applied once it stopped changing for ``STABLE_FOR``
seconds (an editor's half-written save never wipes jobs). A broken, missing
or empty file is not applied: the last good jobs and their retries stay, the
error is shown (``status``, ``systemctl status``, ``/healthz``) and logged
once per file version. The bytes of each applied file are kept in
``<home>/.cache`` so ``list``, ``show`` and ``history`` show the jobs the
daemon runs while the file is broken. ``Reloading`` is the daemon's side (mixed into
``crawlsched.daemon.Daemon``): a file ``Reloads`` hands it is applied, the attempts of jobs
removed or paused are cancelled, those queued ahead for them recalled.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from crawlsched.cluster import digest
from crawlsched.errors import CrawlschedError, JobFileError
from crawlsched.memory import collector_paused, settle
from crawlsched.model import JobFile
from crawlsched.state import State, StorageUnavailable
from crawlsched.store import FileKey, JobStore

__all__ = ["STABLE_FOR", "Reloading", "Reloads"]

STABLE_FOR = 0.5  # a changed job file is applied once it stopped changing for this long


class Reloads:
    """The job file's versions as the daemon sees them: the applied one, a pending change, a bad one."""

    def __init__(self, store: JobStore, state: State, home: Path, log: logging.Logger, *,
                 monotonic: Callable[[], float], on_error: Callable[[], None]) -> None:
        self.store, self.state, self.home, self.log = store, state, Path(home), log
        self.monotonic = monotonic
        self.on_error = on_error  # the daemon's status changed (systemd's STATUS=)
        self.applied_key: FileKey | None = None
        self.pending_key: tuple[FileKey | None, float] | None = None
        self.bad_key: FileKey | None = None
        self.config_error: str | None = None
        self.recheck_at: float | None = None  # monotonic: look again then (a change still settling)
        self.changed = False  # the watch saw the file change
        self._digest: str | None = None  # of the bytes last kept: daemons sharing a state compare them
        self.placement: tuple[str | None, str] | None = None  # (state, executor) this daemon started with
        self.placement_said: tuple[str | None, str] | None = None

    def first(self) -> JobFile:
        """The file at start: a bad one is fatal (``JobFileError``); a missing one is no jobs, said loudly."""
        jobfile = self.store.load(cache_later=True)  # the daemon writes the parse cache once ready
        self.applied_key = self.store.stat_key()
        self.placement = self.placement_said = self._placement(jobfile)
        if self.applied_key is None:  # not an error (it may come later), but never a silent "0 jobs"
            self.log.warning("job file %s does not exist: no jobs until it is created (it is read as soon as it is)",
                             self.store.path)
        return jobfile

    def due(self) -> bool:
        """Whether to look at the file in this turn (the watch saw a change, or a re-check is due); consumed."""
        if self.changed or (self.recheck_at is not None and self.monotonic() >= self.recheck_at):
            self.changed = False
            self.recheck_at = None
            return True
        return False

    def take(self, force: bool, started: bool) -> JobFile | None:
        """The file to apply now, or None: unchanged, still changing, or not good (the last good jobs stay)."""
        key = self.store.stat_key()
        if not force and key == self.applied_key:
            self.pending_key = None
            return None
        if not force:
            # Wait until the file has stopped changing: an editor's half-written save never wipes jobs.
            now_m = self.monotonic()
            if self.pending_key is None or self.pending_key[0] != key:
                self.pending_key = (key, now_m)
                self.recheck_at = now_m + STABLE_FOR
                return None
            if now_m - self.pending_key[1] < STABLE_FOR:
                self.recheck_at = self.pending_key[1] + STABLE_FOR
                return None
        self.pending_key = None
        if (key is None or key.size == 0) and started:
            self._file_missing("missing" if key is None else "empty (0 bytes)")
            return None
        if key is not None and key == self.bad_key and not force:
            return None
        try:
            jobfile = self.store.load()
        except JobFileError as exc:
            if key != self.bad_key or force:
                self.log.error("job file not applied, keeping the last good jobs: %s", exc)
            self.bad_key = key
            self.config_error = str(exc)
            self.state.config_status(str(exc))
            self.on_error()
            return None
        self.bad_key = None
        self.config_error = None
        self.applied_key = key
        self._say_placement(jobfile)
        return jobfile

    def _placement(self, jobfile: JobFile) -> tuple[str | None, str]:
        """Where the state is (as shown: redacted) and who runs the attempts, as this file says."""
        from crawlsched.state.open import choose_state, label_of

        try:
            label: str | None = choose_state(self.home, jobfile.defaults.state).label
        except CrawlschedError:
            label = label_of(self.state)
        return label, jobfile.defaults.executor

    def _say_placement(self, jobfile: JobFile) -> None:
        """A changed ``[defaults] state`` or ``executor`` takes effect at the next start: said once per change."""
        if self.placement is None:
            return
        now = self._placement(jobfile)
        if now != self.placement and now != self.placement_said:
            (state, executor), (new_state, new_executor) = self.placement, now
            self.log.warning("[defaults] state or executor changed in the job file (state %s, executor %s); this daemon"
                             " keeps state %s and executor %s until it is restarted", new_state, new_executor,
                             state, executor)
        self.placement_said = now

    def keep_last_good(self) -> None:
        """Keep the bytes of the file just applied in ``<home>/.cache``: while the file is broken,
        ``list``, ``show`` and ``history`` show these jobs (the ones this daemon runs)."""
        key = self.applied_key
        if key is None:
            return
        try:
            data = self.store.path.read_bytes()
            if self.store.stat_key() == key:  # else it changed since: the next reload keeps that one
                self._digest = digest(data)
                self.store.save_last_good(self.home, data)
        except OSError as exc:
            self.log.warning("could not keep a copy of the applied job file in %s/.cache: %s", self.home, exc)

    def digest(self) -> str | None:
        """The fingerprint of the job file applied (None before one was kept): ``status`` shows
        daemons sharing a state whose files differ."""
        return self._digest

    def _file_missing(self, how: str = "missing") -> None:
        """While running, a missing job file (an editor's delete and re-create, a ``mv``) is not
        an empty job list: the last good jobs and their retries stay until it is back. Nor is
        an empty one (SPEC §7: a truncating save, a full disk, a deploy that failed halfway)."""
        message = f"{self.store.path.name}: the file is {how}"
        if self.config_error != message:
            self.log.error("job file not applied, keeping the last good jobs: %s", message)
            self.state.config_status(message)
        self.config_error = message
        self.on_error()
        self.applied_key = None  # any file that appears is read again
        self.bad_key = None


class Reloading:
    """The daemon applying its job file again (mixed into ``Daemon``)."""

    def reload(self, force: bool = False) -> bool:
        """Apply the job file if it changed and is good; keep the last good jobs otherwise."""
        with collector_paused(self.owns_process):
            before = self.reloads.applied_key
            jobfile = self.reloads.take(force, self.started)
            if jobfile is None:
                return False
            try:
                self._apply(jobfile, self.clock())
            except BaseException:
                self.reloads.applied_key = before  # not applied (the state was lost, say): the next look tries again
                raise
            del jobfile
        self._settle_memory()
        executor = self.executor  # resized when max_concurrent changed
        for key in self.chains.in_flight():  # removed or paused: its attempt saves no retry
            if not self._wanted(key.job_id):
                executor.cancel(key)
        recall = getattr(executor, "recall", None)
        # Queued ahead of its instant: a job paused or removed meanwhile does not run. A changed one runs as it
        # was queued (an edit in the last seconds applies from the next fire, as an edit just after the instant).
        if recall is not None:
            try:
                recall(lambda spec: self._wanted(spec.job_id))
            except StorageUnavailable:  # logged once by the state; the attempts queued ahead still run
                pass
        if self.member.leading:  # the cluster's row is the leader's
            self.state.config_status(None, **self.next_info())
        self.reloads.keep_last_good()
        self._step("noting the job file's digest", lambda: self.member.applied(self.reloads.digest()))
        self.log.info("job file reloaded: %d jobs", len(self.jobs))
        self._send_status()
        return True

    def _settle_memory(self) -> None:
        settle(self.owns_process, first=not self.started)  # started: a reload
