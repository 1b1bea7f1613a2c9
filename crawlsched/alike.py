"""Tables alike: ``[[jobs]]`` segments that differ only in their ``id`` and ``name`` lines, read once.

A big job file repeats itself: 100,000 jobs written by a script hold a few hundred
schedules and one crawl, and most tables are the one before with another id and
name. ``Alike.job`` cuts a segment at its ``id = "…"`` and ``name = "…"`` lines
(each a whole line, exactly so, its text a basic string without escapes); what is
left, with the two keys in their places, is the segment's *template*. The first
segment of a template is read and validated as before (``jobcache.parse_segment``);
a later one is that job with its own id and name, checked as ``build_job`` checks
them (``check_id``'s pattern, ``check_name``); a name written as its id is the id's text,
one object, as ``fasttoml``'s shared values make it.

Why that is exact: a template is only kept when its first segment was read by
``fasttoml`` (every line blank, a comment or a one-line ``key = value``, no key
twice), and the first job was built from that table. A segment of the same
template holds the same lines but for its ``id``/``name`` lines, which are plain
one-line values too: ``fasttoml`` would read it as the same table with the two
values changed, and ``JobBuilder`` would build the same job with its own id and
name (the other fields of a job never depend on them). Any other segment — read
by ``tomllib`` (a multi-line string, an inline table, an array, an escape), an
id or name written another way (spaces, a comment after it, a literal string),
a bad id or name — goes the old way, which also gives every error as before.

Nothing mutable is shared that was not shared before: the other fields are the
first job's, as ``JobBuilder`` gives them to every job of its shape (texts,
numbers, dates, frozen sets, enums, tuples, and the ``[defaults]`` headers that
every job without its own already shares).
"""

from __future__ import annotations

import operator
import re
from dataclasses import fields
from typing import Any, Callable

from crawlsched.errors import InvalidValue
from crawlsched.jobfile import with_line
from crawlsched.model import Job
from crawlsched.validate import ID_RE, check_name

__all__ = ["Alike"]

# An own line: `id = "…"` or `name = "…"`, the whole line, the value as fasttoml reads a basic string.
_OWN_LINE = re.compile(r'^(id|name) = "([^"\\\x00-\x08\x0a-\x1f\x7f]*)"$', re.M)
_FIELDS = tuple(f.name for f in fields(Job))
assert _FIELDS[:2] == ("id", "name") and _FIELDS[-1] == "line", _FIELDS
_REST = operator.attrgetter(*_FIELDS[2:-1])  # every field after the name, but the line
_valid_id = ID_RE.fullmatch  # check_id on a text: None when it would refuse it


class Alike:
    """One parse's tables alike. ``job(segment, line)`` is ``read(segment)``'s job, each template read once.

    ``read(segment, plain)`` is the old way: the segment's job or None, and ``plain`` is told whether
    ``fasttoml`` read it. ``reads`` counts the segments that went that way.
    """

    def __init__(self, read: Callable[[str, list[bool]], Job | None]) -> None:
        self.read = read
        self.reads = 0
        self._first: dict[tuple[str, ...], tuple[Any, ...]] = {}  # template -> its first job's other fields

    def job(self, segment: str, line: int | None = None) -> Job | None:
        """The segment's job, its ``line`` set; None when ``read`` gives None (not one valid job)."""
        pieces = _OWN_LINE.split(segment)
        count = len(pieces)
        if count == 7 and pieces[1] != pieces[4]:  # both lines, one each: the template keeps where each is
            template: tuple[str, ...] = (pieces[0], pieces[1], pieces[3], pieces[4], pieces[6])
            job_id, name = (pieces[2], pieces[5]) if pieces[1] == "id" else (pieces[5], pieces[2])
        elif count == 4 and pieces[1] == "id":  # no name line: the name is the id
            template = (pieces[0], pieces[3])
            job_id = name = pieces[2]
        else:
            return self._read(segment, None, line)
        rest = self._first.get(template)
        if rest is None:
            return self._read(segment, template, line)
        if _valid_id(job_id) is None:
            return self._read(segment, None, line)  # the old way says what is wrong, as before
        if name == job_id:
            name = job_id  # one text for both, as fasttoml's ``shared`` gives them: 100,000 names are 5 MB
        else:
            try:
                name = check_name(name)
            except InvalidValue:
                return self._read(segment, None, line)
        return Job(job_id, name, *rest, line)

    def _read(self, segment: str, template: tuple[str, ...] | None, line: int | None) -> Job | None:
        self.reads += 1
        plain = [False]
        job = self.read(segment, plain)
        if job is None:
            return None
        if template is not None and plain[0]:
            self._first[template] = _REST(job)
        return with_line(job, line)
