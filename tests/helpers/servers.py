"""Real HTTP targets on 127.0.0.1, each on a free port, serving from a thread."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


class Pages(LocalServer):
    """Fixed answers by path: ``routes`` maps a path to (status, body, content type or None);
    any other path gets ``default``. ``hits`` lists the paths asked for."""

    def __init__(self, routes: dict[str, tuple[int, bytes, str | None]],
                 default: tuple[int, bytes, str | None] = (404, b"", None)) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                hits.append(self.path)
                code, body, kind = routes.get(self.path, default)
                self.send_response(code)
                if kind:
                    self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)
