import logging
import os
import sys
import time
import re
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine

from crawlsched import logs

JAKARTA = ZoneInfo("Asia/Jakarta")  # UTC+7, no daylight saving


@pytest.fixture
def logger(tmp_path):
    log = logs.setup_logging(tmp_path, stderr=False)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_line_format_is_the_seeds(logger, tmp_path):
    with time_machine.travel(datetime(2025, 11, 7, 9, 5, tzinfo=JAKARTA), tick=False):
        logger.info(logs.MSG_STARTED)
    [line] = lines(tmp_path / "logs" / "crawler_20251107.log")
    assert line == "2025-11-07 09:05:00 - INFO - 🤖 AUTO CRAWL STARTED"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - (INFO|WARNING|ERROR) - .+", line
    )


def test_file_name_uses_the_local_date_not_utc(logger, tmp_path):
    # 2025-11-08 01:00 in Jakarta is still 2025-11-07 18:00 UTC.
    with time_machine.travel(datetime(2025, 11, 8, 1, 0, tzinfo=JAKARTA), tick=False):
        logger.info("hello")
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["crawler_20251108.log"]
    assert lines(tmp_path / "logs" / "crawler_20251108.log")[0].startswith(
        "2025-11-08 01:00:00 - INFO - "
    )


def test_date_rollover_starts_a_new_file(logger, tmp_path):
    with time_machine.travel(
        datetime(2025, 11, 7, 23, 59, 59, tzinfo=JAKARTA), tick=False
    ) as traveller:
        logger.info("before midnight")
        traveller.shift(1)
        logger.info("after midnight")
    assert lines(tmp_path / "logs" / "crawler_20251107.log") == [
        "2025-11-07 23:59:59 - INFO - before midnight"
    ]
    assert lines(tmp_path / "logs" / "crawler_20251108.log") == [
        "2025-11-08 00:00:00 - INFO - after midnight"
    ]


def test_renamed_away_file_is_reopened_at_the_original_path(logger, tmp_path):
    path = logs.log_file(tmp_path)
    logger.info("first")
    path.rename(path.with_name(path.name + ".1"))  # logrotate, no copytruncate
    logger.info("second")
    assert lines(path)[0].endswith(" - second")
    assert lines(path.with_name(path.name + ".1"))[0].endswith(" - first")


def test_deleted_log_folder_is_recreated(logger, tmp_path):
    path = logs.log_file(tmp_path)
    logger.info("first")
    path.unlink()
    path.parent.rmdir()
    logger.info("second")
    assert [line[-6:] for line in lines(path)] == ["second"]


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


def test_threads_write_whole_lines(logger, tmp_path):
    def work(n):
        for i in range(50):
            logger.info("thread %d line %d", n, i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = lines(logs.log_file(tmp_path))
    assert len(got) == 400
    assert all(re.search(r" - INFO - thread \d line \d+$", line) for line in got)


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
    from crawlsched.runner import run_foreground
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
    d.state.release_chains(["f"], "daemon", d.pid)  # as if the daemon had been killed, and ...
    assert d.state.claim_chain("f", CLAIM_RUN, os.getpid(), procs.identity(os.getpid()), clock.time()) is None  # ... `run` began
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


# --- journald ------------------------------------------------------------------


def test_daemon_writes_syslog_priorities_when_stderr_is_the_journal(tmp_path):
    """systemd sets JOURNAL_STREAM to the device:inode of the stream it hands the service."""
    from helpers.jobs import write_jobs
    from helpers.process import DaemonProcess, wait_for

    write_jobs(tmp_path, '[[jobs]]\nid = "broken"\nevery = "1s"\ncommand = "false"\nmax_retries = 0\n')
    daemon = DaemonProcess(tmp_path)
    daemon.stderr_path.touch()
    st = daemon.stderr_path.stat()
    daemon.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    daemon.start()
    try:
        wait_for(lambda: "Max retries reached" in daemon.output(), 20, "a failed chain")
    finally:
        assert daemon.stop() == 0
    written = daemon.stderr_path.read_bytes().decode().splitlines()
    assert written and all(re.match(r"<[3467]>[A-Z]+ - ", line) for line in written), written
    assert "<6>INFO - 🤖 AUTO CRAWL STARTED" in written
    assert "<6>INFO - Job ID: broken" in written
    assert any(line.startswith("<4>WARNING - 🔄 AUTO CRAWL FAILED: ") for line in written)
    assert "<3>ERROR - ❌ Max retries reached for job broken" in written
    assert not any(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line) for line in written)  # journald stamps it
    daily = lines(logs.log_file(tmp_path))
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - ERROR - ❌ Max retries reached for job broken", line)
               for line in daily)


