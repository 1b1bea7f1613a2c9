#!/usr/bin/env python3
"""One peer-scheduler measurement, run in bench/.venv-peers (never in the project venv).

    python bench/peers.py --peer {apscheduler,schedule-tick,schedule-idle,floor} \
        --jobs 10000 --burst 200 --at <epoch, whole second> --out result.json [--idle-seconds 60]
    python bench/peers.py --peer ... --single 60 --at <epoch, whole second> --out result.json

Creates `jobs` jobs: `burst` of them due at `--at`, the rest at daily instants 1 h to 23 h away.
Each job function records time.time_ns() on entry (then appends under a lock).
When set up and started it prints one line `READY` on stdout; the orchestrator (bench/run.py)
then measures idle CPU (/proc/<pid>/task/*/schedstat) and VmRSS from the outside, before the
burst.  After the burst (all `burst` entries recorded, or --at + --timeout) it writes the JSON
result and exits.

With `--single N` there is one job instead, due every second from `--at` on; the
lateness of each of its first N fires is recorded (for `schedule`, whose `every(1).seconds`
plans each run one second after the previous one ended, against the job's own `next_run`).

The process runs with TZ=UTC (the orchestrator sets it); times for `schedule` are local time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

FAR_MIN_S = 3600  # far-away jobs: at least 1 h after the burst ...
FAR_SPAN_S = 22 * 3600  # ... spread over the following 22 h (daily triggers never wrap into the window)


class Recorder:
    def __init__(self, burst: int) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[int, int]] = []
        self.burst = burst
        self.burst_seen = 0
        self.done = threading.Event()

    def job(self, i: int) -> None:
        t = time.time_ns()  # on entry, before anything else
        with self.lock:
            self.entries.append((i, t))
            if i < self.burst:
                self.burst_seen += 1
                if self.burst_seen >= self.burst:
                    self.done.set()


def far_offset(k: int, n_far: int) -> int:
    """Whole-second offset from the burst instant for far-away job k (0 <= k < n_far)."""
    return FAR_MIN_S + (k * FAR_SPAN_S) // max(n_far, 1)


def hms(epoch: float) -> tuple[int, int, int]:
    t = time.localtime(epoch)
    return t.tm_hour, t.tm_min, t.tm_sec


def setup_apscheduler(args, rec: Recorder):
    from datetime import timezone

    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    sched = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=args.burst + 10)},
        job_defaults={"coalesce": False, "max_instances": 1, "misfire_grace_time": None},
        timezone=timezone.utc,
    )
    n_far = args.jobs - args.burst
    for i in range(args.jobs):
        when = args.at if i < args.burst else args.at + far_offset(i - args.burst, n_far)
        t = time.gmtime(when)
        trig = CronTrigger(hour=t.tm_hour, minute=t.tm_min, second=t.tm_sec, timezone=timezone.utc)
        sched.add_job(rec.job, trig, args=(i,), id=f"j{i:05d}")
    sched.start()

    def loop() -> None:
        rec.done.wait(timeout=max(0.0, args.at + args.timeout - time.time()))

    def stop() -> None:
        sched.shutdown(wait=False)

    return loop, stop


def _schedule_jobs(args, rec: Recorder):
    import schedule

    n_far = args.jobs - args.burst
    for i in range(args.jobs):
        when = args.at if i < args.burst else args.at + far_offset(i - args.burst, n_far)
        h, m, s = hms(when)
        schedule.every().day.at(f"{h:02d}:{m:02d}:{s:02d}").do(rec.job, i)
    return schedule


def setup_schedule_tick(args, rec: Recorder):
    schedule = _schedule_jobs(args, rec)
    deadline = args.at + args.timeout

    def loop() -> None:
        while not rec.done.is_set() and time.time() < deadline:
            schedule.run_pending()
            if rec.done.is_set():
                break
            time.sleep(1)

    return loop, lambda: None


def setup_schedule_idle(args, rec: Recorder):
    schedule = _schedule_jobs(args, rec)
    deadline = args.at + args.timeout

    def loop() -> None:
        while not rec.done.is_set() and time.time() < deadline:
            idle = schedule.idle_seconds()
            if idle is None:
                break
            if idle > 0:
                time.sleep(min(idle, max(0.0, deadline - time.time())))
            schedule.run_pending()

    return loop, lambda: None


def setup_floor(args, rec: Recorder):
    """The floor: a Python process waking at an absolute instant.

    --floor-mode inline (default): one thread sleeps until the instant, then starts the
    `burst` trivial jobs one after another -- the least any in-process scheduler can do.
    --floor-mode threads: `burst` threads each sleep until the instant (shows the GIL convoy
    of many threads waking at once: several ms on 2 cores).
    """
    if args.floor_mode == "threads":
        def waiter(i: int) -> None:
            delay = args.at - time.time()
            if delay > 0:
                time.sleep(delay)
            rec.job(i)

        threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(args.burst)]
    else:
        def sleeper() -> None:
            delay = args.at - time.time()
            if delay > 0:
                time.sleep(delay)
            for i in range(args.burst):
                rec.job(i)

        threads = [threading.Thread(target=sleeper, daemon=True)]
    for th in threads:
        th.start()

    def loop() -> None:
        rec.done.wait(timeout=max(0.0, args.at + args.timeout - time.time()))

    return loop, lambda: None


# --------------------------------------------------------------------------- one job

class SingleRecorder:
    """One job's fires: lateness (ms) of each against its instant; done after `fires` of them."""

    def __init__(self, fires: int) -> None:
        self.fires = fires
        self.lateness_ms: list[float] = []
        self.done = threading.Event()

    def record(self, instant: float, t_ns: int) -> None:
        if len(self.lateness_ms) < self.fires:
            self.lateness_ms.append((t_ns - instant * 1e9) / 1e6)
        if len(self.lateness_ms) >= self.fires:
            self.done.set()


