"""crawl/outcome.py: what an attempt returns."""

from __future__ import annotations

from crawlsched.crawl.outcome import Outcome, disk_message


def test_outcome_message_is_one_short_line():
    assert Outcome(False, "a\nb\r\n" + "c" * 400).message.startswith("a b c")
    assert len(Outcome(False, "x" * 1000).message) == 300



def test_a_disk_message_names_a_full_disk_by_its_errno():
    import errno

    assert disk_message(OSError(errno.ENOSPC, "No space left on device"), "cannot write x") == \
        "disk full (ENOSPC): cannot write x"
    assert disk_message(OSError(errno.EACCES, "Permission denied"), "cannot write x") == \
        "cannot write x: Permission denied"
