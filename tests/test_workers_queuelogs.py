"""procrastinate's lines in a worker's log (crawlsched.workers.queuelogs): one line each, an outage's at DEBUG."""

from __future__ import annotations

import logging

import psycopg
import pytest

from crawlsched.workers.queuelogs import loop_trouble, lost_connection, quiet_queue_logs


@pytest.fixture
def worker_log(caplog):
    log = logging.getLogger("test-queuelogs")
    quiet_queue_logs(log)
    caplog.set_level(logging.DEBUG, logger="test-queuelogs")
    yield caplog
    queue_log = logging.getLogger("procrastinate")
    queue_log.handlers[:] = []
    queue_log.propagate = True


def _ours(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "test-queuelogs"]


def _raised(exc: BaseException) -> tuple:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001
        return (type(caught), caught, caught.__traceback__)


def test_a_queue_error_is_one_line_at_most_warning_without_a_traceback(worker_log):
    logging.getLogger("procrastinate.worker").error("job failed\n  badly", exc_info=_raised(ValueError("boom")))
    [record] = _ours(worker_log)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == "queue: job failed badly: boom"


def test_a_lost_connection_is_logged_at_debug(worker_log):
    logging.getLogger("procrastinate.worker").error("listener", exc_info=_raised(psycopg.OperationalError("gone")))
    [record] = _ours(worker_log)
    assert record.levelno == logging.DEBUG and record.getMessage() == "queue: listener: gone"


def test_queue_info_lines_stay_out_of_the_worker_log(worker_log):
    logging.getLogger("procrastinate.worker").info("starting worker")
    assert _ours(worker_log) == []


def test_what_counts_as_a_lost_connection():
    assert lost_connection(psycopg.OperationalError("x")) and lost_connection(ConnectionResetError())
    assert not lost_connection(ValueError("x"))


def test_an_unawaited_task_error_is_one_line(worker_log):
    exc = RuntimeError("write failed")
    exc.__cause__ = psycopg.OperationalError("server closed the connection\nunexpectedly")
    loop_trouble(logging.getLogger("test-queuelogs"), None, {"message": "Task exception was never retrieved",
                                                              "exception": exc})
    [record] = _ours(worker_log)
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == ("queue: Task exception was never retrieved: server closed the connection"
                                   " unexpectedly")
