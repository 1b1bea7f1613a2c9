"""``crawlsched demo``: a self-contained first run (SPEC §9).

A small crawl target on 127.0.0.1, a demo job file in a temporary folder (one
healthy job, one flaky job that succeeds on its third attempt, one that always
fails), the real daemon as a child process for about 30 s, a live table, and
the folder left behind to look at.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from crawlsched.errors import DemoFailed


class _Target(BaseHTTPRequestHandler):
    """/healthy always answers; /flaky fails twice per run, then answers; /broken always fails."""

    flaky_calls = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path.startswith("/healthy"):
            self._answer(200, b"<html><body><h1>News of the day</h1></body></html>\n")
        elif self.path.startswith("/flaky"):
            with _Target.lock:
                _Target.flaky_calls += 1
                n = _Target.flaky_calls
            if n % 3 == 0:
                self._answer(200, b"finally there\n")
            else:
                self._answer(503, b"try again later\n")
        else:
            self._answer(500, b"broken target\n")

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def start_target() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=server.serve_forever, name="demo-target", daemon=True).start()
    return server


def write_jobs(folder: Path, port: int, tz: str) -> Path:
    from crawlsched.timing import today_in

    base = f"http://127.0.0.1:{port}"
    today = today_in(tz, datetime.now(timezone.utc)).isoformat()
    text = f"""# crawlsched demo: three jobs against a small target on 127.0.0.1:{port}.
# Edit this file while the daemon runs: it picks up changes within 2 s.

[defaults]
timezone = "{tz}"
max_concurrent = 4

# Healthy: every 10 seconds, always succeeds.
[[jobs]]
id = "healthy"
start_date = {today}
name = "Healthy news crawl"
every = "10s"
url = "{base}/healthy"

# Flaky: answers 503 twice, then 200 - succeeds on its third attempt.
[[jobs]]
id = "flaky"
start_date = {today}
name = "Flaky crawl"
every = "1h"
url = "{base}/flaky"
max_retries = 3
retry_delay = 3

# Broken: always 500 - three attempts, then "Max retries reached".
[[jobs]]
id = "broken"
start_date = {today}
name = "Broken crawl"
every = "1h"
url = "{base}/broken"
max_retries = 2
retry_delay = 4
"""
    path = folder / "jobs.toml"
    path.write_text(text)
    return path


#: The installed program, whatever the working directory holds: ``-P`` (Python 3.11) keeps the
#: current folder off ``sys.path``, so a folder there named ``crawlsched`` cannot shadow the
#: package (plain ``-m`` imports it, and the daemon dies at once). Site-packages, and so an
#: editable install, are still used.
DAEMON_COMMAND = (sys.executable, "-P", "-m", "crawlsched", "daemon")
LAST_LINES = 12  # of the daemon's output, shown when it dies during the demo


def run_demo(seconds: float, show: Callable[[Path, Path], None], *, folder: Path | None = None,
             tz: str = "UTC") -> Path:
    """Run the demo for ``seconds``; ``show(jobs_file, home)`` is called about once a second.

    Raises ``DemoFailed`` (exit 1), with the daemon's last lines, when the daemon stops on its own.
    """
    folder = folder or Path(tempfile.mkdtemp(prefix="crawlsched-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    target = start_target()
    jobs = write_jobs(folder, target.server_address[1], tz)
    env = {**os.environ, "CRAWLSCHED_JOBS": str(jobs), "CRAWLSCHED_HOME": str(folder)}
    err_path = folder / "daemon.stderr"
    err = open(err_path, "wb")
    daemon = subprocess.Popen(list(DAEMON_COMMAND), env=env, stdout=err, stderr=err)
    began = time.monotonic()
    died: int | None = None
    try:
        deadline = began + seconds
        while time.monotonic() < deadline and daemon.poll() is None:
            show(jobs, folder)
            time.sleep(1)
        died = daemon.poll()
        show(jobs, folder)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=45)
            except subprocess.TimeoutExpired:
                daemon.kill()
        err.close()
        target.shutdown()
    if died is not None:
        how = f"was killed by signal {-died}" if died < 0 else f"exited with code {died}"
        raise DemoFailed(f"the demo's daemon stopped: it {how} after {time.monotonic() - began:.0f} s;"
                         f" its output is in {err_path}", _tail(err_path))
    return folder


def _tail(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-LAST_LINES:]
    except OSError:
        return []