def single_apscheduler(args, rec: SingleRecorder):
    from datetime import datetime, timezone

    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    def job() -> None:
        t = time.time_ns()
        rec.record(args.at + round(t / 1e9 - args.at), t)  # instants are whole seconds from --at

    sched = BackgroundScheduler(executors={"default": ThreadPoolExecutor(max_workers=10)},
                                job_defaults={"coalesce": False, "max_instances": 1, "misfire_grace_time": None},
                                timezone=timezone.utc)
    sched.add_job(job, IntervalTrigger(seconds=1, start_date=datetime.fromtimestamp(args.at, timezone.utc)))
    sched.start()
    return (lambda: rec.done.wait(args.single + args.timeout)), (lambda: sched.shutdown(wait=False))


def _single_schedule(args, rec: SingleRecorder, tick: bool):
    import schedule

    def job() -> None:
        t = time.time_ns()
        rec.record(the_job.next_run.timestamp(), t)  # next_run is still this run's instant

    the_job = schedule.every(1).seconds.do(job)
    deadline = time.time() + args.single + args.timeout

    def loop() -> None:
        while not rec.done.is_set() and time.time() < deadline:
            if tick:
                schedule.run_pending()
                time.sleep(1)
                continue
            idle = schedule.idle_seconds()
            if idle is not None and idle > 0:
                time.sleep(idle)
            schedule.run_pending()

    return loop, lambda: None


def single_floor(args, rec: SingleRecorder):
    def sleeper() -> None:
        for k in range(args.single):
            instant = args.at + k
            delay = instant - time.time()
            if delay > 0:
                time.sleep(delay)
            rec.record(instant, time.time_ns())

    threading.Thread(target=sleeper, daemon=True).start()
    return (lambda: rec.done.wait(args.single + args.timeout)), (lambda: None)


SINGLE_SETUPS = {
    "apscheduler": single_apscheduler,
    "schedule-tick": lambda args, rec: _single_schedule(args, rec, tick=True),
    "schedule-idle": lambda args, rec: _single_schedule(args, rec, tick=False),
    "floor": single_floor,
}


SETUPS = {
    "apscheduler": setup_apscheduler,
    "schedule-tick": setup_schedule_tick,
    "schedule-idle": setup_schedule_idle,
    "floor": setup_floor,
}


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    try:
        from importlib.metadata import version

        for dist in ("APScheduler", "schedule"):
            try:
                out[dist] = version(dist)
            except Exception:
                pass
    except Exception:
        pass
    return out


def vm_rss_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", required=True, choices=sorted(SETUPS))
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--at", type=float, required=True, help="epoch of the burst instant (a whole second)")
    p.add_argument("--out", required=True)
    p.add_argument("--idle-seconds", type=float, default=0.0,
                   help="only checked: warns on stderr if the burst is too close for an idle window this long")
    p.add_argument("--timeout", type=float, default=30.0, help="give up this many seconds after --at")
    p.add_argument("--floor-mode", choices=("inline", "threads"), default="inline")
    p.add_argument("--single", type=int, default=0, metavar="N",
                   help="one job due every second from --at: record its first N fires")
    args = p.parse_args(argv)
    if args.at != int(args.at):
        p.error("--at must be a whole second")
    if args.single:
        return main_single(args)
    if not 0 < args.burst <= args.jobs and args.peer != "floor":
        p.error("need 0 < burst <= jobs")

    t0 = time.perf_counter()
    rec = Recorder(args.burst)
    loop, stop = SETUPS[args.peer](args, rec)
    setup_s = time.perf_counter() - t0
    left = args.at - time.time()
    if left < args.idle_seconds:
        print(f"peers.py: only {left:.1f} s left before the burst, less than --idle-seconds "
              f"{args.idle_seconds}", file=sys.stderr)
    print("READY", flush=True)

    loop()
    stop()

    at_ns = int(args.at) * 1_000_000_000
    with rec.lock:
        entries = list(rec.entries)
    lateness = sorted((t - at_ns) / 1e6 for i, t in entries if i < args.burst)
    result = {
        "peer": args.peer,
        "floor_mode": args.floor_mode if args.peer == "floor" else None,
        "jobs": args.jobs,
        "burst": args.burst,
        "at": args.at,
        "setup_s": setup_s,
        "lateness_ms": lateness,
        "missing": args.burst - len(lateness),
        # anything that ran although it was not due around the burst (should be 0)
        "unexpected": sum(1 for i, _ in entries if i >= args.burst),
        "early": sum(1 for i, t in entries if i < args.burst and t < at_ns),
        "rss_kb_end": vm_rss_kb(),
        "versions": versions(),
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # don't wait for pool threads


def main_single(args) -> int:
    rec = SingleRecorder(args.single)
    loop, stop = SINGLE_SETUPS[args.peer](args, rec)
    print("READY", flush=True)
    loop()
    stop()
    lateness = sorted(rec.lateness_ms[:args.single])
    result = {"peer": args.peer, "fires": args.single, "at": args.at, "lateness_ms": lateness,
              "missing": args.single - len(lateness), "early": sum(1 for x in lateness if x < 0),
              "versions": versions()}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
