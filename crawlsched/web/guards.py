"""The request guard: token, Host (DNS rebinding), body size, content type, and the security headers."""

from __future__ import annotations

import hmac
import ipaddress

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


def token_ok(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def needs_token(path: str) -> bool:
    return path == "/metrics" or path == "/api" or path.startswith("/api/")


def _has_body() -> bool:
    return (request.content_length or 0) > 0 or "chunked" in request.headers.get("Transfer-Encoding", "").lower()



def install(app: Flask, token: str | None) -> None:
    """Guard every request of ``app`` and add the security headers to every response."""

    @app.before_request
    def guard() -> Response | None:
        host, port = app.config["CRAWLSCHED_BIND"]
        if token is None and not host_allowed(request.headers.get("Host"), host, port):
            given = request.headers.get("Host")
            what = f"Host {_show(given)} is not this server's" if given else "a request without a Host header is refused"
            return error(403, f"{what}; use http://{_url_host(host)}:{port}/ (requests for other names are refused)")
        if token is not None and needs_token(request.path) and not token_ok(request.headers.get("Authorization"), token):
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
