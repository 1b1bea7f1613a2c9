"""The job file's parse cache: a parsed ``JobFile`` kept between processes, and its tables.

Parsing 10,000 jobs (tomllib, then every table validated) takes longer than
everything else a CLI command does, so the parse is kept in a pickle next to
nothing the user sees (``$XDG_CACHE_HOME/crawlsched``, or the daemon's
``<home>/.cache``). Two ways to a hit:

- **Unchanged file**: its ``FileKey`` (inode, size, mtime, ctime) is the one the
  cache was written for; the ``JobFile`` comes back as it was.
- **Changed file** (edited by hand, copied, another job appended): the text is
  cut at its ``[[jobs]]`` headers into the part before the first one (the
  *head*: comments and ``[defaults]``) and one *segment* per job. A segment whose
  text was validated before, under the same head, is that job again; only new
  segments are parsed, each on its own. Cutting is exact, not a guess: a file
  parses to the head's tables plus one job per segment when the head parses on
  its own with no ``jobs`` key and every segment parses on its own to exactly one
  ``[[jobs]]`` table (a header inside a multi-line string leaves the string open
  in its segment, which then fails to parse). Anything else — an error
  anywhere, ``[defaults]`` after the jobs, a quoted ``[["jobs"]]`` header, a
  duplicate id — goes to ``jobfile.parse_text`` on the whole text, so errors
  and unusual files are reported exactly as without the cache.

The cache is only a speed-up: a cache file that cannot be read or written is
ignored.
"""

from __future__ import annotations

import copyreg
import operator
from itertools import accumulate, repeat
import os
import pickle
import re
import tempfile
import tomllib
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from crawlsched import __version__, timing
from crawlsched.alike import Alike
from crawlsched.fasttoml import jobs_table
from crawlsched.jobfile import BOM, JOBS_HEADER_SEARCH, parse_text, with_line
from crawlsched.model import Defaults, Job, JobFile
from crawlsched.validate import JobBuilder, build_defaults, build_job

__all__ = ["CACHE_MIN_BYTES", "FileKey", "ParseCache", "parse_segmented", "user_cache_dir"]

CACHE_FORMAT = 4
CACHE_MIN_BYTES = 64 * 1024  # smaller files parse in milliseconds: no cache file for them

# A cached JobFile is only good for the class layout that pickled it: a changed
# dataclass (fields added, slots) must not be filled from an old pickle.
_LAYOUT = tuple(tuple(f.name for f in fields(cls)) for cls in (Job, Defaults, JobFile))
# Where each header begins: a zero-width split, so that each segment starts with its own header line.
assert JOBS_HEADER_SEARCH.pattern.startswith("^")
_BEFORE_HEADER = re.compile("^(?=" + JOBS_HEADER_SEARCH.pattern[1:].replace("(#", "(?:#") + ")", re.M)


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


def split(text: str) -> tuple[str, list[tuple[int, str]]]:
    """The head (before the first ``[[jobs]]`` header) and each job's segment with its 0-based header line."""
    head, *segments = _BEFORE_HEADER.split(text)
    if not segments:
        return text, []
    lines = accumulate(map(str.count, segments, repeat("\n")), initial=head.count("\n"))
    return head, list(zip(lines, segments))


def parse_segmented(text: str, machine_tz: str, known_head: str | None = None,
                    known: Mapping[str, Job] | None = None) -> tuple[JobFile, str, dict[str, Job]] | None:
    """The file parsed segment by segment, its head and its segments; ``known`` segments (seen
    under ``known_head``) are not parsed again. None when the file cannot be cut exactly or has
    any error: then the caller parses the whole text, which reports the error as itself."""
    head, parts = split(text.removeprefix(BOM))
    try:
        data = tomllib.loads(head)
        if not set(data) <= {"defaults"}:
            return None
        raw_defaults = data.get("defaults", {})
        defaults = build_defaults(raw_defaults)
    except Exception:
        return None
    if head != known_head:
        known = None
    known = known or {}
    jobs: list[Job] = []
    segments: dict[str, Job] = {}
    ids: set[str] = set()
    names: set[str] = set()
    shared: dict[Any, Any] = {}  # equal values of different tables: one object
    build = JobBuilder(defaults, machine_tz)
    alike = Alike(lambda segment, plain: parse_segment(segment, defaults, machine_tz, shared, build, plain))
    for line, segment in parts:
        job = known.get(segment)
        if job is None:
            job = alike.job(segment, line + 1)
            if job is None:
                return None
        else:
            with_line(job, line + 1)
        if job.id in ids or job.name in names:
            return None
        ids.add(job.id)
        names.add(job.name)
        segments[segment] = job
        jobs.append(job)
    return JobFile(defaults=defaults, jobs=tuple(jobs), raw_defaults=dict(raw_defaults)), head, segments


