"""What the monitoring page costs: API latency, render time of 1,000 cards, the daemon's CPU per open tab.

    .venv/bin/python bench/page_bench.py [--jobs 1000] [--runs 100000] [--window 30]

Builds a home with ``--jobs`` jobs (daily at 03:00 and similar: nothing fires during
the measurement) and ``--runs`` history rows (attempts with retries, skipped and
missed fires, spread over 60 days), starts the real daemon with ``--http``, then:

- times ``GET /api/scheduler/jobs``, ``/recent`` (cold, 200 and 304), a job's
  runs page and its stats, 60 requests each (p50 / p95 / max, ms, client side);
- opens the page in Debian's chromium and times navigation → 1,000 cards with
  their strips painted (``performance.now()`` in the page);
- measures the daemon's CPU (``/proc/<pid>/task/*/schedstat``) over ``--window``
  seconds with no tab, then with one tab open, and counts the tab's requests.

Prints a markdown table (docs/BENCHMARKS.md has the figures).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cpu_ns  # noqa: E402

from crawlsched.state import State  # noqa: E402

CHROMIUM = os.environ.get("CRAWLSCHED_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_home(home: Path, jobs: int, runs: int) -> list[str]:
    lines = ['[defaults]\ntimezone = "UTC"\nurl = "http://127.0.0.1:9/"\n']
    ids = [f"job-{i:05d}" for i in range(jobs)]
    for i, job_id in enumerate(ids):
        lines.append(f'[[jobs]]\nid = "{job_id}"\nname = "Job {i:05d}"\nat = "03:{i % 60:02d}"\n'
                     f'start_date = 2026-01-01\nmax_retries = 2\nretry_delay = 300\n')
    (home / "jobs.toml").write_text("\n".join(lines))
    state = State(home / "crawlsched.db").open()
    rnd = random.Random(1)
    now = time.time()
    rows = []
    per_job = max(1, runs // jobs)
    for job_id in ids:
        t = now - 60 * 86400
        step = 60 * 86400 / per_job
        made = 0
        while made < per_job:
            t += step
            roll = rnd.random()
            if roll < 0.05:
                rows.append((job_id, t, 0, 0, "schedule", "skipped", None, t, "still running"))
                made += 1
                continue
            outcomes = ["success"] if roll < 0.8 else ["failed", "success"] if roll < 0.95 else ["failed", "failed", "failed"]
            for n, status in enumerate(outcomes, start=1):
                if made >= per_job:
                    break
                began = t + (n - 1) * 300
                rows.append((job_id, t, n, 3, "schedule", status, began, began + 1.5,
                             "saved 1234 bytes" if status == "success" else "HTTP 503 Service Unavailable"))
                made += 1
    rows.sort(key=lambda r: r[6] or r[7])  # ids grow with time, as the daemon writes them
    with sqlite3.connect(state.path) as c:  # synthetic history, straight into the file
        c.executemany("INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, trigger, status, started_at,"
                      " finished_at, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        c.executemany("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) VALUES (?, ?)", [(j, now - 61 * 86400) for j in ids])
        c.execute("UPDATE jobs_seen SET last_attempt_id = (SELECT max(id) FROM runs WHERE runs.job_id = jobs_seen.job_id"
                  " AND attempt > 0), last_fire = (SELECT max(scheduled_for) FROM runs WHERE runs.job_id = jobs_seen.job_id)")
    state.close()
    return ids


def timed(session: requests.Session, url: str, n: int, headers: dict | None = None) -> dict:
    times = []
    status = None
    for _ in range(n):
        t0 = time.perf_counter()
        r = session.get(url, headers=headers or {}, timeout=30)
        times.append((time.perf_counter() - t0) * 1000)
        status = r.status_code
    times.sort()
    return {"p50": statistics.median(times), "p95": times[int(len(times) * 0.95) - 1], "max": times[-1], "status": status,
            "bytes": len(r.content)}


def cpu_per_request(home: Path, job: str, n: int = 20) -> list[tuple[str, str]]:
    """The daemon's own CPU per request (``time.process_time``, in process through Flask's test client):
    unlike the wall times above, what other processes on a loaded machine do does not count."""
    import logging

    from crawlsched.daemon import Daemon, DaemonView, InlineExecutor
    from crawlsched.store import JobStore
    from crawlsched.web import create_app

    d = Daemon(JobStore(home / "jobs.toml", cache_dir=home / ".cache"), State(home / "crawlsched.db"), home,
               logging.getLogger("bench"), executor=InlineExecutor(), notify=lambda _m: False, duties=False)
    d.start()
    try:
        app = create_app(d.store, d.state, DaemonView(d), home=d.home, log=d.log, token=None, bind_host="127.0.0.1", bind_port=80)
        client = app.test_client()
        cached = app.view_functions[next(r.endpoint for r in app.url_map.iter_rules() if r.rule == "/api/scheduler/jobs")]
        out = []

        def cpu(name: str, url: str, headers: dict | None = None, before: Any = None) -> None:
            client.get(url)
            tag = client.get(url).headers.get("ETag")
            total = 0.0
            for _ in range(n):
                if before:
                    before()
                t0 = time.process_time()
                client.get(url, headers={"If-None-Match": tag} if headers == "etag" else {})
                total += time.process_time() - t0
            out.append((f"CPU per request: {name}", f"{total / n * 1000:.2f} ms"))

        cpu("GET /api/scheduler/jobs, built (cache cleared)", "/api/scheduler/jobs", before=lambda: setattr(cached, "_key", None))
        cpu("GET /api/scheduler/jobs, kept (200)", "/api/scheduler/jobs")
        cpu("GET /api/scheduler/jobs, 304", "/api/scheduler/jobs", headers="etag")
        cpu("GET /api/scheduler/recent, 200 (every strip)", "/api/scheduler/recent")
        cpu("GET /api/scheduler/recent, 304", "/api/scheduler/recent", headers="etag")
        cpu("GET …/runs (20 runs)", f"/api/scheduler/job/{job}/runs")
        cpu("GET …/stats (30 days)", f"/api/scheduler/job/{job}/stats?since=30d")
        return out
    finally:
        d.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=30.0, help="seconds of each CPU window")
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="crawlsched-page-bench-"))
    t0 = time.perf_counter()
    ids = build_home(home, args.jobs, args.runs)
    print(f"home {home}: {args.jobs} jobs, {args.runs} rows built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), "TZ": "UTC"}
    env.pop("CRAWLSCHED_TOKEN", None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (home / "daemon.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "crawlsched", "daemon", "--http", f"127.0.0.1:{port}"], env=env,
                            stdout=log, stderr=log)
    results: list[tuple[str, str]] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited: {(home / 'daemon.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        time.sleep(2)
        s = requests.Session()
        cold = timed(s, f"{base}/api/scheduler/recent", 1)
        job = ids[len(ids) // 2]
        figures = {
            "GET /api/scheduler/jobs": timed(s, f"{base}/api/scheduler/jobs", args.requests),
            "GET /api/scheduler/recent (first, cold cache)": cold,
            "GET /api/scheduler/recent (200)": timed(s, f"{base}/api/scheduler/recent", args.requests),
        }
        tag = s.get(f"{base}/api/scheduler/recent").headers["ETag"]
        figures["GET /api/scheduler/recent (304, If-None-Match)"] = timed(s, f"{base}/api/scheduler/recent", args.requests,
                                                                         {"If-None-Match": tag})
        figures["GET /api/scheduler/job/<id>/runs (20 runs)"] = timed(s, f"{base}/api/scheduler/job/{job}/runs", args.requests)
        figures["GET …/runs?status=failed,interrupted"] = timed(s, f"{base}/api/scheduler/job/{job}/runs?status=failed,interrupted", args.requests)
        figures["GET …/runs?before=… (page 2)"] = timed(
            s, f"{base}/api/scheduler/job/{job}/runs?before={s.get(f'{base}/api/scheduler/job/{job}/runs').json()['next_before']}", args.requests)
        figures["GET /api/scheduler/job/<id>/stats (30 days)"] = timed(s, f"{base}/api/scheduler/job/{job}/stats?since=30d", args.requests)
        for name, f in figures.items():
            results.append((name, f"p50 {f['p50']:.1f} ms, p95 {f['p95']:.1f} ms, max {f['max']:.1f} ms ({f['status']}, {f['bytes']:,} B)"))

        pid = proc.pid
        c0 = cpu_ns(pid)
        time.sleep(args.window)
        idle = (cpu_ns(pid) - c0) / 1e9 / args.window * 100

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            loads = []
            for _ in range(4):  # the first load finds the daemon's caches cold; the others are what a reload costs
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{base}/scheduler")
                page.wait_for_function(
                    "n => document.querySelectorAll('[data-testid=job-card]').length === n"
                    " && document.querySelectorAll('[data-testid=run-strip] .cell').length >= n", arg=len(ids), timeout=60_000)
                loads.append(page.evaluate("() => performance.now()"))
                page.close()
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            count = {"n": 0, "bytes": 0}
            page.on("request", lambda r: count.__setitem__("n", count["n"] + 1) if "/api/" in r.url else None)
            page.goto(f"{base}/scheduler")
            page.wait_for_function("n => document.querySelectorAll('[data-testid=job-card]').length === n", arg=len(ids),
                                   timeout=60_000)
            page.wait_for_timeout(2500)
            count["n"] = 0
            c0 = cpu_ns(pid)
            t_start = time.monotonic()
            page.wait_for_timeout(args.window * 1000)
            spent = time.monotonic() - t_start
            with_tab = (cpu_ns(pid) - c0) / 1e9 / spent * 100
            rate = count["n"] / spent
            browser.close()
        results.append(("page: navigation → 1,000 cards with strips, first load", f"{loads[0]:.0f} ms"))
        results.append(("page: the same, reloads (median of 3)", f"{statistics.median(loads[1:]):.0f} ms ({', '.join(f'{x:.0f}' for x in loads[1:])})"))
        results.append(("daemon CPU, no tab", f"{idle:.2f} % of a core"))
        results.append(("daemon CPU, one tab open", f"{with_tab:.2f} % of a core (+{with_tab - idle:.2f} % for the tab)"))
        results.append(("requests the tab sends", f"{rate:.2f} per s"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    results.extend(cpu_per_request(home, ids[len(ids) // 2]))
    print(f"\n{args.jobs:,} jobs, {args.runs:,} history rows; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| measure | figure |\n|---|---|")
    for name, value in results:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
