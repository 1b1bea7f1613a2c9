"""Attempts per second through the queue with 1, 2 and 4 `crawlsched worker` processes (SPEC §10).

A throwaway PostgreSQL cluster (tests/helpers/postgres.py); for each worker count a fresh
database, the workers started and ready, then N attempts of a no-op command job (`true`) queued
in one transaction exactly as the daemon queues a burst (crawlsched.state.queue.start_queued:
the running rows and their procrastinate jobs together). Each attempt is taken over, run by the
crawl code (a real process spawn), closed with its row, its outcome recorded for the daemon.

Rate = N / (last finished_at - first started_at), the time the workers were busy with them (the
definition bench/cluster.py uses); "wall" also counts from the queueing commit to the last close.

    .venv/bin/python bench/workers_throughput.py [--attempts 200] [--concurrency 1] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from helpers.postgres import remove_cluster, start_cluster  # noqa: E402

from crawlsched.executor import AttemptSpec, spec_to_json  # noqa: E402
from crawlsched.model import Job, ScheduleKind  # noqa: E402
from crawlsched.state import CLAIM_DAEMON, Owner  # noqa: E402


def start_workers(count: int, concurrency: int, dsn: str, root: Path) -> list[tuple[subprocess.Popen, Path]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLSCHED_")}
    env["CRAWLSCHED_STATE"] = dsn
    out = []
    for i in range(count):
        home = root / f"w{i}"
        home.mkdir(parents=True)
        err = home / "stderr"
        proc = subprocess.Popen([sys.executable, "-m", "crawlsched", "worker", "--concurrency", str(concurrency),
                                 "--home", str(home)], env=env, stdout=err.open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=home)
        out.append((proc, err))
    deadline = time.monotonic() + 60
    for proc, err in out:
        while "worker ready" not in err.read_text(errors="replace"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"worker did not start: {err.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
    time.sleep(1.0)  # procrastinate's worker loop is listening after "ready"
    return out


def one_run(cluster, workers: int, concurrency: int, attempts: int) -> dict:
    from crawlsched.state import queue as q
    from crawlsched.state.postgres import PostgresStore
    from crawlsched.workers.queue import defer

    name = f"bench_w{workers}_{os.getpid()}"
    cluster.psql(f"CREATE DATABASE {name}")
    dsn = cluster.dsn(name)
    store = PostgresStore(dsn).open()
    root = Path(tempfile.mkdtemp(prefix="workers-bench-"))
    procs = start_workers(workers, concurrency, dsn, root)
    try:
        owner = Owner(CLAIM_DAEMON, os.getpid(), None)
        items = []
        for i in range(attempts):
            job = Job(id=f"noop-{i}", name=f"noop-{i}", kind=ScheduleKind.EVERY, spec="1h", timezone="UTC",
                      command="true", max_retries=0)
            spec = AttemptSpec.of(job, 1_000_000.0, 1, "schedule")
            items.append({"job_id": job.id, "scheduled_for": spec.scheduled_for, "attempt": 1, "max_attempts": 1,
                          "trigger": "schedule", "payload": {"spec": spec_to_json(spec), "grace": 30.0}})
        queued_at = time.time()
        q.start_queued(store, items, owner, defer, started_at=queued_at)
        deadline = time.monotonic() + 600
        while True:
            left = store.db.read_tuples("SELECT count(*) FROM runs WHERE status = 'running'")[0][0]
            if not left:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left} attempts still running after 600 s")
            time.sleep(0.05)
        first, last, ok = store.db.read_tuples(
            "SELECT min(started_at), max(finished_at), sum(CASE WHEN status = 'success' THEN 1 ELSE 0 END) FROM runs")[0]
        return {"workers": workers, "concurrency": concurrency, "attempts": attempts, "succeeded": int(ok),
                "busy_s": round(last - first, 3), "rate_per_s": round(attempts / (last - first), 1),
                "wall_s": round(last - queued_at, 3), "wall_rate_per_s": round(attempts / (last - queued_at), 1)}
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1, help="--concurrency of each worker")
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    cluster = start_cluster()
    try:
        rows = [one_run(cluster, int(w), args.concurrency, args.attempts) for w in args.workers.split(",")]
    finally:
        remove_cluster(cluster)
    print(f"{'workers':>7} {'conc.':>5} {'attempts':>8} {'ok':>5} {'busy s':>7} {'att/s':>6} {'wall s':>7} {'wall att/s':>10}")
    for r in rows:
        print(f"{r['workers']:>7} {r['concurrency']:>5} {r['attempts']:>8} {r['succeeded']:>5} {r['busy_s']:>7}"
              f" {r['rate_per_s']:>6} {r['wall_s']:>7} {r['wall_rate_per_s']:>10}")
    print(json.dumps({"cpus": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
