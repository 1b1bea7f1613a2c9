"""What the server sends back: JSON replies, errors as JSON, and the static files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from flask import Response, send_from_directory

STATIC_DIR = Path(__file__).parent.with_name("static")  # crawlsched/static (package data)
USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")


def scrub(message: str) -> str:
    """One line, and no password of a URL's userinfo: errors may quote a value the user sent."""
    return USERINFO_RE.sub(r"\1:***@", " ".join(str(message).split()))


def reply(obj: Mapping[str, Any], status: int = 200) -> Response:
    body = json.dumps(obj, ensure_ascii=False, default=str)
    response = Response(body, status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def ok(**payload: Any) -> Response:
    return reply({"success": True, **payload})


def error(status: int, message: str) -> Response:
    response = reply({"success": False, "error": scrub(message) or "error"}, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="crawlsched"'
    return response



def _static(name: str) -> Response:
    response = send_from_directory(STATIC_DIR, name, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response



def _static_json(name: str) -> Response:
    data = json.loads((STATIC_DIR / name).read_text(encoding="utf-8"))
    return reply(data)