def test_stderr_that_is_not_the_journal_keeps_the_seeds_format(tmp_path):
    """A child inherits JOURNAL_STREAM even when its stderr went elsewhere: the numbers must match."""
    with open(tmp_path / "stderr", "wb") as stream, open(tmp_path / "other", "wb") as other:
        st = os.fstat(other.fileno())
        assert logs.stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) is False
        assert logs.stderr_is_journal(other, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) is True
        assert logs.stderr_is_journal(other, {}) is False
        assert logs.stderr_is_journal(other, {"JOURNAL_STREAM": "garbage"}) is False


def test_every_line_of_a_traceback_carries_the_priority():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("crawlsched", logging.ERROR, __file__, 1, "step failed", None, sys.exc_info())
    text = logs.JournalFormatter().format(record)
    assert text.startswith("<3>ERROR - step failed\n<3>Traceback")
    assert all(line.startswith("<3>") for line in text.split("\n"))


# --- a log file that cannot be written -------------------------------------------


def test_unwritable_log_path_is_reported_once_and_once_again_on_recovery(tmp_path, capsys):
    log = logs.setup_logging(tmp_path)
    try:
        path = logs.log_file(tmp_path)
        path.parent.mkdir()
        path.mkdir()  # a directory where the file should be
        for i in range(24):
            log.info("line %d", i)
        err = capsys.readouterr().err
        assert "Logging error" not in err and "Traceback" not in err
        assert err.count("cannot be written") == 1
        assert err.count("line 23") == 1  # the lines still reach stderr
        path.rmdir()
        log.info("after")
        log.info("and after")
        err = capsys.readouterr().err
        assert err.count("is written again") == 1
        assert [line.split(" - ", 2)[2] for line in lines(path)] == [
            f"log file {path} is written again", "after", "and after"]
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


def test_full_disk_under_the_log_file_prints_no_tracebacks(tmp_path, capsys):
    log = logs.setup_logging(tmp_path)
    try:
        path = logs.log_file(tmp_path)
        path.parent.mkdir()
        path.symlink_to("/dev/full")  # every write fails with ENOSPC
        for i in range(50):
            log.warning("line %d", i)
        err = capsys.readouterr().err
        assert "Logging error" not in err and "Traceback" not in err
        assert err.count("cannot be written") == 1 and "No space left" in err
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


# --- retention -------------------------------------------------------------------


def test_daily_files_older_than_keep_logs_are_removed(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    names = ["crawler_20251001.log", "crawler_20251006.log", "crawler_20251007.log", "crawler_20251007.log.1",
             "crawler_20251005.log.2.gz", "crawler_20251105.log", "notes.txt"]
    for name in names:
        (folder / name).write_text("x\n")
    noon = datetime(2025, 11, 6, 12, 0, tzinfo=JAKARTA).timestamp()
    with time_machine.travel(noon, tick=False):
        removed = logs.remove_old_logs(tmp_path, 30, time.time())
    # 30 days before 2025-11-06 is 2025-10-07: that day's file and newer stay.
    assert [p.name for p in removed] == ["crawler_20251001.log", "crawler_20251005.log.2.gz", "crawler_20251006.log"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "crawler_20251007.log", "crawler_20251007.log.1", "crawler_20251105.log", "notes.txt"]


@pytest.mark.slow
def test_daemon_with_a_directory_where_its_log_file_should_be_says_so_once(tmp_path):
    """The issue's case: `mkdir` where the file was printed 24 logging-error tracebacks in 6 s."""
    from helpers.jobs import write_jobs
    from helpers.process import DaemonProcess, wait_for

    write_jobs(tmp_path, '[[jobs]]\nid = "tick"\nevery = "1s"\ncommand = "true"\n')
    logs.log_file(tmp_path).mkdir(parents=True)
    daemon = DaemonProcess(tmp_path).start()
    try:
        wait_for(lambda: daemon.output().count("AUTO CRAWL SUCCESS") >= 3, 20, "three attempts")
    finally:
        assert daemon.stop() == 0
    out = daemon.output()
    assert "Logging error" not in out and "Traceback" not in out
    assert out.count("cannot be written") == 1, out
