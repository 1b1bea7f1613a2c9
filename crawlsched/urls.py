"""URLs: checking one a job fetches, and masking its secrets wherever it is shown.

``check_url`` accepts an http(s) URL with a host (``${VAR}`` parts are expanded
only at run time); ``redact_url`` is the one redaction of a URL for ``list``,
``show``, the API, messages and logs.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from crawlsched.errors import InvalidValue

# Query parameters whose values are masked for display (substring match, any case).
SECRET_PARAM_RE = re.compile(r"token|key|secret|pass|pwd|auth|sig|session|credential|code", re.I)
_VAR_RE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def check_url(value: Any, field_name: str = "url") -> str:
    """An http(s) URL; ``${VAR}`` parts are allowed and expanded only at run time."""
    if not isinstance(value, str) or not value or any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidValue(field_name, redact_url(value) if isinstance(value, str) else value, "is not an http(s) URL")
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # e.g. "http://[bad": a refused value, not a crash
        raise InvalidValue(field_name, redact_url(value), f"is not an http(s) URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InvalidValue(field_name, redact_url(value), "is not an http(s) URL (http://… or https://…)")
    try:
        port_ok = "${" in parts.netloc or parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if not parts.hostname or not port_ok:
        raise InvalidValue(field_name, redact_url(value), "is not an http(s) URL (it needs a host, and a port is a number 1-65535)")
    return value


def check_urls(value: Any, field_name: str = "url") -> tuple[str, ...]:
    if isinstance(value, str):
        return (check_url(value, field_name),)
    if isinstance(value, (list, tuple)) and value:
        return tuple(check_url(v, field_name) for v in value)
    raise InvalidValue(field_name, value, "must be a URL or a non-empty list of URLs")


def redact_url(url: str) -> str:
    """Mask the userinfo password and secret-looking query values of a URL for display.

    ``https://user:pass@host/x?token=abc&page=2`` → ``https://user:***@host/x?token=***&page=2``.
    Works on text (no parsing that could fail), so ``${VAR}`` templates pass
    through unexpanded; a password is masked even when it is a template. The
    one redaction for every place a URL is shown: ``list``, ``show``, the API,
    messages and logs.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    authority_end = len(rest)
    for stop in "/?#":
        pos = rest.find(stop)
        if pos != -1:
            authority_end = min(authority_end, pos)
    authority, tail = rest[:authority_end], rest[authority_end:]
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    path, hashmark, fragment = tail.partition("#")
    path, qmark, query = path.partition("?")
    if qmark:
        query = "&".join(_redact_param(p) for p in query.split("&"))
    return f"{head}{sep}{userinfo}{at}{hostport}{path}{qmark}{query}{hashmark}{fragment}"


def _redact_param(param: str) -> str:
    name, eq, value = param.partition("=")
    if eq and value and SECRET_PARAM_RE.search(name) and not _VAR_RE.fullmatch(value):
        return f"{name}=***"
    return param