def parse_segment(segment: str, defaults: Defaults, machine_tz: str, shared: dict[Any, Any] | None = None,
                  build: JobBuilder | None = None, plain: list[bool] | None = None) -> Job | None:
    """One ``[[jobs]]`` table's text on its own, validated; None unless it is exactly one valid job.

    A plain table is read by ``fasttoml`` (``shared``: its values seen before in this parse), any other by
    ``tomllib``; ``build`` is the parse's ``JobBuilder`` (tables alike are validated once). ``plain[0]``
    is set to whether ``fasttoml`` read it.
    """
    table = jobs_table(segment, shared)
    if plain is not None:
        plain[0] = table is not None
    if table is None:
        try:
            data = tomllib.loads(segment)
        except Exception:
            return None
        tables = data.get("jobs")
        if len(data) != 1 or not isinstance(tables, list) or len(tables) != 1 or not isinstance(tables[0], dict):
            return None
        table = tables[0]
    try:
        return build(table) if build is not None else build_job(table, defaults, machine_tz)
    except Exception:
        return None


class ParseCache:
    """One job file's cache file: the last ``JobFile`` with its ``FileKey``, its head and the text
    of each job's segment (``texts[i]`` is ``jobs[i]``'s; empty when the file was parsed whole).

    ``get`` and ``parse`` remember the head and texts of what they returned, so that ``put`` of
    that ``JobFile`` keeps them; a write that appended a table gives its texts itself.
    """

    def __init__(self, cache_dir: Path | None, path: Path, machine_tz: str, *, compact: bool = False) -> None:
        self.compact = compact  # jobs written to be read back without a dict each (a daemon's cache)
        self.cache_dir = cache_dir
        self.path = path
        self.machine_tz = machine_tz
        self._known: tuple[str, tuple[str, ...], tuple[Job, ...]] | None = None  # head, texts, their jobs
        self._entry: Any = False  # not read yet

    def file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        # One cache file per job file path. crc32, not hashlib: hashlib loads OpenSSL
        # (+3.7 MB in the daemon). A collision only costs a miss: the stamp holds the path.
        resolved = str(self.path.resolve())
        tag = re.sub(r"[^A-Za-z0-9_.-]", "_", self.path.name)[:40]
        return self.cache_dir / f"jobs-{tag}-{zlib.crc32(resolved.encode()):08x}.pickle"

    def _stamp(self) -> tuple[Any, ...]:
        return (CACHE_FORMAT, __version__, _LAYOUT, self.machine_tz, str(self.path.resolve()))

    def _read(self) -> tuple[FileKey, JobFile, str, tuple[str, ...]] | None:
        """The cache file's entry (read once per instance); None when there is none or it is not ours."""
        if self._entry is not False:
            return self._entry  # type: ignore[return-value]
        self._entry = None
        path = self.file()
        if path is None:
            return None
        try:
            with open(path, "rb") as fh:
                stamp, entry = pickle.load(fh)
        except Exception:
            return None
        if (stamp == self._stamp() and isinstance(entry, tuple) and len(entry) == 4
                and isinstance(entry[1], JobFile) and isinstance(entry[3], tuple)):
            self._entry = entry
        return self._entry

    def _remember(self, head: str, texts: tuple[str, ...], jobfile: JobFile) -> None:
        self._known = (head, texts, jobfile.jobs) if len(texts) == len(jobfile.jobs) and texts else None

    def get(self, key: FileKey) -> JobFile | None:
        """The cached jobs when the file is the very version ``key`` they were parsed from."""
        entry = self._read() if key.size >= CACHE_MIN_BYTES else None
        if entry is None or entry[0] != key:
            return None
        self._remember(entry[2], entry[3], entry[1])
        return entry[1]

    def texts_of(self, jobfile: JobFile) -> tuple[str, ...] | None:
        """The segment texts of ``jobfile`` (the last one ``get`` or ``parse`` returned), else None."""
        return self._known[1] if self._known is not None and self._known[2] is jobfile.jobs else None

    def parse(self, text: str, key: FileKey | None, label: str) -> JobFile:
        """``text`` parsed (the file at version ``key``, or a new text to be written: None);
        only segments not seen before are parsed. Errors are ``parse_text``'s: a file with any
        problem is parsed whole."""
        if len(text) < CACHE_MIN_BYTES or self.cache_dir is None:
            return parse_text(text, label, self.machine_tz)
        if key is not None and (cached := self.get(key)) is not None:
            return cached
        known = self._known
        if known is None and (entry := self._read()) is not None and len(entry[3]) == len(entry[1].jobs):
            known = (entry[2], entry[3], entry[1].jobs)
        result = parse_segmented(text, self.machine_tz, *((known[0], dict(zip(known[1], known[2]))) if known else ()))
        if result is None:
            self._known = None
            return parse_text(text, label, self.machine_tz)
        jobfile, head, segments = result
        self._remember(head, tuple(segments), jobfile)
        return jobfile

    def put(self, key: FileKey | None, jobfile: JobFile, texts: tuple[str, ...] | None = None) -> None:
        """Keep ``jobfile`` as the parse of the file at version ``key``, with the texts of its
        segments: ``texts``, else those of the last ``get``/``parse`` when it returned ``jobfile``."""
        path = self.file()
        if path is None or key is None or key.size < CACHE_MIN_BYTES:
            return
        head = self._known[0] if self._known is not None else ""
        texts = texts if texts is not None else self.texts_of(jobfile)
        if texts is None or len(texts) != len(jobfile.jobs):
            head, texts = "", ()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the job file's contents
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                pickler = pickle.Pickler(fh, protocol=pickle.HIGHEST_PROTOCOL)
                pickler.dispatch_table = _COMPACT if self.compact else _DISPATCH
                pickler.dump((self._stamp(), (key, jobfile, head, texts)))
            os.replace(tmp, path)
        except OSError:
            pass  # the cache is only a speed-up


