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

Where the lines go: the daily file (:mod:`crawlsched.logfile`, in the seed's
format) and standard error (:mod:`crawlsched.journald`: with syslog priorities
when stderr is the journal, so ``journalctl -p err`` shows exactly the ERROR
lines). Logging never prints Python's ``--- Logging error ---`` tracebacks: a
daily file that cannot be opened or written (a directory in its place, the
wrong owner after a logrotate ``create``, a full disk) is reported once on
stderr, and once again when it can be written again; meanwhile its lines still
reach stderr.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crawlsched.journald import JournalFormatter, StderrHandler, stderr_is_journal
from crawlsched.logfile import DailyFileHandler, log_file, own_record, remove_old_logs, report_on_stderr  # noqa: F401 - log_file, remove_old_logs: re-exported

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
    to_stderr = StderrHandler() if stderr else None
    if to_stderr is not None:
        to_stderr.setFormatter(JournalFormatter() if stderr_is_journal() else formatter)

    def report(level: int, message: str) -> None:
        if to_stderr is not None:
            to_stderr.handle(own_record(level, message))
        else:
            report_on_stderr(level, message)

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
