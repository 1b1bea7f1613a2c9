import logging
import os
import sys
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine

from crawlsched import logs
from helpers.files import lines

JAKARTA = ZoneInfo("Asia/Jakarta")  # UTC+7, no daylight saving


def test_line_format_is_the_seeds(logger, tmp_path):
    with time_machine.travel(datetime(2025, 11, 7, 9, 5, tzinfo=JAKARTA), tick=False):
        logger.info(logs.MSG_STARTED)
    [line] = lines(tmp_path / "logs" / "crawler_20251107.log")
    assert line == "2025-11-07 09:05:00 - INFO - 🤖 AUTO CRAWL STARTED"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - (INFO|WARNING|ERROR) - .+", line
    )


def test_second_setup_does_not_duplicate_handlers(tmp_path, capsys):
    logs.setup_logging(tmp_path)
    log = logs.setup_logging(tmp_path)
    try:
        assert len(log.handlers) == 2
        log.info("once")
        assert capsys.readouterr().err.count("once") == 1
        assert len(lines(logs.log_file(tmp_path))) == 1
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


def test_setup_leaves_foreign_handlers_alone(tmp_path):
    log = logging.getLogger(logs.LOGGER_NAME)
    foreign = logging.NullHandler()
    log.addHandler(foreign)
    try:
        logs.setup_logging(tmp_path, stderr=False)
        logs.setup_logging(tmp_path, stderr=False)
        assert log.handlers.count(foreign) == 1 and len(log.handlers) == 2
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


def test_retry_chain_messages_word_for_word(logger, tmp_path):
    logs.log_started(logger, "job_20251107110530")
    logs.log_failed(logger, "Download failed", "job_20251107110530")
    logs.log_retry_scheduled(logger, 1, 300.0, "job_20251107110530")
    logs.log_started(logger, "job_20251107110530", retry_number=2, max_retries=3)
    logs.log_success(logger, "job_20251107110530")
    logs.log_max_retries(logger, "job_20251107110530")
    messages = [line.split(" - ", 2)[1:] for line in lines(logs.log_file(tmp_path))]
    assert messages == [
        ["INFO", "🤖 AUTO CRAWL STARTED"],
        ["INFO", "Job ID: job_20251107110530"],
        ["WARNING", "🔄 AUTO CRAWL FAILED: Download failed [job_20251107110530]"],
        ["INFO", "🔄 Scheduling retry 1 in 300 seconds... [job_20251107110530]"],
        ["INFO", "🤖 AUTO CRAWL STARTED"],
        ["INFO", "Job ID: job_20251107110530"],
        ["INFO", "🔄 Retry attempt: 2/3 [job_20251107110530]"],
        ["INFO", "✅ AUTO CRAWL SUCCESS [job_20251107110530]"],
        ["ERROR", "❌ Max retries reached for job job_20251107110530"],
    ]


@pytest.mark.parametrize(
    "seconds, shown", [(300, "300"), (299.6, "300"), (7.2, "7")], ids=str
)
def test_retry_delay_is_whole_seconds(logger, tmp_path, seconds, shown):
    logs.log_retry_scheduled(logger, 2, seconds)
    assert lines(logs.log_file(tmp_path))[0].endswith(
        f"🔄 Scheduling retry 2 in {shown} seconds..."
    )


# --- which job a line is about (SPEC §6) ------------------------------------------------------


def _jobs(tmp_path: Path, body: str):
    from crawlsched.store import JobStore
    from helpers.jobs import write_jobs

    write_jobs(tmp_path, body)
    return {j.id: j for j in JobStore(tmp_path / "jobs.toml").load().jobs}


def _messages(tmp_path: Path) -> list[str]:
    return [line.split(" - ", 2)[2] for line in lines(logs.log_file(tmp_path))]


def test_lines_that_do_not_name_their_job_end_with_its_id(logger, tmp_path):
    from crawlsched.foreground import run_foreground
    from crawlsched.state import State

    jobs = _jobs(tmp_path, '[[jobs]]\nid = "daily-morning-crawl"\nname = "ok"\nat = "09:05"\ncommand = "true"\n\n'
                           '[[jobs]]\nid = "flaky"\nname = "bad"\nat = "09:05"\ncommand = "false"\n'
                           "max_retries = 1\nretry_delay = 300\n")
    state = State(tmp_path / "crawlsched.db").open()
    try:
        run_foreground(jobs["daily-morning-crawl"], state, tmp_path, logger)
        run_foreground(jobs["flaky"], state, tmp_path, logger, wait=lambda _s: False)
    finally:
        state.close()
    assert _messages(tmp_path) == [
        "🤖 AUTO CRAWL STARTED",
        "Job ID: daily-morning-crawl",
        "✅ AUTO CRAWL SUCCESS [daily-morning-crawl]",
        "🤖 AUTO CRAWL STARTED",
        "Job ID: flaky",
        "🔄 AUTO CRAWL FAILED: exit code 1 [flaky]",
        "🔄 Scheduling retry 1 in 300 seconds... [flaky]",
        "🤖 AUTO CRAWL STARTED",
        "Job ID: flaky",
        "🔄 Retry attempt: 1/1 [flaky]",
        "🔄 AUTO CRAWL FAILED: exit code 1 [flaky]",
        "❌ Max retries reached for job flaky",
    ]


# --- one ERROR line per failed chain, whatever ended it (SPEC §6) ------------------------------

