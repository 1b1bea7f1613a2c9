"""Real parts for daemon tests: a crawl target on 127.0.0.1 and the daemon as a subprocess."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

CRAWLSCHED = [sys.executable, "-m", "crawlsched"]


class LocalServer:
    """A real HTTP server on 127.0.0.1 (a free port) in a thread; subclasses give the handler."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeClock:
    """Wall and monotonic clocks that move only when told; ``jump`` moves the wall clock alone."""

    def __init__(self, start: datetime) -> None:
        self.wall = start.timestamp()
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def jump(self, seconds: float) -> None:
        self.wall += seconds


class Target(LocalServer):
    """A real HTTP server: /ok answers 200; /flaky/<key> fails twice per key, then answers; /fail always 500;
    /slow/<s> waits s seconds before answering."""

    def __init__(self) -> None:
        counts: dict[str, int] = {}
        lock = threading.Lock()
        self.hits: list[tuple[float, str]] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                hits.append((time.time(), self.path))
                if self.path.startswith("/flaky"):
                    with lock:
                        counts[self.path] = counts.get(self.path, 0) + 1
                        n = counts[self.path]
                    code = 200 if n >= 3 else 503
                elif self.path.startswith("/fail"):
                    code = 500
                elif self.path.startswith("/slow/"):
                    time.sleep(float(self.path.rsplit("/", 1)[1]))
                    code = 200
                else:
                    code = 200
                body = f"{code} {self.path}\n".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)


class DaemonProcess:
    """``crawlsched daemon`` as a child process, with real signals."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.args = list(args)
        self.env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.stderr_path = home / f"daemon-{time.monotonic_ns()}.stderr"

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(CRAWLSCHED + ["daemon", *self.args], env=self.env, stdout=self.stderr,
                                     stderr=self.stderr, start_new_session=True)
        if wait_ready:
            wait_for(lambda: "daemon ready" in self.output() or self.proc.poll() is not None, 20, "daemon ready")
            assert self.proc.poll() is None, self.output()
        return self

    def output(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.stderr.close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.stderr.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until ``predicate`` is truthy; a deadline, not a speed assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def runs(home: Path, where: str = "1=1", params: tuple = ()) -> list[dict[str, Any]]:
    path = home / "crawlsched.db"
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(f"SELECT * FROM runs WHERE {where} ORDER BY id", params)]
    except sqlite3.DatabaseError:  # locked, or a corrupt file the daemon has not moved aside yet
        return []
    finally:
        con.close()


def cli(home: Path, *args: str, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), **(env or {})}
    result = subprocess.run(CRAWLSCHED + list(args), env=full_env, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"crawlsched {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def write_jobs(home: Path, body: str, defaults: str = 'timezone = "UTC"\n') -> None:
    home.mkdir(parents=True, exist_ok=True)
    text = f"[defaults]\n{defaults}\n{body}"
    tmp = home / ".jobs.toml.test-tmp"
    tmp.write_text(text)
    os.replace(tmp, home / "jobs.toml")
