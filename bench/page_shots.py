"""Screenshots of the monitoring page for the README: the cards' strips, a job's page, its chart.

    .venv/bin/python bench/page_shots.py [--out docs]

A real daemon (``--http``) runs a few jobs against a local flaky target for about
25 s; one job also gets a week of history written beforehand through ``State`` (as
the daemon writes it), so that its chart has days to show. Then Debian's chromium
takes the pictures: docs/page-cards.png, docs/page-job.png, docs/page-chart.png.
"""

from __future__ import annotations

import argparse
import http.server
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crawlsched.state import State  # noqa: E402

CHROMIUM = os.environ.get("CRAWLSCHED_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def target() -> str:
    """/flaky answers 503, 200, 503, 503, 200 …; /down always 500; /ok always 200."""
    count = {"n": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200
            if self.path == "/flaky":
                with lock:
                    code = (503, 200, 503, 503, 200)[count["n"] % 5]
                    count["n"] += 1
            elif self.path == "/down":
                code = 500
            body = b"<html><body><h1>News</h1><script>alert(1)</script></body></html>\n" if code == 200 else b"busy\n"
            self.send_response(code)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def seed_week(state: State, job_id: str, now: datetime) -> None:
    """A week of a daily-at-09:05 job, a fire every 2 hours for the picture: mostly fine, some retries and failures."""
    rnd = random.Random(7)
    start = (now - timedelta(days=7)).replace(minute=5, second=0, microsecond=0)
    at = start
    while at < now - timedelta(hours=1):
        t = at.timestamp()
        roll = rnd.random()
        if roll < 0.06:
            state.record_not_run(job_id, t, "skipped", "still running: the previous run has not ended", now=t)
        elif roll < 0.09:
            state.record_not_run(job_id, t, "missed", "the daemon was down", now=t + 60)
        else:
            outcomes = ["success"] if roll < 0.7 else ["failed", "success"] if roll < 0.9 else ["failed", "failed", "failed"]
            for n, outcome in enumerate(outcomes, start=1):
                began = t + (n - 1) * 300 + rnd.random() * 2
                run_id = state.start_attempt(job_id, t, n, 3, trigger="schedule", started_at=began, pid=os.getpid())
                assert run_id is not None
                ok = outcome == "success"
                state.finish_attempt(run_id, status=outcome, finished_at=began + rnd.uniform(0.4, 3.5),
                                     message="saved 48213 bytes" if ok else "HTTP 503 Service Unavailable",
                                     http_status=200 if ok else 503, bytes=48213 if ok else None)
        at += timedelta(hours=2)
    state.clear_retry(job_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--seconds", type=float, default=25.0)
    args = parser.parse_args()
    out = Path(args.out)
    home = Path(tempfile.mkdtemp(prefix="crawlsched-shots-"))
    base_target = target()
    (home / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\nallow_http_commands = true\n')
    state = State(home / "crawlsched.db").open()
    env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), "TZ": "UTC"}
    env.pop("CRAWLSCHED_TOKEN", None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "crawlsched", "daemon", "--http", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(150):
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        add = lambda **body: requests.post(f"{base}/api/scheduler/job/add", json=body, timeout=5).json()["job_id"]  # noqa: E731
        daily = add(name="Daily Morning Crawl", at="09:05", url=f"{base_target}/ok", max_retries=2, retry_delay=300)
        seed_week(state, daily, datetime.now(timezone.utc))
        flaky = add(name="Flaky News", every="3s", url=f"{base_target}/flaky", max_retries=1, retry_delay=1)
        add(name="Always Down", every="4s", url=f"{base_target}/down", max_retries=3, retry_delay=2)
        add(name="Healthy Feed", every="5s", url=f"{base_target}/ok")
        add(name="Nightly Export", cron="30 2 * * *", command="echo exported", end_date=(datetime.now() + timedelta(days=60)).date().isoformat())
        paused = add(name="Weekly Report", cron="0 10 * * 1", url=f"{base_target}/ok")
        requests.post(f"{base}/api/scheduler/job/{paused}/pause", timeout=5)
        time.sleep(args.seconds)

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 980}, device_scale_factor=1)
            page.goto(f"{base}/scheduler")
            page.wait_for_function("() => document.querySelectorAll('[data-testid=run-strip] .cell').length > 10")
            page.wait_for_timeout(2500)
            page.screenshot(path=str(out / "page-cards.png"))
            page.goto(f"{base}/scheduler#job/{flaky}")
            page.locator('[data-testid="run"]').first.wait_for()
            page.locator('[data-testid="open-body"]').first.click()
            page.wait_for_function("() => document.querySelector('[data-testid=viewer-text]').textContent.length > 0")
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "page-job.png"), full_page=True)
            page.goto(f"{base}/scheduler#job/{daily}")
            page.locator('[data-testid="chart"] svg').wait_for()
            page.wait_for_timeout(500)
            page.locator(".jv-grid").screenshot(path=str(out / "page-chart.png"))
            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
            phone.goto(f"{base}/scheduler")
            phone.locator('[data-testid="run-strip"] .cell').first.wait_for()
            phone.wait_for_timeout(800)
            phone.screenshot(path=str(out / "page-phone.png"))
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    print(f"screenshots in {out} (home {home})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
