"""jobs.toml text → a validated ``JobFile``, with errors that name ``jobs.toml:LINE``.

``tomllib`` parses; ``validate.build_job`` validates each table. Line numbers
are found only when an error needs one: the text is split into lines lazily
(10,000 jobs are 60,000 lines), and the ``[[jobs]]`` headers are located by
one regex search over the whole text.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Mapping

from crawlsched.errors import InvalidValue, JobFileError
from crawlsched.model import Job, JobFile
from crawlsched.validate import JobBuilder, build_defaults

HEADER_RE = re.compile(r"^\s*\[")
JOBS_HEADER_SEARCH = re.compile(r"^[ \t]*\[\[[ \t]*jobs[ \t]*\]\][ \t\r]*(#[^\n]*)?$", re.M)
DEFAULTS_HEADER_RE = re.compile(r"^\s*\[\s*defaults\s*\]\s*(#.*)?$")
SUBTABLE_RE = re.compile(r"^\s*\[\s*jobs\s*\.")
TOML_LINE_RE = re.compile(r"\(at line (\d+), column \d+\)")
LONG_NUMBER_RE = re.compile(r"[0-9A-Fa-f_]{4000,}")
BOM = "\ufeff"


def parse_text(text: str, label: str = "jobs.toml", machine_tz: str = "UTC") -> JobFile:
    """Parse and validate a whole job file; errors are ``JobFileError`` with ``label:LINE``.

    A UTF-8 byte-order mark (Windows editors write one) is not part of the TOML.
    """
    text = text.removeprefix(BOM)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        match = TOML_LINE_RE.search(msg)
        line = int(match[1]) if match else 1
        raise JobFileError(label, line, "not valid TOML: " + TOML_LINE_RE.sub("", msg).strip()) from None
    except ValueError:
        # tomllib converts an integer of more than 4300 digits with int(), which refuses it.
        match = LONG_NUMBER_RE.search(text)
        line = text.count("\n", 0, match.start()) + 1 if match else 1
        raise JobFileError(label, line, "a number longer than 4300 digits; no value may be that large") from None
    try:
        return build_file(data, text, label, machine_tz)
    except JobFileError as exc:
        # A quoted TOML key may hold a line break or a NUL; the error is one line
        # wherever it goes (stderr, the log, `status --json`).
        detail = _escape_controls(exc.detail)
        if detail == exc.detail:
            raise
        raise JobFileError(exc.path, exc.line, detail) from None


def _escape_controls(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Lines:
    """The file's lines, split only when an error needs a line number (10,000 jobs are 60,000 lines)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: list[str] | None = None

    def get(self) -> list[str]:
        if self._lines is None:
            self._lines = self.text.splitlines()
        return self._lines


def _jobs_header_lines(text: str) -> list[int]:
    """0-based line numbers of the ``[[jobs]]`` headers, without splitting the text."""
    out, line, pos = [], 0, 0
    for match in JOBS_HEADER_SEARCH.finditer(text):
        line += text.count("\n", pos, match.start())
        pos = match.start()
        out.append(line)
    return out


def build_file(data: Mapping[str, Any], text: str, label: str, machine_tz: str) -> JobFile:
    lazy = _Lines(text)
    for key in data:
        if key not in ("defaults", "jobs"):
            lines = lazy.get()
            line = _key_line(lines, 0, len(lines), key) or 1
            raise JobFileError(label, line, f"{key}: unknown top-level key (allowed: [defaults] and [[jobs]])")
    raw_defaults = data.get("defaults", {})
    try:
        defaults = build_defaults(raw_defaults)
    except InvalidValue as exc:
        lines = lazy.get()
        start = defaults_line(lines)
        key = exc.field.split(".")[1] if exc.field.startswith("defaults.") else None
        line = _key_line(lines, start or 0, segment_end(lines, start or 0), key) if key else None
        raise JobFileError(label, line or start or 1, str(exc)) from None
    raw_jobs = data.get("jobs", [])
    if not isinstance(raw_jobs, list):
        lines = lazy.get()
        raise JobFileError(label, _key_line(lines, 0, len(lines), "jobs") or 1, "jobs: must be an array of tables ([[jobs]])")
    headers = _jobs_header_lines(text)
    jobs: list[Job] = []
    seen_ids: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    build_job = JobBuilder(defaults, machine_tz)
    for index, raw in enumerate(raw_jobs):
        start = headers[index] if index < len(headers) and len(headers) == len(raw_jobs) else None
        try:
            job = build_job(raw)
        except InvalidValue as exc:
            key = exc.field.split(".")[0]
            line = None
            if start is not None:
                lines = lazy.get()
                line = _key_line(lines, start, segment_end(lines, start), key) or start + 1
            raise JobFileError(label, line or 1, f"job {index + 1}: {exc}") from None
        line_no = start + 1 if start is not None else None
        if job.id in seen_ids:
            raise JobFileError(label, line_no or 1, f"id: \"{job.id}\" is used by two jobs (the other at line {seen_ids[job.id]}); ids are unique")
        if job.name in seen_names:
            raise JobFileError(label, line_no or 1, f"name: \"{job.name}\" is used by two jobs (the other at line {seen_names[job.name]}); names are unique")
        seen_ids[job.id] = line_no or 0
        seen_names[job.name] = line_no or 0
        jobs.append(with_line(job, line_no))
    return JobFile(defaults=defaults, jobs=tuple(jobs), raw_defaults=dict(raw_defaults))


def with_line(job: Job, line: int | None) -> Job:
    object.__setattr__(job, "line", line)
    return job


def segment_end(lines: list[str], start: int) -> int:
    """The line after a table that starts at ``start``: the next header that is not its own sub-table."""
    for i in range(start + 1, len(lines)):
        if HEADER_RE.match(lines[i]) and not SUBTABLE_RE.match(lines[i]):
            return i
    return len(lines)


def _key_line(lines: list[str], start: int, end: int, key: str | None) -> int | None:
    if not key:
        return None
    pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*[=.]")
    for i in range(start, end):
        if pattern.match(lines[i]):
            return i + 1
    return None


def defaults_line(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if DEFAULTS_HEADER_RE.match(line):
            return i
    return None
