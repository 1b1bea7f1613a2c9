"""The Celery app the Celery peer runs (bench/celery_peer.py): imported by `celery beat`, `celery
worker` and the bench's producer, all in bench/.venv-peers. Never imported by crawlsched.

Configured from the environment, so that beat, the workers and the producer agree:

- BENCH_BROKER   redis://127.0.0.1:<port>/0 (the redis-server the bench started)
- BENCH_RECORD   file each task appends one line to: `<kind> <id> <start ns> <end ns>`
- BENCH_READY    file the `worker_ready` / `beat_init` signals append a line to
- BENCH_AT, BENCH_JOBS, BENCH_BURST   (beat only) the schedule: BENCH_JOBS entries in
  `beat_schedule`, BENCH_BURST of them due at BENCH_AT (a whole UTC minute), the others at
  daily minutes 1 h to 23 h away.
- BENCH_BURST_TASK   (beat only) what each entry runs: `call` (default: `bench.fire`, a function
  whose first line is the lateness end point) or `command` (`bench.command`: it runs `date
  +%s.%N` in a process of its own, as crawlsched's burst does, and the command's own clock is
  the end point).

It is configured as a Celery user who must not lose a crawl would deploy it: `task_acks_late`
(a task is acknowledged when it has run, so a worker that dies gives it back) with
`worker_prefetch_multiplier = 1` (what the Celery docs pair with acks_late for long tasks), no
result backend (`task_ignore_result`), the default prefork pool, and beat reading
`beat_schedule`, through its default PersistentScheduler or (`celery beat --scheduler
redbeat.RedBeatScheduler`) celery-redbeat's, which keeps the entries in the same Redis.
"""
from __future__ import annotations

import os
import subprocess
import time

from celery import Celery, signals
from celery.schedules import crontab

FAR_MIN_S = 3600  # the other entries: at least 1 h after the burst ...
FAR_SPAN_S = 22 * 3600  # ... spread over the next 22 h (daily crontabs never fall into the window)

app = Celery("crawlsched_bench", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    timezone="UTC",
    enable_utc=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_redirect_stdouts=False,
)


def _crontab_at(epoch: int) -> crontab:
    t = time.gmtime(epoch)
    return crontab(minute=t.tm_min, hour=t.tm_hour)


BURST_TASKS = {"call": "bench.fire", "command": "bench.command"}  # BENCH_BURST_TASK -> the entries' task


def beat_schedule(jobs: int, burst: int, at: int, task: str = "bench.fire") -> dict:
    """`jobs` entries running `task`, the first `burst` due at `at` (a whole minute), as a user writes them."""
    sched = {}
    n_far = jobs - burst
    for i in range(jobs):
        if i < burst:
            when = at
        else:
            k = i - burst
            when = at + FAR_MIN_S + ((k * FAR_SPAN_S) // max(n_far, 1)) // 60 * 60
        sched[f"job-{i:05d}"] = {"task": task, "schedule": _crontab_at(when), "args": (i,)}
    return sched


if os.environ.get("BENCH_AT"):
    app.conf.beat_schedule = beat_schedule(int(os.environ["BENCH_JOBS"]), int(os.environ["BENCH_BURST"]),
                                           int(os.environ["BENCH_AT"]),
                                           BURST_TASKS[os.environ.get("BENCH_BURST_TASK", "call")])

_fd: int | None = None


def _record(kind: str, i: int, start_ns: int, end_ns: int) -> None:
    """One line per task, one write(2) with O_APPEND: lines from several processes never mix."""
    global _fd
    if _fd is None:  # opened in the pool process itself, after the fork
        _fd = os.open(os.environ["BENCH_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{kind} {i} {start_ns} {end_ns}\n".encode())


@app.task(name="bench.fire")
def fire(i: int) -> None:
    t = time.time_ns()  # first thing in the task body: the lateness end point
    _record("fire", i, t, t)


def clock_ns(printed: str) -> int:
    """`date +%s.%N`'s output as nanoseconds since the epoch."""
    whole, _, frac = printed.strip().partition(".")
    return int(whole) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


@app.task(name="bench.command")
def command(i: int) -> None:
    """A burst entry as a command: `date +%s.%N` in its own process; its clock is the start recorded."""
    out = subprocess.run(["date", "+%s.%N"], capture_output=True, text=True, check=True).stdout
    _record("fire", i, clock_ns(out), time.time_ns())


@app.task(name="bench.noop")
def noop(i: int) -> None:
    t = time.time_ns()
    _record("noop", i, t, time.time_ns())


@app.task(name="bench.http")
def http(i: int, url: str) -> None:
    t = time.time_ns()
    import requests  # noqa: PLC0415  (imported once per process; cached after the first task)

    with requests.Session() as s:  # one session per attempt, as crawlsched's crawl does
        s.get(url, timeout=10).raise_for_status()
    _record("http", i, t, time.time_ns())


def _ready(what: str) -> None:
    path = os.environ.get("BENCH_READY")
    if path:
        with open(path, "a") as f:
            f.write(f"{what} {os.getpid()} {time.time_ns()}\n")


@signals.worker_ready.connect
def _worker_ready(**_):
    _ready("worker")


@signals.beat_init.connect
def _beat_init(**_):  # sent after the scheduler has read beat_schedule and synced its file
    _ready("beat")
