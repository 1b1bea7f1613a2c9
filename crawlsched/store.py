"""jobs.toml ⇄ Job objects: read, validate, and change under a lock with an atomic write.

Reading uses ``tomllib`` and the parse cache of ``crawlsched.jobcache`` (an
unchanged file is not parsed again, a changed one only in the tables that
changed). Writing follows SPEC §7 (``crawlsched.safewrite``): take the lock,
re-read, change, validate the whole new text, write it atomically. A UTF-8
byte-order mark is read past and kept. ``add`` appends its table as text; other
edits rewrite only the one table they touch, through ``tomlkit``, so what a
person wrote elsewhere in the file (comments, blank lines, order) is kept
byte for byte. The text → ``JobFile`` parse lives in ``crawlsched.jobfile``,
the table surgery in ``crawlsched.tomledit``, the reads in ``crawlsched.jobread``;
this module holds the file and its writes.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

from crawlsched import safewrite, timing
from crawlsched.errors import DuplicateName, InvalidValue, JobNotFound
from crawlsched.jobcache import CACHE_MIN_BYTES, FileKey, ParseCache, parse_segment, user_cache_dir
from crawlsched.jobfile import JOBS_HEADER_SEARCH, build_file, parse_text, with_line
from crawlsched.jobread import JobReads
from crawlsched.model import Defaults, Job, JobFile
from crawlsched.validate import build_job, slug_id
from crawlsched.tomledit import (
    append_text,
    append_with_tomlkit,
    edit_defaults,
    edit_job_table,
    edit_job_tables,
    remove_job_table,
    remove_job_tables,
    render_table,
    tomlkit_value,
)

__all__ = ["CACHE_MIN_BYTES", "FileKey", "JobStore", "build_file", "check_future", "parse_text", "render_table", "resolve_paths",
           "user_cache_dir"]


class JobStore(JobReads):
    """One job file: cached reads (``crawlsched.jobread``) and locked, atomic, comment-preserving writes."""

    # --- writing -------------------------------------------------------------

    def target(self) -> Path:
        """The file that holds the jobs: ``path``, or the file its symbolic links lead to (it may not exist yet)."""
        return safewrite.target(self.path)

    @property
    def lock_path(self) -> Path:
        return safewrite.lock_path(self.path)

    def locked(self) -> Any:
        """Hold the write lock: one writer at a time across processes (``safewrite.locked``)."""
        return safewrite.locked(self.path)

    def _write_text(self, text: str) -> None:
        safewrite.write_text(self.path, text)

    def _commit(self, new_text: str, cache: ParseCache) -> JobFile:
        """Validate the whole new text, then write it; a bad result changes nothing."""
        jobfile = cache.parse(new_text, None, self.label)
        self._write_text(new_text)
        cache.put(self.stat_key(), jobfile)
        return jobfile

    def _current(self) -> tuple[str, JobFile, ParseCache]:
        """Under the lock: the text and its parsed jobs (a broken file is never rewritten)."""
        text = self._read_text()
        cache = self._cache()
        return text, cache.parse(text, self.stat_key(), self.label), cache

    # --- operations ----------------------------------------------------------

    def add(self, fields: Mapping[str, Any], *, now: datetime, id_taken: Callable[[str], bool] = lambda _id: False) -> Job:
        """Add a job from ``fields`` (the keys of a [[jobs]] table, without id); returns it.

        The id is made from the name and never reuses one that the history
        knows (``id_taken``). ``start_date`` defaults to today in the job's
        zone and the zone is always written, so a later change of the
        machine's zone moves nothing.
        """
        with self.locked():
            text, current, cache = self._current()
            table = dict(fields)
            name = table.get("name")
            if isinstance(name, str):
                table["name"] = name.strip()
            if any(j.name == table.get("name") for j in current.jobs):
                raise DuplicateName(table["name"])
            # `--tz ""` is a value (refused by build_job), not "no zone given".
            tz = table["timezone"] if table.get("timezone") is not None else current.defaults.timezone or self.machine_tz
            table["timezone"] = tz
            probe = build_job({"id": "probe", **table}, current.defaults, self.machine_tz)
            if "start_date" not in table:
                table["start_date"] = timing.today_in(probe.timezone, now)
            table.setdefault("created_at", now.astimezone(probe.tz).replace(microsecond=0))
            table["id"] = self._new_id(table.get("id") or slug_id(probe.name), current, id_taken)
            job = build_job(table, current.defaults, self.machine_tz)
            check_future(job, now)
            addition = render_table(table)
            if self._can_append(text, current):
                new_text = append_text(text, addition)
                self._write_text(new_text)
                # The cache keeps each table's text with its job: the last one gained the separator,
                # the new one is the addition, checked on its own first (it must parse to this job).
                texts = cache.texts_of(current)
                if texts and parse_segment(addition, current.defaults, self.machine_tz) == job:
                    texts = (*texts[:-1], texts[-1] + new_text[len(text): len(new_text) - len(addition)], addition)
                else:
                    texts = None
                cache.put(self.stat_key(), JobFile(current.defaults, current.jobs + (with_line(job, None),), current.raw_defaults),
                          texts)
                return job
            jobfile = self._commit(append_with_tomlkit(text, table), cache)
            return jobfile.find(job.id) or job

    def _can_append(self, text: str, current: JobFile) -> bool:
        """Plain appending works unless the file holds jobs as an inline array."""
        if not current.jobs:
            return "jobs" not in text or not re.search(r"^\s*jobs\s*=", text, re.M)
        return JOBS_HEADER_SEARCH.search(text) is not None

    @staticmethod
    def _new_id(base: str, current: JobFile, id_taken: Callable[[str], bool]) -> str:
        ids = {j.id for j in current.jobs}
        candidate, n = base, 1
        while candidate in ids or id_taken(candidate):
            n += 1
            suffix = f"-{n}"
            candidate = base[: 64 - len(suffix)] + suffix
        return candidate

    def edit(self, ref: str, changes: Mapping[str, Any], *, now: datetime, remove: tuple[str, ...] = ()) -> Job:
        """Change some keys of one job (``None`` removes a key); validates like ``add``."""
        with self.locked():
            text, current, cache = self._current()
            job = self._find(current, ref)
            new_name = changes.get("name")
            if new_name is not None and new_name != job.name and any(j.name == new_name for j in current.jobs):
                raise DuplicateName(new_name)
            schedule_keys = {"at", "cron", "every"} & set(changes)
            drop = set(remove)
            if schedule_keys:
                drop |= {"at", "cron", "every"} - schedule_keys
            if {"url", "command"} & set(changes):
                drop |= {"url", "command"} - set(changes)

            def change(table: Any) -> None:
                for key in drop:
                    if key in table:
                        del table[key]
                for key, value in changes.items():
                    if value is None:
                        if key in table:
                            del table[key]
                    else:
                        table[key] = tomlkit_value(value)
                # The file was valid before, so a problem now is the edit's: report it
                # as the bad value it is (field, value), not as `jobs.toml:LINE`.
                build_job(table.unwrap(), current.defaults, self.machine_tz)

            new_text = edit_job_table(text, current, job.id, change)
            jobfile = cache.parse(new_text, None, self.label)
            edited = jobfile.find(job.id)
            assert edited is not None
            if {"end_date", "start_date", "at", "cron", "every", "timezone"} & set(changes):
                check_future(edited, now)
            self._write_text(new_text)
            cache.put(self.stat_key(), jobfile)
            return edited

    def remove(self, ref: str) -> Job:
        with self.locked():
            text, current, cache = self._current()
            job = self._find(current, ref)
            self._commit(remove_job_table(text, current, job.id), cache)
            return job

    def set_paused(self, ref: str, paused: bool) -> Job:
        with self.locked():
            text, current, cache = self._current()
            job = self._find(current, ref)
            if job.paused == paused:
                return job

            def change(table: Any) -> None:
                if paused:
                    table["paused"] = True
                elif "paused" in table:
                    del table["paused"]

            jobfile = self._commit(edit_job_table(text, current, job.id, change), cache)
            return jobfile.find(job.id) or job

    def set_paused_all(self, paused: bool) -> int:
        """Pause or resume every job on its own (`paused` in each table); returns how many changed.

        One pass over the file (spans found once, edited bottom up, checked once): 10,000 jobs
        are not parsed 10,000 times under the lock.
        """
        with self.locked():
            text, current, cache = self._current()
            changed = [j for j in current.jobs if j.paused != paused]

            def change(table: Any) -> None:
                if paused:
                    table["paused"] = True
                elif "paused" in table:
                    del table["paused"]

            if changed:
                self._commit(edit_job_tables(text, current, [j.id for j in changed], change), cache)
            return len(changed)

    def set_defaults(self, changes: Mapping[str, Any]) -> Defaults:
        """Set keys of ``[defaults]`` (``retry-config``); creates the table at the top when missing."""
        with self.locked():
            text, _, cache = self._current()
            jobfile = self._commit(edit_defaults(text, changes), cache)
            return jobfile.defaults

    def upsert(self, table: Mapping[str, Any], *, now: datetime) -> Job:
        """Create or replace the job whose id is ``table["id"]`` (legacy start, import)."""
        with self.locked():
            text, current, cache = self._current()
            existing = current.find(table["id"])
            if existing is not None and existing.id == table["id"]:
                text = remove_job_table(text, current, existing.id)
            for other in current.jobs:
                if other.id != table["id"] and other.name == table.get("name"):
                    raise DuplicateName(other.name)
            jobfile = self._commit(append_text(text, render_table(dict(table))), cache)
            job = jobfile.find(table["id"])
            assert job is not None
            return job

    def add_many(self, tables: list[Mapping[str, Any]], *, replace: bool = True) -> list[Job]:
        """Add or replace several jobs in one write: all of them or none (``import``)."""
        with self.locked():
            text, current, cache = self._current()
            present = {j.id for j in current.jobs}
            replaced = [t["id"] for t in tables if t["id"] in present]
            if replaced and replace:
                text = remove_job_tables(text, current, replaced)
            for table in tables:
                text = append_text(text, render_table(dict(table)))
            jobfile = self._commit(text, cache)
            return [j for t in tables if (j := jobfile.find(t["id"])) is not None]

    def prune(self, now: datetime, anchors: Mapping[str, datetime] | None = None) -> list[Job]:
        """Remove finished jobs (their history stays)."""
        anchors = anchors or {}
        with self.locked():
            text, current, cache = self._current()
            gone = [j for j in current.jobs if timing.is_finished(j, now, anchors.get(j.id))]
            if gone:
                self._commit(remove_job_tables(text, current, [j.id for j in gone]), cache)
            return gone

    @staticmethod
    def _find(current: JobFile, ref: str) -> Job:
        job = current.find(ref)
        if job is None:
            raise JobNotFound(ref)
        return job


def check_future(job: Job, now: datetime) -> None:
    """What ``add`` and ``edit`` refuse beyond the file's own rules: an end in the past, no fire at all."""
    if job.end_date is not None:
        today = timing.today_in(job.timezone, now)
        if job.end_date < today:
            raise InvalidValue("end_date", job.end_date.isoformat(), f"is in the past (today is {today.isoformat()} in {job.timezone})")
        after = now - timedelta(microseconds=1)
        if timing.next_fire(job, after, anchor=timing.first_fire_on_sight(job, now)) is None:
            raise InvalidValue(job.kind.value, job.spec, f"never fires from now until end_date {job.end_date.isoformat()}")


def resolve_paths(jobs_file: str | None, home: str | None, environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """SPEC §2: ``--jobs-file``, else ``$CRAWLSCHED_JOBS``, else ``./jobs.toml``; home likewise, else the file's folder."""
    env = os.environ if environ is None else environ
    path = Path(jobs_file or env.get("CRAWLSCHED_JOBS") or "jobs.toml").expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    home_path = Path(home or env.get("CRAWLSCHED_HOME") or path.parent).expanduser()
    home_path = home_path if home_path.is_absolute() else Path.cwd() / home_path
    return path, home_path
