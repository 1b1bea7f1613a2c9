"""The daily log file, ``logs/crawler_YYYYMMDD.log``: its name, a handler that survives rotation, its pruning.

The name carries the local date, as the seed's did. :class:`DailyFileHandler`
reopens the path when logrotate moved the file away or someone deleted it, and
a file that cannot be written is reported once (and once more when it can be
again) instead of a traceback per line. :func:`remove_old_logs` is
``keep_logs``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable


def log_file(home: Path, when: float | None = None) -> Path:
    """The log file for the instant ``when`` (epoch seconds; default: now).

    The name carries the *local* date, as the seed's ``crawler_YYYYMMDD.log``
    did: an operator looks for today's file by the date on the wall.
    """
    stamp = time.strftime("%Y%m%d", time.localtime(when))
    return Path(home) / "logs" / f"crawler_{stamp}.log"


_LOG_NAME_RE = re.compile(r"crawler_(\d{8})\.log(\..*)?")


def remove_old_logs(home: Path, keep_days: int, now: float | None = None) -> list[Path]:
    """Delete the daily files (and logrotate's copies of them) older than ``keep_days`` days.

    A file's age is the local date in its name, so ``keep_days = 30`` keeps
    today's file and the 30 before it. Other files in ``logs/`` are left alone.
    """
    folder = Path(home) / "logs"
    today = time.localtime(now)
    cutoff = time.strftime("%Y%m%d", time.localtime(time.mktime((
        today.tm_year, today.tm_mon, today.tm_mday - keep_days, 12, 0, 0, 0, 0, -1))))
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _LOG_NAME_RE.fullmatch(entry.name)
        if match and match.group(1) < cutoff and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # someone else's file, or gone already: the next sweep tries again
    return sorted(removed)


class DailyFileHandler(logging.StreamHandler):
    """Append each record to ``home/logs/crawler_<local date of record>.log``.

    Before every write it checks that the open stream still is the file at
    that path (same ``st_dev``/``st_ino``, like ``WatchedFileHandler``): if
    logrotate renamed it away or someone deleted it, the path is reopened, so
    new lines never vanish into an unlinked file. One ``os.stat`` per record
    is cheap next to a crawl. The date comes from the record's own timestamp,
    so a line is never filed under the wrong day around midnight.

    A file that cannot be opened or written is reported once through
    ``report`` (a callable taking a level and a message; default: one line on
    stderr), and once more when a later line gets through; in between every
    line tries again (an ``open`` that fails costs microseconds), and nothing
    raises or prints a traceback.

    Thread-safe: ``Handler.handle`` holds the handler's lock around ``emit``.
    """

    terminator = "\n"

    def __init__(self, home: Path, report: Callable[[int, str], None] | None = None) -> None:
        super().__init__(stream=None)  # type: ignore[arg-type]
        # StreamHandler.__init__ put sys.stderr there; we open lazily instead.
        self.stream = None  # type: ignore[assignment]
        self.home = Path(home)
        self.path: Path | None = None
        self._dev_ino: tuple[int, int] | None = None
        self.report = report or report_on_stderr
        self.trouble: str | None = None  # why the file cannot be written, while it cannot

    def emit(self, record: logging.LogRecord) -> None:
        target: Path | None = None
        try:
            target = log_file(self.home, record.created)
            if self.stream is None or target != self.path or self._moved():
                self._open(target)
            back = self.trouble is not None
            if back:  # said first in the file, so the gap shows where it was
                self.stream.write(self.format(own_record(logging.INFO, self._back(target))) + self.terminator)
            self.stream.write(self.format(record) + self.terminator)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception as exc:
            self._failed(target, exc)
            return
        if back:
            self.trouble = None
            self._report(logging.INFO, self._back(target))

    def _failed(self, target: Path | None, exc: Exception) -> None:
        try:
            self._close_stream()
        except Exception:
            self.stream = None  # the buffered text is lost with the write that failed
        if self.trouble is None:
            self.trouble = f"{type(exc).__name__}: {exc}"
            self._report(logging.ERROR, f"log file {target} cannot be written ({self.trouble});"
                                        " its lines go to stderr only until it can")

    @staticmethod
    def _back(target: Path) -> str:
        return f"log file {target} is written again"

    def _report(self, level: int, message: str) -> None:
        try:
            self.report(level, message)
        except Exception:
            pass  # nowhere left to say it

    def handleError(self, record: logging.LogRecord) -> None:  # never the traceback per line
        pass

    def _moved(self) -> bool:
        """True when the path no longer names the file we have open."""
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._dev_ino

    def _open(self, target: Path) -> None:
        self._close_stream()
        target.parent.mkdir(parents=True, exist_ok=True)
        stream = open(target, "a", encoding="utf-8")
        st = os.fstat(stream.fileno())
        self.stream, self.path = stream, target
        self._dev_ino = (st.st_dev, st.st_ino)

    def _close_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.flush()
            finally:
                stream.close()

    def close(self) -> None:
        self.acquire()
        try:
            self._close_stream()
        finally:
            self.release()
            logging.Handler.close(self)


def own_record(level: int, message: str) -> logging.LogRecord:
    """A record of crawlsched's own (the logger ``logs.LOGGER_NAME``; not imported: logs imports this module)."""
    return logging.LogRecord("crawlsched", level, __file__, 0, message, None, None)


def report_on_stderr(level: int, message: str) -> None:
    sys.stderr.write(f"{logging.getLevelName(level)} - {message}\n")
    sys.stderr.flush()