FAILING = ('[[jobs]]\nid = "f"\nname = "f"\nevery = "1h"\ncommand = "false"\nstart_date = 2025-01-01\n'
           "max_retries = 2\nretry_delay = 60\n")
OTHER = '[[jobs]]\nid = "k"\nname = "k"\nat = "10:00"\ncommand = "true"\nstart_date = 2025-01-01\n'
START = datetime(2025, 11, 8, 9, 0, tzinfo=ZoneInfo("UTC"))


def _error_lines(home: Path) -> list[str]:
    return [line for line in lines(logs.log_file(home)) if " - ERROR - " in line]


def _loop_daemon(home: Path, body: str):
    from helpers.jobs import write_jobs
    from helpers.loop import make_daemon

    from helpers.clock import FakeClock

    write_jobs(home, body)
    clock = FakeClock(START)
    return make_daemon(home, clock), clock


def _waiting_for_retry(home: Path, body: str = FAILING):
    """A daemon whose job ``f`` failed its first attempt and waits 60 s for its retry."""
    from helpers.loop import run_until

    d, clock = _loop_daemon(home, body + "\n" + OTHER)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 0, 1, tzinfo=ZoneInfo("UTC")))
    assert d.chains["f"].retry_due is not None
    return d, clock


def _end_by_spending_the_retries(home):
    from helpers.loop import run_until

    d, clock = _waiting_for_retry(home)
    run_until(d, clock, datetime(2025, 11, 8, 9, 5, tzinfo=ZoneInfo("UTC")))


def _end_by_the_next_run_being_due(home):
    from helpers.loop import run_until

    d, clock = _loop_daemon(home, FAILING.replace("retry_delay = 60", "retry_delay = 7200"))
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 0, 1, tzinfo=ZoneInfo("UTC")))


def _end_by_pausing_while_the_retry_waits(home):
    from helpers.jobs import write_jobs

    d, _ = _waiting_for_retry(home)
    write_jobs(home, FAILING + "paused = true\n\n" + OTHER)
    d.reload(force=True)


def _end_by_removing_while_the_retry_waits(home):
    from helpers.jobs import write_jobs

    d, _ = _waiting_for_retry(home)
    write_jobs(home, OTHER)
    d.reload(force=True)


def _end_by_removing_while_the_daemon_was_down(home):
    from helpers.jobs import write_jobs
    from helpers.loop import make_daemon

    d, clock = _waiting_for_retry(home)
    d.shutdown()
    write_jobs(home, OTHER)
    make_daemon(home, clock).start()


def _end_by_the_next_run_being_due_while_the_daemon_was_down(home):
    from helpers.loop import make_daemon

    d, clock = _waiting_for_retry(home)
    d.shutdown()
    clock.advance(2 * 3600)
    make_daemon(home, clock).start()


def _end_by_an_interrupted_last_attempt(home):
    """The process running the last attempt died (SIGKILL): the next daemon closes the row."""
    import subprocess
    import sys

    from crawlsched.state import State

    d, clock = _loop_daemon(home, FAILING.replace("max_retries = 2", "max_retries = 0") + "\n" + OTHER)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = State(home / "crawlsched.db").open()
    state.start_attempt("f", START.timestamp() - 5, 1, 1, trigger="schedule", started_at=START.timestamp() - 5,
                        pid=dead.pid)
    state.close()
    d.start()


def _end_by_a_permanent_failure(home):
    from helpers.loop import run_until
    from helpers.servers import Pages

    server = Pages({}, default=(404, b"", None))
    try:
        d, clock = _loop_daemon(home, FAILING.replace('command = "false"', f'url = "{server.url("/gone")}"'))
        d.start()
        run_until(d, clock, datetime(2025, 11, 8, 9, 0, 1, tzinfo=ZoneInfo("UTC")))
    finally:
        server.close()


def _end_by_a_run_holding_the_chain_when_the_retry_is_due(home):
    import os

    from crawlsched import procs
    from crawlsched.state import CLAIM_RUN
    from helpers.loop import run_until

    d, clock = _waiting_for_retry(home)
    from crawlsched.state import Owner

    d.state.release_chains(["f"], d.runner.owner)  # as if the daemon had been killed, and ...
    assert d.state.claim_chain("f", Owner(CLAIM_RUN, os.getpid(), procs.identity(os.getpid())), clock.time())  # ... `run` began
    run_until(d, clock, datetime(2025, 11, 8, 9, 5, tzinfo=ZoneInfo("UTC")))


@pytest.mark.parametrize("end", [
    _end_by_spending_the_retries,
    _end_by_a_permanent_failure,
    _end_by_a_run_holding_the_chain_when_the_retry_is_due,
    _end_by_the_next_run_being_due,
    _end_by_pausing_while_the_retry_waits,
    _end_by_removing_while_the_retry_waits,
    _end_by_removing_while_the_daemon_was_down,
    _end_by_the_next_run_being_due_while_the_daemon_was_down,
    _end_by_an_interrupted_last_attempt,
], ids=lambda f: f.__name__.removeprefix("_end_by_"))
def test_a_failed_chain_writes_exactly_one_error_line(logger, tmp_path, end):
    end(tmp_path)
    errors = _error_lines(tmp_path)
    assert len(errors) == 1, errors
    assert "job f" in errors[0] or "Job f " in errors[0]
