#!/usr/bin/env python3
"""Celery beat + Celery workers over Redis, measured with bench/cluster.py. Runs in bench/.venv-peers.

    bench/.venv-peers/bin/python bench/celery_peer.py --out result.json [--workers 1,2,4]
        [--jobs 10000] [--burst 200] [--noop-tasks 2000] [--http-tasks-per-worker 100]

bench/run.py calls it for `--only celery` (and installs Celery there first). It starts Debian's
redis-server itself (a free loopback port, a temp dir, no persistence), and per measurement one
`celery worker` (prefork pool, `--concurrency N`) and, for the burst, one `celery beat` (the
default PersistentScheduler, or with `--beat redbeat` celery-redbeat's RedBeatScheduler; 10,000
entries in `beat_schedule`; see bench/celery_app.py). Every
process it starts is in its own session and stopped by its process group.

When redis-server is missing it tries `apt-get install -y redis-server` (as root only); when it
still cannot start Redis it prints `SKIP: <why>` and exits 3.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import cluster  # noqa: E402
from common import cpu_ns, sleep_until, vm_rss_kb  # noqa: E402

SKIP_EXIT = 3


class Skip(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_redis() -> str:
    exe = shutil.which("redis-server")
    if exe:
        return exe
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("redis-server not found: apt-get install -y redis-server")
        r = subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], capture_output=True, text=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            r = subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], capture_output=True,
                               text=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        exe = shutil.which("redis-server")
        if exe:
            return exe
        raise Skip("redis-server is missing and `apt-get install -y redis-server` failed: "
                   + (r.stderr.strip().splitlines() or ["?"])[-1])
    raise Skip("redis-server is missing: install Debian's redis-server (apt-get install -y redis-server)")


def stop_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM to the process group we started (its own session), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (pool processes)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(5)


class Redis:
    def __init__(self, tmp: Path) -> None:
        exe = find_redis()
        self.version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split()[2].removeprefix("v=")
        self.port = free_port()
        self.log = open(tmp / "redis.log", "w")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        import redis  # noqa: PLC0415
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.time() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.close()
                    raise Skip(f"redis-server did not start (see {tmp / 'redis.log'})") from None
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        stop_group(self.proc)
        self.log.close()


BEATS = {  # --beat name -> (row name, `celery beat --scheduler` or None for the default)
    "default": ("celery", None),  # PersistentScheduler: what `celery beat` runs unless told
    "redbeat": ("celery+redbeat", "redbeat.RedBeatScheduler"),  # entries in Redis, due ones by ZRANGEBYSCORE
}


LATENESS_IS = {  # --burst-task -> what a burst's start is
    "call": "the task body's first line (a function call)",
    "command": "the command's own clock when it ran (`date +%s.%N` run by the task)",
}


class CelerySystem:
    """bench/cluster.py's System for Celery beat + a prefork `celery worker` over Redis."""

    def __init__(self, tmp: Path, redis: "Redis", beat: str = "default", burst_task: str = "call") -> None:
        self.tmp = tmp
        self.burst_task = burst_task  # celery_app.BURST_TASKS: a function call, or a command in its own process
        self.redis = redis
        self.name, self.scheduler = BEATS[beat]
        self.py = sys.executable
        self.versions = {"celery": md.version("celery"), "kombu": md.version("kombu"),
                         "redis-py": md.version("redis"), "redis-server": self.redis.version}
        if self.scheduler:
            self.versions["celery-redbeat"] = md.version("celery-redbeat")
        self.beat_ready_seen: list[float] = []
        os.environ["BENCH_BROKER"] = self.redis.url  # the producer (this process) imports celery_app
        import celery_app  # noqa: PLC0415
        self.app = celery_app.app

    # -- processes
    def _env(self, record: Path, ready: Path, **extra) -> dict:
        env = dict(os.environ, TZ="UTC", BENCH_BROKER=self.redis.url, BENCH_RECORD=str(record),
                   BENCH_READY=str(ready), PYTHONPATH=str(BENCH), PYTHONDONTWRITEBYTECODE="1")
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def _spawn(self, argv: list[str], env: dict, log_path: Path) -> subprocess.Popen:
        f = open(log_path, "ab")
        try:
            return subprocess.Popen([self.py, "-m", "celery", "-A", "celery_app", *argv], env=env, cwd=BENCH,
                                    stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            f.close()

    @staticmethod
    def _wait_ready(proc: subprocess.Popen, ready: Path, what: str, log_path: Path, timeout: float = 120.0) -> float:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if ready.exists():
                for line in ready.read_text().splitlines():
                    w, pid, ns = line.split()
                    if w == what and int(pid) == proc.pid:
                        return int(ns) / 1e9 - t0
            if proc.poll() is not None:
                raise RuntimeError(f"celery {what} exited {proc.returncode} before ready:\n"
                                   + log_path.read_text()[-2000:])
            time.sleep(0.05)
        raise RuntimeError(f"celery {what}: not ready within {timeout:.0f} s")

    def _worker(self, n: int, record: Path, ready: Path, wd: Path) -> tuple[subprocess.Popen, float]:
        log_path = wd / "worker.log"
        proc = self._spawn(["worker", "--pool", "prefork", "--concurrency", str(n), "--loglevel", "warning",
                            "--hostname", f"bench{n}@%h"], self._env(record, ready), log_path)
        try:
            return proc, self._wait_ready(proc, ready, "worker", log_path)
        except BaseException:
            stop_group(proc)
            raise

    def _reset(self) -> None:
        self.redis.client.flushdb()  # nothing left queued or unacked from the last measurement

    @staticmethod
    def _read(record: Path, kind: str) -> list[cluster.Record]:
        if not record.exists():
            return []
        out = []
        for line in record.read_text().splitlines():
            k, i, s, e = line.split()
            if k == kind:
                out.append(cluster.Record(int(i), int(s), int(e)))
        return out

    @staticmethod
    def _wait_records(record: Path, kind: str, want: int, until: float, procs) -> None:
        while time.time() < until:
            if record.exists():
                with open(record, "rb") as f:
                    got = sum(1 for line in f if line.startswith(kind.encode()))
                if got >= want:
                    return
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a celery process exited {p.returncode} during the measurement")
            time.sleep(0.1)

    # -- System
    def throughput(self, workers: int, kind: str, n: int, url: str, wd: Path) -> list[cluster.Record]:
        record, ready = wd / f"{kind}-{self.name}.records", wd / f"{kind}-{self.name}.ready"
        self._reset()
        task = "bench.noop" if kind == "noop" else "bench.http"
        with self.app.producer_or_acquire() as producer:
            for i in range(n):
                args = (i,) if kind == "noop" else (i, f"{url}/{kind}-{i}")
                self.app.send_task(task, args=args, producer=producer)
        proc, _ = self._worker(workers, record, ready, wd)
        try:
            self._wait_records(record, kind, n, time.time() + 60 + n * 0.2, [proc])
        finally:
            stop_group(proc)
        return self._read(record, kind)

    def burst_lead(self, jobs: int, workers: int) -> float:
        # worker start-up (a few s on a loaded machine) + beat's: twice the slowest seen; RedBeat
        # writes every entry into Redis at start (10,000 round trips and more), so it starts slower
        beat = max(self.beat_ready_seen, default=30.0 if self.scheduler else 5.0)
        return 15.0 + 2 * beat

    def burst(self, workers: int, jobs: int, burst: int, at: int, wd: Path) -> cluster.BurstResult:
        for attempt in range(3):  # a beat that was not ready in time: again at a later minute
            res = self._burst_once(workers, jobs, burst, at, wd, attempt)
            if res is not None:
                return res
            at = cluster.next_minute(time.time() + self.burst_lead(jobs, workers))
            log(f"  celery beat was not ready in time; again at {time.strftime('%H:%M:%S', time.gmtime(at))}Z")
        raise RuntimeError("celery beat was not ready before the instant, three times")

    def _burst_once(self, workers: int, jobs: int, burst: int, at: int, wd: Path,
                    attempt: int) -> cluster.BurstResult | None:
        record = wd / f"burst-{self.name}-{attempt}.records"
        ready = wd / f"burst-{self.name}-{attempt}.ready"
        self._reset()
        worker, _ = self._worker(workers, record, ready, wd)
        beat = None
        try:
            sleep_until(at - self.burst_lead(jobs, workers) + 10.0)
            log_path = wd / f"beat-{self.name}.log"
            sched = ["--scheduler", self.scheduler] if self.scheduler else []
            beat = self._spawn(["beat", "--loglevel", "warning", "--schedule", str(wd / f"beat-schedule-{attempt}"),
                                *sched],
                               self._env(record, ready, BENCH_AT=at, BENCH_JOBS=jobs, BENCH_BURST=burst,
                                         BENCH_BURST_TASK=self.burst_task),
                               log_path)
            ready_s = self._wait_ready(beat, ready, "beat", log_path, timeout=300.0)
            self.beat_ready_seen.append(ready_s)
            log(f"  celery beat ready in {ready_s:.1f} s, {at - time.time():.1f} s before the instant")
            if time.time() > at - 1.0:
                return None
            sleep_until(at - 1.0)
            extra = {"beat_rss_kib": vm_rss_kb(beat.pid), "attempt": attempt,
                     "lateness_is": LATENESS_IS[self.burst_task]}
            c0 = cpu_ns(beat.pid)
            # the default beat compares its whole schedule on every tick and sends one task a
            # tick: a burst among 10,000 entries takes it tens of seconds on this machine
            self._wait_records(record, "fire", burst, at + 300.0, [worker, beat])
            extra["beat_cpu_ms"] = (cpu_ns(beat.pid) - c0) / 1e6  # from 1 s before the instant to the last start
            time.sleep(1.0)  # anything sent twice would show up by now
        finally:
            if beat is not None:
                stop_group(beat)
            stop_group(worker)
        starts = [(r.id, r.start_ns) for r in self._read(record, "fire")]
        return cluster.BurstResult(starts, ready_s, extra, at=at)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--beat", default="default",
                   help="comma-separated beat schedulers, one full pass each: default (PersistentScheduler), "
                        "redbeat (celery-redbeat's RedBeatScheduler)")
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--noop-tasks", type=int, default=2000)
    p.add_argument("--http-tasks-per-worker", type=int, default=100)
    p.add_argument("--burst-task", choices=sorted(LATENESS_IS), default="call",
                   help="what each burst entry runs: call (a function; the default) or command (`date +%%s.%%N` "
                        "in its own process, as crawlsched's burst; its clock is the start)")
    p.add_argument("--workdir", type=Path, help="keep processes' logs and records here (default: a temp dir)")
    a = p.parse_args(argv)
    workers = [int(x) for x in a.workers.split(",")]
    tmp = a.workdir or Path(tempfile.mkdtemp(prefix="celery-peer-"))
    tmp.mkdir(parents=True, exist_ok=True)
    beats = [b.strip() for b in a.beat.split(",")]
    for b in beats:
        if b not in BEATS:
            p.error(f"--beat: unknown {b!r} (known: {', '.join(BEATS)})")
    try:
        redis = Redis(tmp)
    except Skip as e:
        print(f"SKIP: {e}", flush=True)
        a.out.write_text(json.dumps({"skipped": str(e)}))
        return SKIP_EXIT
    rows = []
    versions: dict = {}
    try:
        for b in beats:
            system = CelerySystem(tmp, redis, b, a.burst_task)
            versions.update(system.versions)
            log(f"{system.name}: celery {system.versions['celery']}, redis-server {redis.version} on "
                f"port {redis.port}, work dir {tmp}")
            rows += cluster.measure(system, tmp, workers=workers, jobs=a.jobs, burst=a.burst,
                                    noop_tasks=a.noop_tasks, http_tasks_per_worker=a.http_tasks_per_worker,
                                    log=log)
    finally:
        redis.close()
    config = {"pool": "prefork", "acks_late": True, "prefetch_multiplier": 1,
              "schedulers": {b: BEATS[b][1] or "celery.beat.PersistentScheduler" for b in beats},
              "schedule": "beat_schedule, one crontab(minute, hour) per entry", "jobs": a.jobs, "burst": a.burst,
              "burst_task": a.burst_task, "noop_tasks": a.noop_tasks, "http_tasks_per_worker": a.http_tasks_per_worker}
    a.out.write_text(json.dumps({"system": "celery", "versions": versions, "config": config,
                                 "rows": cluster.rows_json(rows)}, indent=1))
    if a.workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
