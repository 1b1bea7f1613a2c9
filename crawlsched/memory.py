"""The daemon's memory after (re)loading the jobs: collected, frozen, given back (docs/BENCHMARKS.md)."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

__all__ = ["collector_paused", "settle", "settle_memory", "trim_memory"]


@contextmanager
def collector_paused(whole_process: bool, *, freeze: bool = False) -> Iterator[None]:
    """No garbage collection while the jobs are loaded and planned (``settle`` collects right after).

    Loading 100,000 jobs allocates millions of objects that all live on: the collections they
    trigger walk them again and again, for nothing (0.3 s of a 2.7 s start, measured). Only for
    a daemon that owns its process: the collector is a whole-process switch.

    ``freeze``: what the block leaves is frozen once it ends (the daemon's first load, before
    its start): the collections between it and the start's ``settle``, which unfreezes, collects
    and freezes again, do not walk those jobs either.
    """
    pause = whole_process and gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    except BaseException:
        if pause:
            gc.enable()
        raise
    if pause:
        if freeze:
            gc.freeze()
        gc.enable()


def settle(whole_process: bool, *, first: bool = False) -> None:
    """``settle_memory`` for a daemon that owns its process; only ``trim_memory`` for one embedded
    in another program (tests): collecting and freezing are whole-process acts."""
    if whole_process:
        settle_memory(first=first)
    else:
        trim_memory()


def settle_memory(*, first: bool = False) -> None:
    """After (re)loading the jobs: collect, freeze what is left, give freed memory back.

    The jobs and the plan live as long as the daemon; frozen, the garbage
    collector never walks them again. Without it, a full collection (133 ms
    measured with 100,000 jobs) lands at a moment the allocations of a burst
    happen to trigger, and whatever is due then waits for it. A reload
    unfreezes first, so the jobs it replaced can be collected.

    ``first``: the daemon's start, whose jobs were frozen as they were loaded
    (``collector_paused(freeze=True)``) and are all kept: only what came after
    them is collected. Walking the 100,000 jobs again found nothing to collect
    and cost 0.1 s (the first reload's full collection finds anything left).
    """
    if not first:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    trim_memory()


def trim_memory() -> None:
    """Give the memory a big parse freed back to the system (glibc keeps it otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
