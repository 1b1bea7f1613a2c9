"""Reading the job file: cached loads, ``[defaults] state`` from the file's head, the daemon's last good copy.

``JobReads`` is the reading half of ``crawlsched.store.JobStore`` (its base class):
a load goes through the parse cache of ``crawlsched.jobcache`` (an unchanged file is
not parsed again, a changed one only in the tables that changed), the last load of a
large file is kept, and a daemon writes the cache once it is ready
(``save_cache_later``). The locked, atomic writes are ``crawlsched.store``'s.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Any

from crawlsched import safewrite, timing
from crawlsched.errors import JobFileError
from crawlsched.jobcache import CACHE_MIN_BYTES, FileKey, ParseCache, load_fire_memo, save_fire_memo
from crawlsched.jobfile import BOM, JOBS_HEADER_SEARCH, parse_text
from crawlsched.model import Defaults, JobFile

_JOBS_HEADER_BYTES = re.compile(JOBS_HEADER_SEARCH.pattern.encode(), re.M)
_DEFAULTS_LATER = re.compile(rb"^[ \t]*\[[ \t]*defaults[ \t]*\]", re.M)  # a [defaults] after the jobs (unusual)

__all__ = ["JobReads"]


class JobReads:
    """One job file, read: cached loads, its head's ``[defaults] state``, the daemon's last good copy."""

    def __init__(self, path: Path, cache_dir: Path | None = None, machine_tz: str | None = None) -> None:
        self.path = Path(path)
        self.machine_tz = machine_tz or timing.machine_timezone()
        self.cache_dir = cache_dir
        self.label = self.path.name
        self._cache_later: tuple[ParseCache, FileKey, JobFile] | None = None  # a parse cache to write (load)
        self.compact_cache = False  # a daemon's store: its cache is read back into jobs that hold no dict each
        self._last: tuple[FileKey, JobFile] | None = None  # the last load of a large file (``_remember``)

    def stat_key(self) -> FileKey | None:
        try:
            return FileKey.of(os.stat(self.path))
        except FileNotFoundError:
            return None

    def _cache(self) -> ParseCache:
        # cache_dir may be set after __init__
        return ParseCache(self.cache_dir, self.path, self.machine_tz, compact=self.compact_cache)

    def load(self, *, cache_later: bool = False) -> JobFile:
        """The current jobs; a missing file means no jobs. Raises ``JobFileError``.

        ``cache_later``: the parse cache is written by ``save_cache_later`` instead (a daemon
        writes it once it is ready: 100,000 jobs take a while to pickle, and only a later read needs them).
        """
        key = self.stat_key()
        if key is None:
            return JobFile(defaults=Defaults(), jobs=())
        if self._last is not None and self._last[0] == key:
            return self._last[1]  # the same version as the last load (a large file: what the parse cache trusts)
        cache = self._cache()
        cached = cache.get(key)
        if cached is not None:
            self._remember(key, cached)
            return cached
        text = self._read_text()
        jobfile = cache.parse(text, None, self.label)
        if self.stat_key() == key:
            if cache_later:
                self._cache_later = (cache, key, jobfile)
            else:
                cache.put(key, jobfile)
            self._remember(key, jobfile)
        return jobfile

    def _remember(self, key: FileKey, jobfile: JobFile) -> None:
        """Keep the last load of a large file: the daemon's start reads the file twice (the state's
        executor, then the jobs), and 100,000 jobs must not be parsed, or read from the cache, twice."""
        self._last = (key, jobfile) if key.size >= CACHE_MIN_BYTES else None

    def save_cache_later(self) -> None:
        """Write the parse cache that ``load(cache_later=True)`` left for later, if any."""
        later, self._cache_later = self._cache_later, None
        if later is not None:
            cache, key, jobfile = later
            cache.compact = self.compact_cache  # set by the daemon, maybe after the load
            cache.put(key, jobfile)  # the parse of the file at version `key`, whatever the file is now

    def defaults_state(self, home: Path | None = None) -> Any:
        """``[defaults] state`` as written (None when unset), for choosing the state before the jobs are needed.

        Read from the file's head (what comes before the first ``[[jobs]]``) when it parses on its
        own and holds ``[defaults]`` (or no ``[defaults]`` follows): 10,000 jobs are not parsed,
        nor even decoded, for one key (about 1 ms for 1.2 MB). Otherwise the file is loaded whole;
        a broken file gives its last good copy's (the daemon's, in ``home``), so the commands read
        the state the daemon uses.
        """
        import tomllib

        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        found = _JOBS_HEADER_BYTES.search(data)
        head, rest = (data[: found.start()], data[found.start():]) if found else (data, b"")
        try:
            raw = tomllib.loads(head.decode("utf-8").removeprefix(BOM))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            raw = None
        if raw is not None and "jobs" not in raw and (
                "defaults" in raw or b"defaults" not in rest or not _DEFAULTS_LATER.search(rest)):
            table = raw.get("defaults")
            return table.get("state") if isinstance(table, dict) else None
        try:
            return self.load().defaults.state
        except JobFileError:
            last = self.load_last_good(home) if home is not None else None
            return last.defaults.state if last is not None else None

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

    def load_fire_memo(self) -> None:
        """Give ``timing`` the next-fire answers an earlier process saved (a speed-up only)."""
        load_fire_memo(self.cache_dir)

    def save_fire_memo(self, now: float) -> None:
        """Save the answers ``timing`` learned, when there are enough new ones to matter."""
        save_fire_memo(self.cache_dir, now)

    # --- the daemon's last good file ---------------------------------------------

    def last_good_path(self, home: Path) -> Path:
        """Where the daemon keeps the bytes of the job file it applied last (one per job file)."""
        resolved = str(self.path.resolve())
        tag = re.sub(r"[^A-Za-z0-9_.-]", "_", self.path.stem)[:40]
        return Path(home) / ".cache" / f"last-good-{tag}-{zlib.crc32(resolved.encode()):08x}.toml"

    def save_last_good(self, home: Path, data: bytes) -> None:
        """Keep ``data`` (the file as applied): temp file and rename, so a reader sees a whole copy."""
        safewrite.write_copy(self.last_good_path(home), data)

    def load_last_good(self, home: Path) -> JobFile | None:
        """The daemon's last good copy, parsed; None when there is none or it does not parse."""
        try:
            text = self.last_good_path(home).read_bytes().decode("utf-8")
            return parse_text(text, self.label, self.machine_tz)
        except (OSError, UnicodeDecodeError, JobFileError):
            return None
