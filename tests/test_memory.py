"""The daemon's memory after loading its jobs (``crawlsched.memory``)."""

from __future__ import annotations

import subprocess
import sys


def test_settling_memory_freezes_what_the_daemon_keeps():
    code = ("import gc; from crawlsched.memory import settle_memory; settle_memory(); "
            "n = gc.get_freeze_count(); settle_memory(); print(n > 1000, gc.get_freeze_count() > 1000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True"]
