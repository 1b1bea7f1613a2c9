"""Standard error for journald: ``<N>`` syslog priorities when stderr *is* the journal.

Under systemd, when stderr is the journal (``JOURNAL_STREAM`` names its device
and inode), each stderr line starts with its syslog priority (``<3>`` error,
``<4>`` warning, ``<6>`` info, ``<7>`` debug) and carries no timestamp (journald
stamps it), so ``journalctl -p err`` shows exactly the ERROR lines.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald files a record under (``<N>`` at the start of a line)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """``<6>INFO - message``: the priority for journald, no timestamp (journald adds its own).

    Every line of a multi-line record (a traceback) carries the prefix, since
    journald files each line as an entry of its own.
    """

    def __init__(self) -> None:
        super().__init__("%(levelname)s - %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stderr_is_journal(stream: Any = None, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` (default: stderr) is the journal systemd connected (``JOURNAL_STREAM``).

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` of the stream it hands
    the service; a child whose stderr was redirected elsewhere inherits the
    variable, so it counts only when the numbers match the stream itself.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((sys.stderr if stream is None else stream).fileno())
    except (AttributeError, OSError, ValueError):
        return False  # no real file descriptor (pytest's capture, a closed stream)
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now* (it may be swapped later,
    by pytest for one), like ``logging.lastResort`` does. A stderr that
    cannot be written (a closed pipe) drops the line silently: there is
    nowhere left to complain."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    def handleError(self, record: logging.LogRecord) -> None:
        pass

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.setStream would assign
        pass
