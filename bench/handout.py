#!/usr/bin/env python3
"""The loop's hand-out of a burst, in-process: what a fire costs the loop, and when each attempt starts.

    .venv/bin/python bench/handout.py [--jobs 10000] [--burst 200] [--reps 20] [--mode null|threads]

A real ``Daemon`` over a real job file and SQLite file (the bench's generator: ``--burst`` jobs
due at one minute, the rest hours away), its collector frozen as the daemon's own is, a clock
the bench moves. Each repetition fires the burst, ends its chains (outcomes collected, claims
released) and moves the clock a minute on, to the burst jobs' next fire.

- ``null``: the executor keeps the specs and does nothing: ``fire_due``'s own cost, per fire.
- ``threads``: the daemon's ``LocalExecutor`` (``--burst + 10`` warm workers, the daemon's switch
  interval) with a runner that only takes its start time (``perf_counter``, as the real runner
  takes ``time.time``) and returns: when each attempt would begin its I/O, counted from the call
  of ``fire_due``, without the wake (``bench/run.py`` measures that) or any attempt's I/O.

A sampling profiler sees nothing in a burst of a few milliseconds (docs/BENCHMARKS.md); for an
instruction count, run the null mode under ``valgrind --tool=callgrind`` with
``--instr-atstart=no`` and ``--toggle-collect`` on ``fire_due``... or simply compare the totals
of two trees with the same ``--reps``.
"""
from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import crawlsched_bench as cb  # noqa: E402
from crawlsched.daemon import Daemon  # noqa: E402
from crawlsched.executor import AttemptOutcome, OutcomeKind  # noqa: E402
from crawlsched.local_executor import LocalExecutor  # noqa: E402
from crawlsched.memory import settle_memory  # noqa: E402
from crawlsched.model import RunStatus  # noqa: E402
from crawlsched.state import State  # noqa: E402
from crawlsched.store import JobStore  # noqa: E402

AT = 1_767_225_600  # 2026-01-01T00:00Z, a whole minute


class NullExecutor:
    """Keeps the specs; ``finish`` makes their outcomes (success) for the next collect."""

    def __init__(self) -> None:
        self.specs: list = []
        self.out: list = []
        self.wake = lambda: None

    def start(self, runner, wake) -> None:
        self.wake = wake

    def submit(self, spec) -> None:
        self.specs.append(spec)

    def finish(self) -> None:
        self.out = [AttemptOutcome(s.job_id, s.scheduled_for, s.attempt, OutcomeKind.RAN, RunStatus.SUCCESS, "ok")
                    for s in self.specs]
        self.specs = []

    def results(self):
        out, self.out = self.out, []
        return out

    def has_results(self) -> bool:
        return bool(self.out)

    def cancel(self, key) -> None:
        pass

    def unstarted(self):
        return ()

    capacity = 1 << 20

    def resize(self, size: int) -> None:
        pass

    def begin_burst(self) -> None:
        pass

    def end_burst(self) -> None:
        self.handed = time.perf_counter()  # the whole burst is handed out (its next fires not planned yet)

    def shutdown(self, grace: float, cancel_wait: float) -> None:
        pass


class StampRunner:
    """A runner whose attempt only notes when it began (in the worker, as the real one does)."""

    def __init__(self) -> None:
        self.clock = time.perf_counter
        self.log = logging.getLogger("crawlsched.bench")
        self.stamps: list[float] = []
        self.lock = threading.Lock()

    def run(self, spec, *, started_at=None, cancel=None, still_wanted=None):
        with self.lock:
            self.stamps.append(started_at)
        return AttemptOutcome(spec.job_id, spec.scheduled_for, spec.attempt, OutcomeKind.RAN, RunStatus.SUCCESS, "ok")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - AT + 1000.0


def build(home: Path, jobs: int, burst: int, executor) -> tuple[Daemon, Clock]:
    cb.write_jobs_toml(home / "jobs.toml", jobs, burst, AT)
    path = home / "jobs.toml"  # the burst jobs every minute, so that each repetition has its burst
    path.write_text(path.read_text().replace('cron = "0 0 * * *"', 'cron = "* * * * *"'))
    clock = Clock(AT - 30)
    store = JobStore(home / "jobs.toml", cache_dir=home / ".cache")
    log = logging.getLogger("crawlsched.bench")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    d = Daemon(store, State(home / "crawlsched.db"), home, log, clock=clock.time, monotonic=clock.monotonic,
               executor=executor, notify=lambda _m: False, duties=False)
    d.start()
    settle_memory()  # the daemon freezes what it keeps after loading (crawlsched.memory)
    return d, clock


