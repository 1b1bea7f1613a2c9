"""logfile.py: the daily file's local-date name, reopening after rotation, its trouble said once, keep_logs."""

import re
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine

from crawlsched import logfile, logs
from helpers.files import lines

JAKARTA = ZoneInfo("Asia/Jakarta")  # UTC+7, no daylight saving


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
    path = logfile.log_file(tmp_path)
    logger.info("first")
    path.rename(path.with_name(path.name + ".1"))  # logrotate, no copytruncate
    logger.info("second")
    assert lines(path)[0].endswith(" - second")
    assert lines(path.with_name(path.name + ".1"))[0].endswith(" - first")


def test_deleted_log_folder_is_recreated(logger, tmp_path):
    path = logfile.log_file(tmp_path)
    logger.info("first")
    path.unlink()
    path.parent.rmdir()
    logger.info("second")
    assert [line[-6:] for line in lines(path)] == ["second"]


def test_threads_write_whole_lines(logger, tmp_path):
    def work(n):
        for i in range(50):
            logger.info("thread %d line %d", n, i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = lines(logfile.log_file(tmp_path))
    assert len(got) == 400
    assert all(re.search(r" - INFO - thread \d line \d+$", line) for line in got)


# --- a log file that cannot be written -------------------------------------------


def test_unwritable_log_path_is_reported_once_and_once_again_on_recovery(tmp_path, capsys):
    log = logs.setup_logging(tmp_path)
    try:
        path = logfile.log_file(tmp_path)
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
        path = logfile.log_file(tmp_path)
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
        removed = logfile.remove_old_logs(tmp_path, 30, time.time())
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
    logfile.log_file(tmp_path).mkdir(parents=True)
    daemon = DaemonProcess(tmp_path).start()
    try:
        wait_for(lambda: daemon.output().count("AUTO CRAWL SUCCESS") >= 3, 20, "three attempts")
    finally:
        assert daemon.stop() == 0
    out = daemon.output()
    assert "Logging error" not in out and "Traceback" not in out
    assert out.count("cannot be written") == 1, out
