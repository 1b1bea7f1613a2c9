#!/usr/bin/env python3
"""What starting N commands at one instant costs on this machine: the floor under a worker's burst.

    python bench/gatewake.py [--burst 200] [--reps 3] [--shared]

``--burst`` commands are spawned ahead through crawlsched's gate (``sh`` waiting on a pipe,
crawlsched.crawl.command.GATE), each to run ``date +%s.%N``; one second later one loop writes
every go-ahead (with ``--shared``: every gate reads one pipe, as crawl.command.SharedGate's do,
and one write of ``--burst`` lines lets them all go). Each command's lateness is its own clock
minus the moment the loop began: the least a worker can do when 200 command attempts are due together (docs/SCALING.md, "Spawned
ahead, let go together"), with no database, no threads, no Python after the instant.

Pure Python and the standard library: run it with any python3.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

GATE = ("/bin/sh", "-c", 'read -r _ || exit 111; exec "$@" </dev/null', "crawlsched-gate")  # as crawlsched's


def one_burst(n: int, shared: bool = False) -> list[float]:
    read_end, write_end = os.pipe() if shared else (-1, -1)
    procs = [subprocess.Popen([*GATE, "date", "+%s.%N"], stdin=read_end if shared else subprocess.PIPE,
                              stdout=subprocess.PIPE, start_new_session=True) for _ in range(n)]
    time.sleep(1.0)  # every gate waiting on its pipe
    began = time.time()
    if shared:
        os.write(write_end, b"\n" * n)
        os.close(write_end)
        os.close(read_end)
    else:
        for p in procs:
            p.stdin.write(b"\n")
            p.stdin.close()
    late = sorted((float(p.stdout.read()) - began) * 1000 for p in procs)
    for p in procs:
        p.wait()
    return late


def pick(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--burst", type=_positive, default=200)
    p.add_argument("--reps", type=_positive, default=3)
    p.add_argument("--shared", action="store_true", help="one pipe for every gate, one write")
    a = p.parse_args(argv)
    how = "by one write to a shared pipe" if a.shared else "in one loop"
    for _ in range(a.reps):
        late = one_burst(a.burst, a.shared)
        print(f"{a.burst} commands let go {how}: p50 {pick(late, 0.5):.1f} / p99 {pick(late, 0.99):.1f}"
              f" / max {late[-1]:.1f} ms (first {late[0]:.2f} ms)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
