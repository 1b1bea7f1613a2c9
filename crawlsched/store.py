"""jobs.toml ⇄ Job objects: read, validate, and change under a lock with an atomic write.

Reading uses ``tomllib`` (fast) and a parsed cache keyed on the file's inode,
mtime, ctime and size. Writing follows SPEC §7: take a lock on a separate lock
file (a lock on jobs.toml itself is lost when the file is replaced by a
rename), re-read, change, validate the whole new text, write a temp file,
fsync, rename, fsync the folder. A job file that is a symbolic link (as
configuration management deploys it) stays one: the lock, the temp file and
the rename are next to the file it points at. A UTF-8 byte-order mark is
read past and kept. ``add`` appends its table as text; other
edits rewrite only the one table they touch, through ``tomlkit``, so what a
person wrote elsewhere in the file (comments, blank lines, order) is kept
byte for byte. The text → ``JobFile`` parse lives in ``crawlsched.jobfile``,
the table surgery in ``crawlsched.tomledit``; this module holds the file.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import re
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from crawlsched import __version__, timing
from crawlsched.errors import DuplicateName, InvalidValue, JobFileError, JobNotFound
from crawlsched.jobfile import BOM, JOBS_HEADER_SEARCH, build_file, parse_text, with_line
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

__all__ = ["FileKey", "JobStore", "build_file", "check_future", "parse_text", "render_table", "resolve_paths", "user_cache_dir"]

CACHE_FORMAT = 2
BOM_BYTES = BOM.encode("utf-8")
CACHE_MIN_BYTES = 64 * 1024  # smaller files parse in milliseconds: no cache file for them


# A cached JobFile is only good for the class layout that pickled it: a changed
# dataclass (fields added, slots) must not be filled from an old pickle.
_LAYOUT = tuple(tuple(f.name for f in fields(cls)) for cls in (Job, Defaults, JobFile))


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of the file without reading it."""

    ino: int
    dev: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileKey:
        return cls(st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class JobStore:
    """One job file: cached reads and locked, atomic, comment-preserving writes."""

    def __init__(self, path: Path, cache_dir: Path | None = None, machine_tz: str | None = None) -> None:
        self.path = Path(path)
        self.machine_tz = machine_tz or timing.machine_timezone()
        self.cache_dir = cache_dir
        self.label = self.path.name

    # --- reading -------------------------------------------------------------

    def stat_key(self) -> FileKey | None:
        try:
            return FileKey.of(os.stat(self.path))
        except FileNotFoundError:
            return None

    def load(self) -> JobFile:
        """The current jobs; a missing file means no jobs. Raises ``JobFileError``."""
        key = self.stat_key()
        if key is None:
            return JobFile(defaults=Defaults(), jobs=())
        cached = self._cache_get(key)
        if cached is not None:
            return cached
        text = self._read_text()
        jobfile = parse_text(text, self.label, self.machine_tz)
        if self.stat_key() == key:
            self._cache_put(key, jobfile)
        return jobfile

    def _read_text(self) -> str:
        """The file's text (a byte-order mark dropped); a missing file is empty."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return ""
        try:
            return data.decode("utf-8").removeprefix(BOM)
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise JobFileError(self.label, line, "not valid UTF-8") from None

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        # One cache file per job file path. crc32, not hashlib: hashlib loads OpenSSL
        # (+3.7 MB in the daemon). A collision only costs a miss: the stamp holds the inode.
        resolved = str(self.path.resolve())
        tag = re.sub(r"[^A-Za-z0-9_.-]", "_", self.path.name)[:40]
        return self.cache_dir / f"jobs-{tag}-{zlib.crc32(resolved.encode()):08x}.pickle"

    def _cache_get(self, key: FileKey) -> JobFile | None:
        path = self._cache_file()
        if path is None or key.size < CACHE_MIN_BYTES:
            return None
        try:
            with open(path, "rb") as fh:
                stamp, jobfile = pickle.load(fh)
        except Exception:
            return None
        if stamp != (CACHE_FORMAT, __version__, _LAYOUT, self.machine_tz, key) or not isinstance(jobfile, JobFile):
            return None
        return jobfile

    def _cache_put(self, key: FileKey, jobfile: JobFile) -> None:
        path = self._cache_file()
        if path is None or key.size < CACHE_MIN_BYTES:
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the job file's contents
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(((CACHE_FORMAT, __version__, _LAYOUT, self.machine_tz, key), jobfile), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except OSError:
            pass  # the cache is only a speed-up

    def load_fire_memo(self) -> None:
        """Give ``timing`` the next-fire answers an earlier process saved (a speed-up only)."""
        path = self._memo_file()
        if path is None:
            return
        try:
            with open(path, "rb") as fh:
                stamp, known = pickle.load(fh)
        except Exception:
            return
        if stamp == (CACHE_FORMAT, __version__) and isinstance(known, dict):
            timing.learn_fires(known)

    def save_fire_memo(self, now: float) -> None:
        """Save the answers ``timing`` learned, when there are enough new ones to matter."""
        path = self._memo_file()
        learned, known = timing.known_fires()
        if path is None or learned < 16:
            return
        fresh = {k: v for k, v in known.items() if v[1] > now}
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(((CACHE_FORMAT, __version__), fresh), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except OSError:
            pass

    def _memo_file(self) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / "next-fires.pickle"

    # --- writing -------------------------------------------------------------

    def target(self) -> Path:
        """The file that holds the jobs: ``path``, or the file its symbolic links lead to (it may not exist yet)."""
        return Path(os.path.realpath(self.path))

    @property
    def lock_path(self) -> Path:
        target = self.target()
        return target.with_name("." + target.name + ".lock")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the write lock: one writer at a time across processes.

        The lock file sits next to the link's target, so writers through the
        link and writers of the target itself share it. Should the link be
        pointed elsewhere while we waited, the lock of the new target is taken.
        """
        for _ in range(10):
            lock_path = self.lock_path
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            if self.lock_path == lock_path:
                break
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)

    def _write_text(self, text: str) -> None:
        """Temp file, fsync, rename, fsync the folder: a reader sees the old file or the new one.

        Through a symbolic link the new file replaces the link's target, in its folder,
        so the link stays. A byte-order mark the file had is written again.
        """
        target = self.target()
        folder = target.parent
        try:
            with open(target, "rb") as fh:
                if fh.read(len(BOM_BYTES)) == BOM_BYTES:
                    text = BOM + text
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + target.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.chmod(tmp, os.stat(target).st_mode & 0o777)
            except FileNotFoundError:
                os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dirfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def _commit(self, new_text: str) -> JobFile:
        """Validate the whole new text, then write it; a bad result changes nothing."""
        jobfile = parse_text(new_text, self.label, self.machine_tz)
        self._write_text(new_text)
        key = self.stat_key()
        if key is not None:
            self._cache_put(key, jobfile)
        return jobfile

    def _current(self) -> tuple[str, JobFile]:
        """Under the lock: the text and its parsed jobs (a broken file is never rewritten)."""
        text = self._read_text()
        key = self.stat_key()
        cached = self._cache_get(key) if key else None
        jobfile = cached if cached is not None else parse_text(text, self.label, self.machine_tz)
        return text, jobfile

    # --- operations ----------------------------------------------------------

    def add(self, fields: Mapping[str, Any], *, now: datetime, id_taken: Callable[[str], bool] = lambda _id: False) -> Job:
        """Add a job from ``fields`` (the keys of a [[jobs]] table, without id); returns it.

        The id is made from the name and never reuses one that the history
        knows (``id_taken``). ``start_date`` defaults to today in the job's
        zone and the zone is always written, so a later change of the
        machine's zone moves nothing.
        """
        with self.locked():
            text, current = self._current()
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
                sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
                new_text = text + sep + addition
                self._write_text(new_text)
                key = self.stat_key()
                if key is not None:
                    self._cache_put(key, JobFile(current.defaults, current.jobs + (with_line(job, None),), current.raw_defaults))
                return job
            jobfile = self._commit(append_with_tomlkit(text, table))
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
            text, current = self._current()
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
            jobfile = parse_text(new_text, self.label, self.machine_tz)
            edited = jobfile.find(job.id)
            assert edited is not None
            if {"end_date", "start_date", "at", "cron", "every", "timezone"} & set(changes):
                check_future(edited, now)
            self._write_text(new_text)
            key = self.stat_key()
            if key is not None:
                self._cache_put(key, jobfile)
            return edited

    def remove(self, ref: str) -> Job:
        with self.locked():
            text, current = self._current()
            job = self._find(current, ref)
            self._commit(remove_job_table(text, current, job.id))
            return job

    def set_paused(self, ref: str, paused: bool) -> Job:
        with self.locked():
            text, current = self._current()
            job = self._find(current, ref)
            if job.paused == paused:
                return job

            def change(table: Any) -> None:
                if paused:
                    table["paused"] = True
                elif "paused" in table:
                    del table["paused"]

            jobfile = self._commit(edit_job_table(text, current, job.id, change))
            return jobfile.find(job.id) or job

    def set_paused_all(self, paused: bool) -> int:
        """Pause or resume every job on its own (`paused` in each table); returns how many changed.

        One pass over the file (spans found once, edited bottom up, checked once): 10,000 jobs
        are not parsed 10,000 times under the lock.
        """
        with self.locked():
            text, current = self._current()
            changed = [j for j in current.jobs if j.paused != paused]

            def change(table: Any) -> None:
                if paused:
                    table["paused"] = True
                elif "paused" in table:
                    del table["paused"]

            if changed:
                self._commit(edit_job_tables(text, current, [j.id for j in changed], change))
            return len(changed)

    def set_defaults(self, changes: Mapping[str, Any]) -> Defaults:
        """Set keys of ``[defaults]`` (``retry-config``); creates the table at the top when missing."""
        with self.locked():
            text, _ = self._current()
            jobfile = self._commit(edit_defaults(text, changes))
            return jobfile.defaults

    def upsert(self, table: Mapping[str, Any], *, now: datetime) -> Job:
        """Create or replace the job whose id is ``table["id"]`` (legacy start, import)."""
        with self.locked():
            text, current = self._current()
            existing = current.find(table["id"])
            if existing is not None and existing.id == table["id"]:
                text = remove_job_table(text, current, existing.id)
            for other in current.jobs:
                if other.id != table["id"] and other.name == table.get("name"):
                    raise DuplicateName(other.name)
            jobfile = self._commit(append_text(text, render_table(dict(table))))
            job = jobfile.find(table["id"])
            assert job is not None
            return job

    def add_many(self, tables: list[Mapping[str, Any]], *, replace: bool = True) -> list[Job]:
        """Add or replace several jobs in one write: all of them or none (``import``)."""
        with self.locked():
            text, current = self._current()
            present = {j.id for j in current.jobs}
            replaced = [t["id"] for t in tables if t["id"] in present]
            if replaced and replace:
                text = remove_job_tables(text, current, replaced)
            for table in tables:
                text = append_text(text, render_table(dict(table)))
            jobfile = self._commit(text)
            return [j for t in tables if (j := jobfile.find(t["id"])) is not None]

    def prune(self, now: datetime, anchors: Mapping[str, datetime] | None = None) -> list[Job]:
        """Remove finished jobs (their history stays)."""
        anchors = anchors or {}
        with self.locked():
            text, current = self._current()
            gone = [j for j in current.jobs if timing.is_finished(j, now, anchors.get(j.id))]
            if gone:
                self._commit(remove_job_tables(text, current, [j.id for j in gone]))
            return gone

    # --- the daemon's last good file ---------------------------------------------

    def last_good_path(self, home: Path) -> Path:
        """Where the daemon keeps the bytes of the job file it applied last (one per job file)."""
        resolved = str(self.path.resolve())
        tag = re.sub(r"[^A-Za-z0-9_.-]", "_", self.path.stem)[:40]
        return Path(home) / ".cache" / f"last-good-{tag}-{zlib.crc32(resolved.encode()):08x}.toml"

    def save_last_good(self, home: Path, data: bytes) -> None:
        """Keep ``data`` (the file as applied): temp file and rename, so a reader sees a whole copy."""
        path = self.last_good_path(home)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the job file's contents
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-last-good-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def load_last_good(self, home: Path) -> JobFile | None:
        """The daemon's last good copy, parsed; None when there is none or it does not parse."""
        try:
            text = self.last_good_path(home).read_bytes().decode("utf-8")
            return parse_text(text, self.label, self.machine_tz)
        except (OSError, UnicodeDecodeError, JobFileError):
            return None

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


def user_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the CLI keeps its parse cache: ``$XDG_CACHE_HOME/crawlsched``, else ``~/.cache/crawlsched``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crawlsched"


def resolve_paths(jobs_file: str | None, home: str | None, environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """SPEC §2: ``--jobs-file``, else ``$CRAWLSCHED_JOBS``, else ``./jobs.toml``; home likewise, else the file's folder."""
    env = os.environ if environ is None else environ
    path = Path(jobs_file or env.get("CRAWLSCHED_JOBS") or "jobs.toml").expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    home_path = Path(home or env.get("CRAWLSCHED_HOME") or path.parent).expanduser()
    home_path = home_path if home_path.is_absolute() else Path.cwd() / home_path
    return path, home_path
