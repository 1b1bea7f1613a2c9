"""/metrics under load: scrape time, and the loop's fire lateness with and without back-to-back scrapes.

    .venv/bin/python bench/metrics.py                      # 1,000,000 history rows, 10,000 jobs, 30 s a phase
    .venv/bin/python bench/metrics.py --rows 100000 --seconds 10   # a quick look

A home is filled with ``--jobs`` jobs (``--fast`` of them every second running ``true``, the rest
once a day, far from now) and ``--rows`` history rows spread over the last two weeks (with the
per-job counters the state database keeps beside them). The daemon runs with ``--http``; then:

1. ``--seconds`` with no scrape: the fast jobs' lateness (``started_at - scheduled_for`` of each
   first attempt, read from the database afterwards) is the baseline;
2. ``--seconds`` of back-to-back scrapes from this process (one keep-alive connection, the next
   request as soon as the answer is in): each scrape's time, and the same lateness (a scrape
   within a second of the last full one gets its body again, so this is one full render a second
   plus cheap repeats);
3. ``--seconds`` of scrapes 1.1 s apart, each a full render: its time, and the same lateness.

It prints both and the machine; it needs nothing but the project venv.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crawlsched.state import State  # noqa: E402

OUTCOMES = ("success",) * 8 + ("failed", "interrupted")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values_ms: list[float]) -> str:
    if not values_ms:
        return "no samples"
    return (f"n={len(values_ms)} p50 {percentile(values_ms, 50):.2f} ms, p99 {percentile(values_ms, 99):.2f} ms,"
            f" max {max(values_ms):.2f} ms")


def write_jobs(path: Path, jobs: int, fast: int) -> list[str]:
    lines = ['[defaults]\ntimezone = "UTC"\nmax_concurrent = 16\n']
    hour = (time.gmtime().tm_hour + 12) % 24  # the daily jobs are half a day away: none fires during the run
    for n in range(jobs):
        if n < fast:
            lines.append(f'[[jobs]]\nid = "fast-{n}"\nevery = "1s"\ncommand = "true"\n')
        else:
            lines.append(f'[[jobs]]\nid = "job-{n:05d}"\nat = "{hour:02d}:{n % 60:02d}"\nurl = "http://127.0.0.1:9/{n}"\n'
                         'start_date = 2025-01-01\n')
    path.write_text("\n".join(lines))
    return [f"fast-{n}" for n in range(fast)] + [f"job-{n:05d}" for n in range(fast, jobs)]


def fill_history(db: Path, ids: list[str], rows: int) -> None:
    """``rows`` finished attempts over the last 14 days, and the counters the daemon would have kept."""
    State(db).open().close()  # the schema, every migration applied
    con = sqlite3.connect(db)
    now = time.time()
    rng = random.Random(1)
    step = 14 * 86400 / rows
    batch = []
    con.execute("BEGIN")
    for i in range(rows):
        t = now - 14 * 86400 + i * step
        status = rng.choice(OUTCOMES)
        batch.append((ids[i % len(ids)], t, status, t + 0.004, t + 0.5, "ok" if status == "success" else "exit code 1"))
        if len(batch) == 50_000:
            con.executemany("INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, status, started_at, finished_at,"
                            " message) VALUES (?, ?, 1, 1, ?, ?, ?, ?)", batch)
            batch.clear()
    if batch:
        con.executemany("INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, status, started_at, finished_at,"
                        " message) VALUES (?, ?, 1, 1, ?, ?, ?, ?)", batch)
    # What the daemon's transactions would have added up, row by row (migration 006's aggregate).
    con.execute("DELETE FROM job_counters")
    con.execute("INSERT INTO job_counters(job_id, success, failed, interrupted, last_success, last_failure)"
                " SELECT job_id, sum(status = 'success'), sum(status = 'failed'), sum(status = 'interrupted'),"
                " max(CASE WHEN status = 'success' THEN finished_at END),"
                " max(CASE WHEN status != 'success' THEN finished_at END) FROM runs GROUP BY job_id")
    con.execute("INSERT OR IGNORE INTO jobs_seen(job_id, first_seen) SELECT job_id, min(started_at) FROM runs GROUP BY job_id")
    con.execute("COMMIT")
    con.close()


def lateness(db: Path, fast: list[str], start: float, end: float) -> list[float]:
    con = sqlite3.connect(db, timeout=30)
    marks = ",".join("?" * len(fast))
    rows = con.execute(f"SELECT started_at - scheduled_for FROM runs WHERE attempt = 1 AND job_id IN ({marks})"
                       " AND scheduled_for >= ? AND scheduled_for < ?", (*fast, start, end)).fetchall()
    con.close()
    return [r[0] * 1000 for r in rows]


def scrape_loop(port: int, until: float, times: list[float], sizes: list[int], gzip: bool, pause: float = 0.0) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Accept-Encoding": "gzip"} if gzip else {}  # Prometheus sends it
    while time.time() < until:
        t0 = time.perf_counter()
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter() - t0) * 1000)
        sizes.append(len(body))
        assert response.status == 200, body[:200]
        if pause:
            time.sleep(pause)
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--fast", type=int, default=4, help="jobs due every second, whose lateness is measured")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--plain", action="store_true", help="scrape without Accept-Encoding: gzip (Prometheus sends it)")
    args = parser.parse_args()

    tree = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    print(f"tree {tree}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
          f" Linux {platform.release()}")
    with tempfile.TemporaryDirectory(prefix="crawlsched-metrics-") as folder:
        home = Path(folder)
        ids = write_jobs(home / "jobs.toml", args.jobs, args.fast)
        t0 = time.perf_counter()
        fill_history(home / "crawlsched.db", ids, args.rows)
        print(f"filled {args.rows:,} history rows for {args.jobs:,} jobs in {time.perf_counter() - t0:.1f} s")
        port = args.port or _free_port()
        env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), "TZ": "UTC",
               "XDG_CACHE_HOME": str(home / "xdg-cache"), "PYTHONPATH": str(REPO)}
        log = open(home / "daemon.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "crawlsched", "daemon", "--http", f"127.0.0.1:{port}"], env=env,
                                stdout=log, stderr=log, cwd=home)
        try:
            deadline = time.time() + 120
            while b"daemon ready" not in (home / "daemon.log").read_bytes():
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit((home / "daemon.log").read_text(errors="replace")[-3000:])
                time.sleep(0.2)
            time.sleep(3)  # the HTTP server and the first fires settle
            quiet_start = time.time()
            cpu0 = _cpu_seconds(proc.pid)
            time.sleep(args.seconds)
            quiet_end = time.time()
            cpu_rate = (_cpu_seconds(proc.pid) - cpu0) / (quiet_end - quiet_start)  # the fast jobs' own cost
            times: list[float] = []
            sizes: list[int] = []
            cpu0 = _cpu_seconds(proc.pid)
            scraper = threading.Thread(target=scrape_loop, args=(port, quiet_end + args.seconds, times, sizes, not args.plain))
            scraper.start()
            scraper.join()
            busy_end = time.time()
            cpu_busy = _cpu_seconds(proc.pid) - cpu0
            spaced: list[float] = []
            cpu0 = _cpu_seconds(proc.pid)
            scrape_loop(port, busy_end + args.seconds, spaced, [], not args.plain, 1.1)
            spaced_end = time.time()
            cpu_spaced = _cpu_seconds(proc.pid) - cpu0 - cpu_rate * (spaced_end - busy_end)
            cpu_busy -= cpu_rate * (busy_end - quiet_end)
            time.sleep(2)  # the last attempts are written
        finally:
            proc.terminate()
            proc.wait(60)
            log.close()
        fast = ids[: args.fast]
        quiet = lateness(home / "crawlsched.db", fast, quiet_start, quiet_end)
        busy = lateness(home / "crawlsched.db", fast, quiet_end, busy_end)
        apart = lateness(home / "crawlsched.db", fast, busy_end, spaced_end)
        result = {"tree": tree, "rows": args.rows, "jobs": args.jobs, "scrapes": len(times),
                  "scrape_ms": {"p50": percentile(times, 50), "p99": percentile(times, 99), "max": max(times)},
                  "body_bytes": sizes[-1] if sizes else 0, "gzip": not args.plain,
                  "daemon_cpu_ms_per_scrape": cpu_busy * 1000 / max(1, len(times)),
                  "lateness_ms_no_scrapes": {"p50": percentile(quiet, 50), "p99": percentile(quiet, 99), "max": max(quiet)},
                  "lateness_ms_scraping": {"p50": percentile(busy, 50), "p99": percentile(busy, 99), "max": max(busy)},
                  "spaced_scrape_ms": {"p50": percentile(spaced, 50), "p99": percentile(spaced, 99), "max": max(spaced)},
                  "daemon_cpu_ms_per_spaced_scrape": cpu_spaced * 1000 / max(1, len(spaced)),
                  "lateness_ms_spaced": {"p50": percentile(apart, 50), "p99": percentile(apart, 99), "max": max(apart)}}
        print(f"scrapes, back to back: {summary(times)}; {result['body_bytes']:,} bytes each"
              f" ({'gzip' if not args.plain else 'plain'}); daemon CPU {result['daemon_cpu_ms_per_scrape']:.1f} ms a scrape"
              " (the fast jobs' own CPU taken out)")
        print(f"fire lateness, no scrapes:   {summary(quiet)}")
        print(f"fire lateness, while scraped: {summary(busy)}")
        print(f"scrapes 1.1 s apart (each a full render): {summary(spaced)};"
              f" daemon CPU {result['daemon_cpu_ms_per_spaced_scrape']:.1f} ms a scrape (the fast jobs' own CPU taken out)")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"fire lateness, scraped every 1.1 s: {summary(apart)}")
        print(json.dumps(result))
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