def end_chains(d: Daemon) -> None:
    d.collect()
    d.chains.release_claims()


def run_null(args) -> tuple[list[float], list[float]]:
    ex = NullExecutor()
    per_fire, handing = [], []
    with tempfile.TemporaryDirectory() as tmp:
        d, clock = build(Path(tmp), args.jobs, args.burst, ex)
        for i in range(args.reps + 1):
            clock.t = AT + 60 * i
            t0 = time.perf_counter()
            n = d.fire_due(clock.t)
            dt = time.perf_counter() - t0
            assert n == args.burst and len(ex.specs) == args.burst, (n, len(ex.specs))
            ex.finish()
            end_chains(d)
            if i:  # the first turn warms caches
                per_fire.append(dt / n * 1e6)
                handing.append((ex.handed - t0) / n * 1e6)
        d.state.close()
    return per_fire, handing


def run_threads(args) -> list[list[float]]:
    runner = StampRunner()
    ex = LocalExecutor(args.burst + 10)
    sys.setswitchinterval(0.0005)  # as the daemon does (Daemon.run)
    out = []
    handed: list[float] = []
    end_burst = ex.end_burst

    def timed_end_burst() -> None:
        handed.append(time.perf_counter())  # the loop has handed the whole burst out
        end_burst()

    ex.end_burst = timed_end_burst  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        d, clock = build(Path(tmp), args.jobs, args.burst, ex)
        ex.runner = runner  # the stamping runner instead of the daemon's
        for i in range(args.reps + 1):
            clock.t = AT + 60 * i
            runner.stamps = []
            time.sleep(0.05)
            t0 = time.perf_counter()
            n = d.fire_due(clock.t)
            assert n == args.burst
            deadline = time.monotonic() + 5
            while len(runner.stamps) < n and time.monotonic() < deadline:
                time.sleep(0.005)
            while ex.has_results() is False or len(ex._results) < n:
                time.sleep(0.001)
            end_chains(d)
            out.append(sorted((s - t0) * 1000.0 for s in runner.stamps) + [(handed[-1] - t0) * 1000.0])
        ex.shutdown(1.0, 1.0)
        d.state.close()
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--reps", type=int, default=20, help="at most 50 (the other jobs are an hour away)")
    p.add_argument("--mode", choices=("null", "threads"), default="null")
    args = p.parse_args()
    gc.collect()
    if args.mode == "null":
        per, handing = run_null(args)
        print(f"null executor, {args.jobs:,} jobs, {args.burst} due: handing out {statistics.median(handing):.2f} µs"
              f" a fire ({statistics.median(handing) * args.burst / 1000:.2f} ms for the burst; min"
              f" {min(handing):.2f} µs); with planning the next fires, fire_due {statistics.median(per):.2f} µs a fire"
              f" (median of {len(per)}; min {min(per):.2f})")
    else:
        runs = run_threads(args)
        handed = [r.pop() for r in runs]
        first, runs, first_handed = runs[0], runs[1:], handed.pop(0)
        p50 = [pct(r, 0.5) for r in runs]
        p99 = [pct(r, 0.99) for r in runs]
        last = [r[-1] for r in runs]
        print(f"threads, {args.jobs:,} jobs, {args.burst} due, from fire_due's call to each attempt's start"
              f" (median of {len(runs)} bursts): p50 {statistics.median(p50):.2f} ms, p99 {statistics.median(p99):.2f} ms,"
              f" last {statistics.median(last):.2f} ms (min–max of p99: {min(p99):.2f}–{max(p99):.2f});"
              f" the loop had handed all out after {statistics.median(handed):.2f} ms;"
              f" the first burst (cold): p50 {pct(first, 0.5):.2f}, p99 {pct(first, 0.99):.2f} ms,"
              f" handed out after {first_handed:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
