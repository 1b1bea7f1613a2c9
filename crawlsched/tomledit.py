"""jobs.toml text edits that keep every other byte.

``add`` appends a table written here as text; the other edits cut out the
one table they touch (from its ``[[jobs]]`` header to the next header, less
the blank and comment lines that belong to what follows), rewrite it through
``tomlkit`` and splice it back, then check that every other job still parses
as before. What a person wrote elsewhere (comments, blank lines, order) stays.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Callable, Iterable, Mapping

from crawlsched.errors import CrawlschedError
from crawlsched.jobfile import HEADER_RE, defaults_line, segment_end
from crawlsched.model import JobFile

JOBS_HEADER_RE = re.compile(r"^\s*\[\[\s*jobs\s*\]\]\s*(#.*)?$")
# Key order of a table that `add` writes: the order of SPEC §2's example.
ADD_ORDER = (
    "id", "name", "at", "cron", "every", "start_date", "end_date", "url", "command",
    "max_retries", "retry_delay", "retry_backoff", "retry_max_delay", "timeout", "timezone",
    "catch_up", "on_failure", "max_bytes", "verify", "user_agent", "keep_runs", "headers",
    "paused", "created_at",
)  # fmt: skip


def _toml_scalar(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _toml_inline(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_inline(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_inline(v)}" for k, v in value.items()) + " }"
    return _toml_scalar(value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_scalar(key)


def render_table(table: Mapping[str, Any]) -> str:
    """One ``[[jobs]]`` table as text, keys in SPEC §2's order, short values inline."""
    keys = [k for k in ADD_ORDER if k in table] + [k for k in table if k not in ADD_ORDER]
    lines = ["[[jobs]]"]
    for key in keys:
        value = table[key]
        if value is None:
            continue
        if isinstance(value, tuple):
            value = list(value)
        lines.append(f"{_toml_key(key)} = {_toml_inline(value)}")
    return "\n".join(lines) + "\n"


def append_text(text: str, addition: str) -> str:
    sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    return text + sep + addition


def append_with_tomlkit(text: str, table: Mapping[str, Any]) -> str:
    import tomlkit

    doc = tomlkit.parse(text)
    jobs = doc.get("jobs")
    item = tomlkit.table()
    for key, value in table.items():
        item[key] = tomlkit_value(value)
    if jobs is None:
        aot = tomlkit.aot()
        aot.append(item)
        doc["jobs"] = aot
    else:
        jobs.append(item)
    return tomlkit.dumps(doc)


def tomlkit_value(value: Any) -> Any:
    import tomlkit

    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        arr = tomlkit.array()
        arr.extend(value)
        return arr
    if isinstance(value, Mapping):
        inline = tomlkit.inline_table()
        inline.update(value)
        return inline
    return value


def _job_segments(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The file's lines and, per [[jobs]] header, the span ``[start, end)`` of its table."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if JOBS_HEADER_RE.match(line)]
    bare = [line.rstrip("\r\n") for line in lines]
    return lines, [(s, segment_end(bare, s)) for s in starts]


def _split_tail(lines: list[str], start: int, end: int) -> int:
    """Where the trailing blank and comment lines of a table begin (they belong to what follows)."""
    cut = end
    while cut > start + 1 and (not lines[cut - 1].strip() or lines[cut - 1].lstrip().startswith("#")):
        cut -= 1
    return cut


def _spans_of(text: str, current: JobFile, job_ids: Iterable[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """The file's lines and the spans of the tables of ``job_ids``, bottom first (found in one pass)."""
    lines, spans = _job_segments(text)
    if len(spans) != len(current.jobs):
        raise CrawlschedError("jobs.toml holds jobs in a form this command cannot edit in place (an inline `jobs = [...]` array); write them as [[jobs]] tables")
    wanted = set(job_ids)
    chosen = [span for job, span in zip(current.jobs, spans) if job.id in wanted]
    return lines, sorted(chosen, reverse=True)


def edit_job_table(text: str, current: JobFile, job_id: str, change: Callable[[Any], None]) -> str:
    """Rewrite one job's table through tomlkit; every other byte of the file stays."""
    return edit_job_tables(text, current, [job_id], change)


def edit_job_tables(text: str, current: JobFile, job_ids: Iterable[str], change: Callable[[Any], None]) -> str:
    """Rewrite the tables of ``job_ids`` through tomlkit (``change`` on each), in one pass.

    The spans are found once and edited from the bottom up, so an edit never moves
    a span still to do; the result is checked once. Every other byte stays.
    """
    import tomlkit

    lines, spans = _spans_of(text, current, job_ids)
    for start, end in spans:
        cut = _split_tail(lines, start, end)
        segment = "".join(lines[start:cut])
        if not segment.endswith("\n"):
            segment += "\n"
        doc = tomlkit.parse(segment)
        change(doc["jobs"][0])
        lines[start:cut] = [tomlkit.dumps(doc)]
    new_text = "".join(lines)
    _check_others_unchanged(current, new_text)
    return new_text


def remove_job_table(text: str, current: JobFile, job_id: str) -> str:
    return remove_job_tables(text, current, [job_id])


def remove_job_tables(text: str, current: JobFile, job_ids: Iterable[str]) -> str:
    """Remove the tables of ``job_ids`` (their trailing comments stay with what follows), in one pass."""
    removed = set(job_ids)
    lines, spans = _spans_of(text, current, removed)
    for start, end in spans:
        del lines[start:_split_tail(lines, start, end)]
    new_text = "".join(lines)
    _check_others_unchanged(current, new_text, removed)
    return new_text


def _check_others_unchanged(current: JobFile, new_text: str, removed: Iterable[str] = ()) -> None:
    """A guard on the line-based surgery (one parse): every other job must still be there, in order."""
    gone = set(removed)
    data = tomllib.loads(new_text)
    ids = [t.get("id") for t in data.get("jobs", [])]
    expected = [j.id for j in current.jobs if j.id not in gone]
    if ids != expected:
        raise CrawlschedError("jobs.toml: could not edit the job's table in place without touching others; nothing was changed")


def edit_defaults(text: str, changes: Mapping[str, Any]) -> str:
    import tomlkit

    bare = text.splitlines()
    lines = text.splitlines(keepends=True)
    start = defaults_line(bare)
    if start is None:
        table = tomlkit.table()
        for key, value in changes.items():
            if value is not None:
                table[key] = tomlkit_value(value)
        doc = tomlkit.document()
        doc["defaults"] = table
        block = tomlkit.dumps(doc)
        first = next((i for i, line in enumerate(bare) if HEADER_RE.match(line)), len(lines))
        before = "".join(lines[:first])
        if before and not before.endswith("\n"):
            before += "\n"
        rest = "".join(lines[first:])
        return before + block + ("\n" + rest if rest else "")
    end = segment_end(bare, start)
    cut = _split_tail(lines, start, end)
    segment = "".join(lines[start:cut])
    if not segment.endswith("\n"):
        segment += "\n"
    doc = tomlkit.parse(segment)
    for key, value in changes.items():
        if value is None:
            if key in doc["defaults"]:
                del doc["defaults"][key]
        else:
            doc["defaults"][key] = tomlkit_value(value)
    return "".join(lines[:start]) + tomlkit.dumps(doc) + "".join(lines[cut:])
