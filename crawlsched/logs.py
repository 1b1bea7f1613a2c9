"""The attempt log: stderr (for journald) plus ``logs/crawler_YYYYMMDD.log``.

Lines look exactly like the seed's::

    2025-11-07 09:05:00 - INFO - 🤖 AUTO CRAWL STARTED

and the retry loop's messages are the seed's, word for word (SPEC §6). The
``log_*`` helpers below are what the retry loop calls, so the wording lives in
one place.

Levels (the seed only ever shows INFO, so this is our choice):

* INFO    — started, ``Job ID``, ``Retry attempt``, success, scheduling a retry;
* WARNING — ``AUTO CRAWL FAILED``: one attempt failed, which is routine while
  retries are left;
* ERROR   — the chain is over and the run failed, exactly one line per failed
  run: ``❌ Max retries reached for job <id>`` when every attempt was used
  (also with ``max_retries = 0``), else ``❌ Job <id> failed: <reason> (not
  retried)`` when the chain ended early (a permanent 4xx, the next run is due,
  the job was paused or removed, the last attempt was interrupted). Alerting
  on ERROR catches each failed run exactly once.

Under systemd, when stderr *is* the journal (``JOURNAL_STREAM`` names its
device and inode), each stderr line starts with its syslog priority (``<3>``
error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug) and carries no timestamp
(journald stamps it), so ``journalctl -p err`` shows exactly the ERROR lines.
The daily file keeps the seed's format.

Logging never prints Python's ``--- Logging error ---`` tracebacks: a daily
file that cannot be opened or written (a directory in its place, the wrong
owner after a logrotate ``create``, a full disk) is reported once on stderr,
and once again when it can be written again; meanwhile its lines still reach
stderr.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = [
    "LOGGER_NAME",
    "LOG_FORMAT",
    "DATE_FORMAT",
    "MSG_STARTED",
    "MSG_JOB_ID",
    "MSG_RETRY_ATTEMPT",
    "MSG_SUCCESS",
    "MSG_FAILED",
    "MSG_RETRY_SCHEDULED",
    "MSG_MAX_RETRIES",
    "MSG_FINAL_FAILURE",
    "JOB_SUFFIX",
    "DailyFileHandler",
    "JournalFormatter",
    "log_file",
    "remove_old_logs",
    "setup_logging",
    "stderr_is_journal",
    "log_started",
    "log_success",
    "log_failed",
    "log_retry_scheduled",
    "log_max_retries",
    "log_final_failure",
]

LOGGER_NAME = "crawlsched"
LOG_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

# The seed's messages (SPEC §6). Placeholders are filled by the helpers below.
MSG_STARTED = "🤖 AUTO CRAWL STARTED"
MSG_JOB_ID = "Job ID: {job_id}"
MSG_RETRY_ATTEMPT = "🔄 Retry attempt: {retry_number}/{max_retries}"
MSG_SUCCESS = "✅ AUTO CRAWL SUCCESS"
MSG_FAILED = "🔄 AUTO CRAWL FAILED: {reason}"
MSG_RETRY_SCHEDULED = "🔄 Scheduling retry {retry_number} in {seconds} seconds..."
MSG_MAX_RETRIES = "❌ Max retries reached for job {job_id}"
MSG_FINAL_FAILURE = "❌ Job {job_id} failed: {reason} (not retried)"

#: What ends a line that does not name its job (SPEC §6): attempts of different jobs
#: interleave, so ``✅ AUTO CRAWL SUCCESS [daily-morning-crawl]`` says whose it is.
JOB_SUFFIX = " [{job_id}]"


def _tagged(message: str, job_id: str | None) -> str:
    return message if job_id is None else message + JOB_SUFFIX.format(job_id=job_id)


# Marks the handlers setup_logging() installed, so a second call replaces them
# instead of adding a second copy (and leaves handlers others added alone).
_OURS = "_crawlsched_handler"


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
        self.report = report or _report_on_stderr
        self.trouble: str | None = None  # why the file cannot be written, while it cannot

    def emit(self, record: logging.LogRecord) -> None:
        target: Path | None = None
        try:
            target = log_file(self.home, record.created)
            if self.stream is None or target != self.path or self._moved():
                self._open(target)
            back = self.trouble is not None
            if back:  # said first in the file, so the gap shows where it was
                self.stream.write(self.format(_record(logging.INFO, self._back(target))) + self.terminator)
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


def _record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(LOGGER_NAME, level, __file__, 0, message, None, None)


def _report_on_stderr(level: int, message: str) -> None:
    sys.stderr.write(f"{logging.getLevelName(level)} - {message}\n")
    sys.stderr.flush()


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


class _StderrHandler(logging.StreamHandler):
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


def setup_logging(
    home: Path, *, stderr: bool = True, level: int = logging.INFO
) -> logging.Logger:
    """Configure and return the ``crawlsched`` logger.

    Logs to ``home/logs/crawler_YYYYMMDD.log`` (UTF-8, created on first use)
    and, with ``stderr=True``, to standard error, which systemd hands to
    journald (with ``<N>`` priorities when ``JOURNAL_STREAM`` says stderr is
    the journal, checked once here). Idempotent: a second call replaces the handlers of the first
    (pointing them at the new ``home``) rather than adding more. The root
    logger is not touched and records still propagate to it, so pytest's
    ``caplog`` sees them; an application that also gives the root logger a
    handler will print each line twice.
    """
    logger = logging.getLogger(LOGGER_NAME)
    formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    for old in [h for h in logger.handlers if getattr(h, _OURS, False)]:
        logger.removeHandler(old)
        old.close()
    to_stderr = _StderrHandler() if stderr else None
    if to_stderr is not None:
        to_stderr.setFormatter(JournalFormatter() if stderr_is_journal() else formatter)

    def report(level: int, message: str) -> None:
        if to_stderr is not None:
            to_stderr.handle(_record(level, message))
        else:
            _report_on_stderr(level, message)

    daily = DailyFileHandler(home, report)
    daily.setFormatter(formatter)
    handlers: list[logging.Handler] = [daily] + ([to_stderr] if to_stderr is not None else [])
    for handler in handlers:
        setattr(handler, _OURS, True)
        handler.setLevel(level)
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger


# --- the retry loop's messages ----------------------------------------------


def log_started(
    log: logging.Logger, job_id: str, retry_number: int = 0, max_retries: int = 0
) -> None:
    """An attempt begins: ``🤖 AUTO CRAWL STARTED``, ``Job ID: <id>`` and, for a
    retry, ``🔄 Retry attempt: k/R [<id>]`` (k = 1 on the second attempt, R =
    ``max_retries``). ``STARTED`` carries no suffix: the ``Job ID`` line follows it."""
    log.info(MSG_STARTED)
    log.info(MSG_JOB_ID.format(job_id=job_id))
    if retry_number > 0:
        log.info(_tagged(
            MSG_RETRY_ATTEMPT.format(retry_number=retry_number, max_retries=max_retries), job_id
        ))


def log_success(log: logging.Logger, job_id: str | None = None) -> None:
    """``✅ AUTO CRAWL SUCCESS [<id>]`` (INFO)."""
    log.info(_tagged(MSG_SUCCESS, job_id))


def log_failed(log: logging.Logger, reason: str, job_id: str | None = None) -> None:
    """``🔄 AUTO CRAWL FAILED: <reason> [<id>]`` (WARNING: retries may follow).

    ``reason`` is logged as given: it must not carry expanded secrets.
    """
    log.warning(_tagged(MSG_FAILED.format(reason=reason), job_id))


def log_retry_scheduled(log: logging.Logger, retry_number: int, seconds: float,
                        job_id: str | None = None) -> None:
    """``🔄 Scheduling retry k in S seconds... [<id>]`` (INFO; S rounded to whole seconds)."""
    log.info(_tagged(
        MSG_RETRY_SCHEDULED.format(retry_number=retry_number, seconds=round(seconds)), job_id
    ))


def log_max_retries(log: logging.Logger, job_id: str) -> None:
    """``❌ Max retries reached for job <id>`` (ERROR: the run has failed)."""
    log.error(MSG_MAX_RETRIES.format(job_id=job_id))


def log_final_failure(log: logging.Logger, job_id: str, reason: str) -> None:
    """``❌ Job <id> failed: <reason> (not retried)`` (ERROR: a chain that ended before its last attempt)."""
    log.error(MSG_FINAL_FAILURE.format(job_id=job_id, reason=reason))
