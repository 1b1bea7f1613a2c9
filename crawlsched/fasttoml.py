"""A fast path for the plainest ``[[jobs]]`` table: one C regex instead of ``tomllib``'s Python parser.

``tomllib`` is written in Python and takes about 30 µs a table; 100,000 jobs
spend seconds in it at a daemon's first start. ``jobs_table`` reads one
``[[jobs]]`` segment (``jobcache.split``) whose every line is blank, a comment,
or ``bare_key = value`` with a value that is a basic string without escapes,
a decimal integer, ``true``/``false`` or a local date, and returns the table
exactly as ``tomllib.loads(segment)["jobs"][0]`` would. Anything else (an
escape, a float, an array, an inline table, a quoted or dotted key, a
repeated key, a date that does not exist, a stray character) gives None and
the caller uses ``tomllib``: this never decides what is valid TOML, it only
recognises text that certainly is, so every error is still ``tomllib``'s.

Equal texts and dates across the tables of one parse are one object
(``shared``): 100,000 jobs whose ``name`` is their ``id``, or that share a
command or a start date, hold each value once.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

__all__ = ["jobs_table"]

# TOML 1.0: a comment or basic string may hold any character but the ASCII controls (tab allowed).
_COMMENT = r"(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"
_VALUE = (r'("[^"\\\x00-\x08\x0a-\x1f\x7f]*")'  # 2: a basic string with its quotes, no escapes
          r"|(true|false)"  # 3
          r"|([+-]?(?:0|[1-9][0-9]*))"  # 4: a decimal integer without underscores
          r"|([0-9]{4}-[0-9]{2}-[0-9]{2})")  # 5: a local date
_HEADER = re.compile(r"[ \t]*\[\[[ \t]*jobs[ \t]*\]\][ \t]*" + _COMMENT + r"\r?\n")
# One line: blank, a comment, or `key = value`, each with an optional comment. Every match is exactly
# one line (nothing in it crosses a newline), so the segment is plain when every line matched.
_LINE = re.compile(r"^[ \t]*(?:([A-Za-z0-9_-]+)[ \t]*=[ \t]*(?:" + _VALUE + r")[ \t]*)?" + _COMMENT + r"(?:\r?\n|\Z)", re.M)


def jobs_table(segment: str, shared: dict[Any, Any] | None = None) -> dict[str, Any] | None:
    """The one table of a ``[[jobs]]`` segment, as ``tomllib`` reads it; None unless the segment is plain.

    ``shared`` maps values already seen in this parse to themselves: equal values become one object.
    """
    header = _HEADER.match(segment)
    if header is None:
        return None
    lines = _LINE.findall(segment, header.end())
    if len(lines) != segment.count("\n", header.end()) + 1:
        return None  # a line that is not plain: tomllib reads it (and says what is wrong, if anything)
    shared = {} if shared is None else shared
    table: dict[str, Any] = {}
    for key, text, boolean, integer, day in lines:
        if not key:
            continue  # a blank line or a comment
        if key in table:
            return None  # tomllib refuses a repeated key: let it say so
        if text:
            value: Any = text[1:-1]
            value = shared.setdefault(value, value)
        elif boolean:
            value = boolean == "true"
        elif integer:
            if len(integer) > 4000:
                return None  # int() refuses more than 4300 digits: tomllib's error, not ours
            value = int(integer)
        else:
            value = shared.get((date, day))
            if value is None:
                try:
                    value = shared[(date, day)] = date.fromisoformat(day)  # exactly YYYY-MM-DD here
                except ValueError:
                    return None  # no such day: tomllib says so
        table[key] = value
    return table
