"""The real daemon as a subprocess with ``--http``: the page and API over the same files as the CLI."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

requests = pytest.importorskip("requests")



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def target() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>news</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/news"
    server.shutdown()
    server.server_close()


class Daemon:
    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), "TZ": "UTC"}
        environ.pop("CRAWLSCHED_TOKEN", None)
        environ.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crawlsched", "daemon", "--http", f"127.0.0.1:{self.port}", *args],
            env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def wait_ready(self, headers: dict[str, str] | None = None, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError("daemon did not become healthy")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\n')
    return tmp_path


def test_add_then_run_now_through_the_real_daemon(home, target):
    daemon = Daemon(home)
    try:
        daemon.wait_ready()
        added = requests.post(f"{daemon.base}/api/scheduler/job/add", timeout=5, json={
            "name": "Crawl Pagi Hari", "hour": 23, "minute": 59, "max_retries": 3, "retry_delay": 300, "url": target})
        assert added.status_code == 200, added.text
        assert added.json()["message"] == "✅ Job 'Crawl Pagi Hari' berhasil ditambahkan"
        job_id = added.json()["job_id"]
        ran = requests.post(f"{daemon.base}/api/scheduler/run-now", json={"job_id": job_id}, timeout=5)
        assert ran.status_code == 200, ran.text
        deadline = time.monotonic() + 10
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = requests.get(f"{daemon.base}/api/scheduler/job/{job_id}", timeout=5).json()["runs"]
            if runs and runs[0]["status"] != "running":
                break
            time.sleep(0.1)
        assert [(r["attempt"], r["status"]) for r in runs] == [(1, "success")]
        assert runs[0]["bytes"] == len(b"<html>news</html>")
        # The CLI reads the same files.
        listed = subprocess.run([sys.executable, "-m", "crawlsched", "list", "--json"], capture_output=True, text=True,
                                env={**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home)})
        assert '"status": "success"' in listed.stdout
        status = requests.get(f"{daemon.base}/api/scheduler/status", timeout=5).json()
        assert status["running"] is True and status["pid"] == daemon.proc.pid and status["config_ok"] is True
        # A body without a Content-Type (requests sends none for raw bytes) is refused; none at all is fine.
        assert requests.post(f"{daemon.base}/api/scheduler/stop", data=b'{"a": 1}', timeout=5).status_code == 415
        assert requests.post(f"{daemon.base}/api/scheduler/stop", timeout=5).status_code == 200
        assert requests.get(f"{daemon.base}/api/scheduler/jobs", headers={"Host": f"evil.example:{daemon.port}"},
                            timeout=5).status_code == 403
        page = requests.get(f"{daemon.base}/scheduler", timeout=5)
        assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    finally:
        assert daemon.stop() == 0


def test_a_token_file_protects_the_api(home, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("e2e-token-value\n")
    daemon = Daemon(home, "--token-file", str(token_file))
    try:
        daemon.wait_ready()
        assert requests.get(f"{daemon.base}/api/scheduler/jobs", timeout=5).status_code == 401
        ok = requests.get(f"{daemon.base}/api/scheduler/jobs", headers={"Authorization": "Bearer e2e-token-value"}, timeout=5)
        assert ok.status_code == 200
    finally:
        assert daemon.stop() == 0


def test_a_non_loopback_address_without_a_token_is_refused_with_exit_2(home):
    env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home)}
    env.pop("CRAWLSCHED_TOKEN", None)
    result = subprocess.run([sys.executable, "-m", "crawlsched", "daemon", "--http", f"0.0.0.0:{free_port()}"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert "token" in result.stderr and "Traceback" not in result.stderr
