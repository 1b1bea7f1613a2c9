"""journald.py: syslog priorities on stderr when (and only when) stderr is the journal."""

import logging
import os
import re
import sys

from crawlsched import journald, logfile
from helpers.files import lines


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
    daily = lines(logfile.log_file(tmp_path))
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - ERROR - ❌ Max retries reached for job broken", line)
               for line in daily)


def test_stderr_that_is_not_the_journal_keeps_the_seeds_format(tmp_path):
    """A child inherits JOURNAL_STREAM even when its stderr went elsewhere: the numbers must match."""
    with open(tmp_path / "stderr", "wb") as stream, open(tmp_path / "other", "wb") as other:
        st = os.fstat(other.fileno())
        assert journald.stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) is False
        assert journald.stderr_is_journal(other, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) is True
        assert journald.stderr_is_journal(other, {}) is False
        assert journald.stderr_is_journal(other, {"JOURNAL_STREAM": "garbage"}) is False


def test_every_line_of_a_traceback_carries_the_priority():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("crawlsched", logging.ERROR, __file__, 1, "step failed", None, sys.exc_info())
    text = journald.JournalFormatter().format(record)
    assert text.startswith("<3>ERROR - step failed\n<3>Traceback")
    assert all(line.startswith("<3>") for line in text.split("\n"))
