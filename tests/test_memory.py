"""The daemon's memory after loading its jobs (``crawlsched.memory``)."""

from __future__ import annotations

import subprocess
import sys


def test_settling_memory_freezes_what_the_daemon_keeps():
    code = ("import gc; from crawlsched.memory import settle_memory; settle_memory(); "
            "n = gc.get_freeze_count(); settle_memory(); print(n > 1000, gc.get_freeze_count() > 1000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_the_collector_is_paused_while_jobs_load_and_on_again_after_even_on_an_error():
    import gc

    import pytest

    from crawlsched.memory import collector_paused

    assert gc.isenabled()
    with collector_paused(True):
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused(True):
        raise ValueError("a bad job file")
    assert gc.isenabled()
    with collector_paused(False):
        assert gc.isenabled(), "embedded in another program: the collector is not ours to switch"
    gc.disable()
    try:
        with collector_paused(True):
            pass
        assert not gc.isenabled(), "paused by someone else: left as it was"
    finally:
        gc.enable()


def test_the_first_settling_leaves_what_was_frozen_at_the_load_unwalked_and_a_reload_s_collects_it():
    code = (
        "import gc, weakref\n"
        "from crawlsched.memory import settle_memory\n"
        "class Node: pass\n"
        "def garbage():\n"
        "    a = Node(); a.me = a\n"
        "    return weakref.ref(a)\n"
        "gc.disable()\n"
        "loaded = garbage()\n"  # a cycle left by the load, frozen with it
        "gc.freeze()\n"
        "after = garbage()\n"  # a cycle left by the start after the load
        "settle_memory(first=True)\n"
        "print(loaded() is not None, after() is None)\n"
        "settle_memory()\n"
        "print(loaded() is None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True", "True"], out.stderr
