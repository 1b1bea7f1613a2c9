#!/usr/bin/env python3
"""What a thread switch costs on this machine: the floor under starting N attempts on N threads.

    python bench/threadwake.py [--burst 200] [--reps 15]

1. Ping-pong: two threads hand a lock back and forth (each hand-over is a futex wake and a GIL
   hand-over): the round trip, in µs.
2. A burst of ``--burst`` threads, each blocked on a ``queue.SimpleQueue`` (as the daemon's warm
   workers are), given one item each by a loop that does nothing else; each takes its time
   stamp first thing and then blocks on a gate (as ``local_executor.Burst``). When the last
   stamp comes after the first put is the least a pool of Python threads can do for a burst of
   attempts each begun in its own thread (docs/BENCHMARKS.md).

Pure Python and the standard library: run it with any python3.
"""
from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time


def ping_pong(rounds: int = 20000) -> float:
    a, b = threading.Lock(), threading.Lock()
    a.acquire()
    b.acquire()

    def other() -> None:
        for _ in range(rounds):
            a.acquire()
            b.release()

    t = threading.Thread(target=other)
    t.start()
    t0 = time.perf_counter()
    for _ in range(rounds):
        a.release()
        b.acquire()
    dt = time.perf_counter() - t0
    t.join()
    return dt / rounds * 1e6


def burst(n: int, reps: int) -> tuple[float, float]:
    q: queue.SimpleQueue = queue.SimpleQueue()
    stamps: list[float] = []
    pc = time.perf_counter

    def work() -> None:
        while True:
            gate = q.get()
            if gate is None:
                return
            stamps.append(pc())
            if gate.acquire(True, 0.2):
                gate.release()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(n + 10)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    p50s, p99s = [], []
    for _ in range(reps):
        stamps.clear()
        time.sleep(0.05)
        gate = threading.Lock()
        gate.acquire()
        t0 = pc()
        for _ in range(n):
            q.put(gate)
        while len(stamps) < n:
            time.sleep(0.0001)
        gate.release()
        s = sorted((x - t0) * 1000 for x in stamps)
        p50s.append(s[len(s) // 2])
        p99s.append(s[int(round(0.99 * (len(s) - 1)))])
    for _ in threads:
        q.put(None)
    return statistics.median(p50s), statistics.median(p99s)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--reps", type=int, default=15)
    args = p.parse_args()
    sys.setswitchinterval(0.0005)  # as the daemon does
    print(f"ping-pong round trip: {ping_pong():.1f} µs")
    p50, p99 = burst(args.burst, args.reps)
    print(f"{args.burst} threads woken through a queue, stamp first thing: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
          f" (median of {args.reps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
