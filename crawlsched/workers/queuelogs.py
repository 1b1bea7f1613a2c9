"""What procrastinate says, in a worker's log: one line a record, at most WARNING, no traceback.

A lost connection (the state database's outage, which the store logs once for its whole episode)
is logged at DEBUG, so an outage does not fill the log with the queue's own retries.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["QueueLogs", "lost_connection", "loop_trouble", "quiet_queue_logs"]


class QueueLogs(logging.Handler):
    """procrastinate's log records into the worker's log as one line each, at most WARNING, without
    a traceback; a lost connection's (the state's outage, logged once by the store) at DEBUG."""

    def __init__(self, log: logging.Logger) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())
            level = min(record.levelno, logging.WARNING)
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                from procrastinate.exceptions import ConnectorException

                cause = exc.__cause__ or exc
                if isinstance(exc, ConnectorException) or lost_connection(cause):
                    level = logging.DEBUG
                text = f"{text}: {' '.join(str(cause).split()) or type(cause).__name__}"
            self.log.log(level, "queue: %s", text)
        except Exception:  # noqa: BLE001 - logging must not break the worker
            self.handleError(record)


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is the database going away (not a bug of ours or the queue's)."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg_pool.PoolTimeout, OSError))


def quiet_queue_logs(log: logging.Logger) -> None:
    """procrastinate's logger writes through :class:`QueueLogs` into ``log`` only."""
    queue_log = logging.getLogger("procrastinate")
    queue_log.handlers[:] = [QueueLogs(log)]
    queue_log.propagate = False


def loop_trouble(log: logging.Logger, loop: Any, context: dict[str, Any]) -> None:
    """The event loop's exception handler: a task of procrastinate's that ended on an error nobody
    awaited (its job's status not written: the connection was lost; the attempt's own row is
    crawlsched's) is one line, without a traceback."""
    exc = context.get("exception")
    cause = (exc.__cause__ or exc) if exc is not None else None
    why = " ".join(str(cause).split()) if cause is not None else ""
    level = logging.DEBUG if cause is not None and lost_connection(cause) else logging.WARNING
    log.log(level, "queue: %s%s", context.get("message", "a task failed"), f": {why}" if why else "")
