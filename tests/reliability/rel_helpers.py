"""Helpers of the reliability suite: a target with hostile routes, a tree snapshot, a fake-clock daemon."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from daemon_helpers import CRAWLSCHED, DaemonProcess, LocalServer, wait_for


class HostileTarget(LocalServer):
    """A real HTTP server on 127.0.0.1 with well-behaved and hostile routes; ``hits`` counts each path.

    /ok                     200, a short body
    /slow/<s>               waits s seconds, then 200
    /fail                   500
    /429/<key>/<s>          the first request per key: 429 with Retry-After: s; then 200
    /big/<n>                200 with n bytes
    /hang-then-ok/<key>     the first request per key: half the body, then silence for 60 s; then 200
    """

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.headers_seen: list[dict[str, str]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                with lock:
                    outer.hits[self.path] += 1
                    n = outer.hits[self.path]
                    outer.headers_seen.append(dict(self.headers))
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if parts[0] == "slow":
                    time.sleep(float(parts[1]))
                    return self._send(200, b"slow ok\n")
                if parts[0] == "fail":
                    return self._send(500, b"failing\n")
                if parts[0] == "429":
                    if n == 1:
                        return self._send(429, b"too many\n", {"Retry-After": parts[2]})
                    return self._send(200, b"now ok\n")
                if parts[0] == "big":
                    size = int(parts[1])
                    self.send_response(200)
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    block = b"x" * 65536
                    left = size
                    try:
                        while left > 0:
                            self.wfile.write(block[: min(left, len(block))])
                            left -= min(left, len(block))
                    except OSError:
                        pass
                    return None
                if parts[0] == "hang-then-ok":
                    if n == 1:
                        self.send_response(200)
                        self.send_header("Content-Length", "200000")
                        self.end_headers()
                        self.wfile.write(b"y" * 100000)
                        self.wfile.flush()
                        time.sleep(60)
                        return None
                    return self._send(200, b"z" * 200000)
                return self._send(200, f"ok {self.path}\n".encode())

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)


def snapshot(root: Path, exclude: Path | None = None) -> set[str]:
    """Every path under ``root`` (relative), except those under ``exclude``."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if exclude is not None and (path == exclude or exclude in path.parents):
                continue
            out.add(str(path.relative_to(root)))
    return out


class LimitedDaemon(DaemonProcess):
    """A daemon subprocess with a ``preexec_fn`` (resource limits, ignored signals)."""

    def __init__(self, home: Path, *args: str, preexec: Callable[[], None] | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(home, *args, env=env)
        self.preexec = preexec

    def start(self, wait_ready: bool = True) -> "LimitedDaemon":
        self.stderr = open(self.stderr_path, "wb")
        def pre() -> None:
            os.setsid()
            if self.preexec:
                self.preexec()
        self.proc = subprocess.Popen(CRAWLSCHED + ["daemon", *self.args], env=self.env, stdout=self.stderr,
                                     stderr=self.stderr, preexec_fn=pre)
        if wait_ready:
            wait_for(lambda: "daemon ready" in self.output() or self.proc.poll() is not None, 20, "daemon ready")
            assert self.proc.poll() is None, self.output()
        return self


def quiet_logger() -> logging.Logger:
    log = logging.getLogger("crawlsched.reliability")
    log.propagate = True
    return log


def pid_gone(pid: int) -> bool:
    """Gone or a zombie (dead, waiting to be reaped by init)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