_JOB_FIELDS = tuple(f.name for f in fields(Job))
_job_values = operator.attrgetter(*_JOB_FIELDS)


def _reduce_job(job: Job) -> tuple[Any, ...]:
    """What pickle writes for a ``Job`` by default (``copyreg.__newobj__``, its fields by name), read
    without asking for the job's ``__dict__``: Python 3.11 keeps an object's attributes without a dict
    until one is asked for, and 100,000 jobs' dicts are 6 MiB the daemon would then hold."""
    return copyreg.__newobj__, (Job,), dict(zip(_JOB_FIELDS, _job_values(job)))


_DISPATCH = {**copyreg.dispatch_table, Job: _reduce_job}


def _reduce_jobfile_compact(jobfile: JobFile) -> tuple[Any, ...]:
    """A ``JobFile`` written as its jobs' fields, a column a field: read back, each job is built by
    ``Job.__init__``, as the parse builds it, so it keeps its attributes without a dict (the default
    pickle's jobs each get one), and what reading leaves behind is a few big columns, not a small
    object a job scattered between the jobs. Slower to read, so only for a daemon's cache."""
    columns = tuple(zip(*map(_job_values, jobfile.jobs)))
    return _jobfile_from_columns, (jobfile.defaults, columns, dict(jobfile.raw_defaults))


def _jobfile_from_columns(defaults: Defaults, columns: tuple[tuple[Any, ...], ...], raw_defaults: dict[str, Any]) -> JobFile:
    return JobFile(defaults=defaults, jobs=tuple(Job(*row) for row in zip(*columns)), raw_defaults=raw_defaults)


_COMPACT = {**copyreg.dispatch_table, JobFile: _reduce_jobfile_compact}


# --- next fires an earlier process computed ------------------------------------------------


def load_fire_memo(cache_dir: Path | None) -> None:
    """Give ``timing`` the next-fire answers an earlier process saved (a speed-up only)."""
    if cache_dir is None:
        return
    try:
        with open(cache_dir / "next-fires.pickle", "rb") as fh:
            stamp, known = pickle.load(fh)
    except Exception:
        return
    if stamp == (CACHE_FORMAT, __version__) and isinstance(known, dict):
        timing.learn_fires(known)


def save_fire_memo(cache_dir: Path | None, now: float) -> None:
    """Save the answers ``timing`` learned, when there are enough new ones to matter."""
    learned, known = timing.known_fires()
    if cache_dir is None or learned < 16:
        return
    fresh = {k: v for k, v in known.items() if v[1] > now}
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(((CACHE_FORMAT, __version__), fresh), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache_dir / "next-fires.pickle")
    except OSError:
        pass


def user_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the CLI keeps its parse cache: ``$XDG_CACHE_HOME/crawlsched``, else ``~/.cache/crawlsched``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crawlsched"
