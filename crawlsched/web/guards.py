"""The request guard: token, Host (DNS rebinding), cross-site writes, body size, content type, and the security headers."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import threading
import time
from typing import Callable

from flask import Flask, Response, request

from crawlsched.errors import _show
from crawlsched.web.responses import error

MAX_BODY = 64 * 1024  # bytes of a request body (413 above)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"127.0.0.1:5000"`` → ``("127.0.0.1", 5000)``; ``"[::1]"`` → ``("::1", None)``; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            return None
        port_text = rest[1:]
    elif ":" in value:
        host, _, port_text = value.rpartition(":")
        if ":" in host:  # an IPv6 address must be bracketed in a Host header
            return None
    else:
        return value.rstrip("."), None
    if not port_text.isdigit() or len(port_text) > 5:
        return None
    return host.rstrip("."), int(port_text)


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False



def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host



def host_allowed(header: str | None, bind_host: str, bind_port: int) -> bool:
    """Without a token, only this server's own name or a loopback name, with its port (DNS rebinding)."""
    parsed = split_host(header) if header else None
    if parsed is None:
        return False
    host, port = parsed
    if (port if port is not None else 80) != bind_port:
        return False
    return host == bind_host.strip("[]").lower() or is_loopback(host)


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def same_origin(origin: str, host_header: str | None) -> bool:
    """``Origin`` names the server the request was sent to (its ``Host``): scheme-default port if Host has none."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.username:
        return False
    parsed = split_host(host_header) if host_header else None
    if parsed is None:
        return False
    host, port = parsed
    origin_port = origin_port if origin_port is not None else DEFAULT_PORTS[scheme]
    return parts.hostname.rstrip(".") == host and origin_port == (port if port is not None else DEFAULT_PORTS[scheme])


def cross_site(origin: str | None, fetch_site: str | None, host_header: str | None) -> str | None:
    """Why a write came from another site (for the 403), or None.

    ``Origin`` decides when a browser sent it (Chromium and Firefox send it with every POST, PUT,
    PATCH and DELETE, ``no-cors`` included); without it, ``Sec-Fetch-Site``: ``same-site`` is
    another origin too (another port of 127.0.0.1 is the same site). A client that sends neither
    (curl, scripts) is not a browser page and is served.
    """
    if origin is not None:
        return None if same_origin(origin, host_header) else f"Origin {origin.strip()!r}"
    site = (fetch_site or "").strip().lower()
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {site}"
    return None


def token_ok(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


class FailedTokens:
    """Failed token checks per client address: past ``limit`` in ``window`` seconds, 429 at once.

    Nothing sleeps: waitress has 4 threads, and a guesser that held them in a delay would stop
    the API for everyone. A locked-out address gets 429 until its window ends, even with the
    right token (else the lock would tell it which guess was right). Logged as a WARNING at the
    first failure of a window and at the lock-out, never with the token; at most ``max_clients``
    addresses are remembered (the oldest window is forgotten first).
    """

    def __init__(self, limit: int = 10, window: float = 60.0, log: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.log = log or logging.getLogger("crawlsched")
        self.clock = clock
        self.max_clients = max_clients
        self.clients: dict[str, list[float]] = {}  # address -> [window start, failures]
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        with self._lock:
            entry = self.clients.get(address)
            if entry is None or entry[1] < self.limit:
                return None
            left = entry[0] + self.window - self.clock()
            return left if left > 0 else None

    def failed(self, address: str, method: str, path: str) -> None:
        now = self.clock()
        with self._lock:
            entry = self.clients.get(address)
            if entry is None or now - entry[0] >= self.window:
                self.clients.pop(address, None)  # re-inserted last: the dict stays in window order
                if len(self.clients) >= self.max_clients:
                    self._forget(now)
                entry = self.clients[address] = [now, 0]
            entry[1] += 1
            count = entry[1]
        if count == 1:
            shown = " ".join(path[:200].split())  # the path is the client's: one line in the log
            self.log.warning("web API: wrong token from %s (%s %s); after %d in %ds it gets 429",
                             address, method, shown, self.limit, int(self.window))
        elif count == self.limit:
            self.log.warning("web API: %d wrong tokens from %s within %ds: answering it 429 until then",
                             count, address, int(self.window))

    def _forget(self, now: float) -> None:
        for address in [a for a, (start, _n) in self.clients.items() if now - start >= self.window]:
            del self.clients[address]
        while len(self.clients) >= self.max_clients:
            del self.clients[next(iter(self.clients))]


def needs_token(path: str) -> bool:
    return path == "/metrics" or path == "/api" or path.startswith("/api/")


def _has_body() -> bool:
    return (request.content_length or 0) > 0 or "chunked" in request.headers.get("Transfer-Encoding", "").lower()



def install(app: Flask, token: str | None, log: logging.Logger | None = None) -> None:
    """Guard every request of ``app`` and add the security headers to every response."""
    failures = app.extensions["crawlsched.token_failures"] = FailedTokens(log=log)

    @app.before_request
    def guard() -> Response | None:
        host, port = app.config["CRAWLSCHED_BIND"]
        if token is None and not host_allowed(request.headers.get("Host"), host, port):
            given = request.headers.get("Host")
            what = f"Host {_show(given)} is not this server's" if given else "a request without a Host header is refused"
            return error(403, f"{what}; use http://{_url_host(host)}:{port}/ (requests for other names are refused)")
        if request.method in WRITE_METHODS:
            why = cross_site(request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), request.headers.get("Host"))
            if why is not None:
                return error(403, f"a write sent by another site is refused ({why} is not "
                                  f"http://{request.headers.get('Host') or _url_host(host)}); use this server's own page or a client "
                                  "that sends no Origin")
        if token is not None and needs_token(request.path):
            address = request.remote_addr or "?"
            wait = failures.retry_after(address)
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                response = error(429, f"too many wrong tokens from {address}; try again in {seconds} s")
                response.headers["Retry-After"] = str(seconds)
                return response
            given = request.headers.get("Authorization")
            if not token_ok(given, token):
                if given is not None:  # a guess; a request without any (the page before it asks) is not
                    failures.failed(address, request.method, request.path)
                return error(401, "this scheduler needs its access token: Authorization: Bearer <token>")
        if (request.content_length or 0) > MAX_BODY:
            return error(413, f"the request body is larger than {MAX_BODY // 1024} KiB")
        if request.method == "POST":
            ctype = request.headers.get("Content-Type")
            if (ctype is None and _has_body()) or (ctype is not None and request.mimetype != "application/json"):
                return error(415, f"a POST body must be application/json, not {ctype or 'untyped'}")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        for name in [h for h in response.headers.keys() if h.lower().startswith("access-control-")]:
            del response.headers[name]
        return response
