"""The seed's web page and JSON API, served by the daemon (``daemon --http``, SPEC §8).

A sibling of ``cli.py``: every write goes through ``JobStore`` (same validation,
lock and atomic write as the CLI), every job and run is shown through
``render``'s serializers, and after a write the daemon is told to reload at
once, so a job added here can be run right away.

Safety (SPEC §8): loopback only unless a token is configured; with a token,
every ``/api`` route and ``/metrics`` needs ``Authorization: Bearer``; without
one, a Host header that is not this server's loopback name is refused (DNS
rebinding). A POST with a body must be ``application/json``: a cross-site
form can only send other types, and a cross-site ``fetch`` of JSON needs a
CORS preflight, which is never answered. The page itself and its assets load
without a token (it asks for the token) and under a strict
Content-Security-Policy.

Imported only by ``run_daemon`` (flask is not loaded for other commands).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from flask import Flask, Response, redirect, request, send_from_directory
from werkzeug.exceptions import HTTPException

from crawlsched import render, timing
from crawlsched.errors import CrawlschedError, InvalidValue, JobNotFound
from crawlsched.model import (
    Defaults,
    Job,
    JobFile,
    JobStatus,
    at_from_hour_minute,
    build_defaults,
    build_job,
    check_catch_up,
    check_command,
    check_date,
    check_headers,
    check_int,
    check_name,
    check_seconds,
    check_timezone,
    check_urls,
    normalize_every,
    parse_at,
    parse_cron,
)

if TYPE_CHECKING:
    from crawlsched.daemon import Daemon

UTC = timezone.utc
MAX_BODY = 64 * 1024  # bytes of a request body (413 above)
SERVER_MAX_BODY = 1024 * 1024  # waitress cuts anything larger before Flask sees it
HEALTH_STALE = 90.0  # three daemon heartbeats (every 30 s); seconds without a heartbeat after which /healthz says the loop is stuck
HANDOVER_WAIT = 1.0  # seconds run-now waits for the daemon to take the request
STATIC_DIR = Path(__file__).with_name("static")
STATIC_SUFFIXES = {".html", ".css", ".js", ".svg", ".png", ".ico"}
ADDED = "✅ Job '{name}' berhasil ditambahkan"  # the seed's message, word for word (as the CLI's)
LATENESS_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")

# --- errors ----------------------------------------------------------------------------


class BadRequest(CrawlschedError):
    """The body is not a JSON object (HTTP 400)."""

    exit_code = 2
    http_status = 400


class Forbidden(CrawlschedError):
    """A request this server will not serve: a foreign Host, a command without permission (403)."""

    exit_code = 2
    http_status = 403


class Unauthorized(CrawlschedError):
    """No token, or the wrong one (401)."""

    exit_code = 2
    http_status = 401


class UnsupportedMediaType(CrawlschedError):
    """A POST body that is not ``application/json`` (415)."""

    exit_code = 2
    http_status = 415


class WebConfigError(CrawlschedError):
    """``--http`` cannot be served as asked (non-loopback without a token, a bad address): exit 2."""

    exit_code = 2


def scrub(message: str) -> str:
    """One line, and no password of a URL's userinfo: errors may quote a value the user sent."""
    return USERINFO_RE.sub(r"\1:***@", " ".join(str(message).split()))


# --- request bodies -----------------------------------------------------------------


def _num(value: float | None) -> float | int | None:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _seconds(name: str) -> Callable[[Any], Any]:
    return lambda v: _num(check_seconds(name, v))


def _user_agent(value: Any) -> str:
    if not isinstance(value, str) or not value or any(not c.isprintable() for c in value):
        raise InvalidValue("user_agent", value, "must be one line of text")
    return value


# Keys of the add body besides name and the schedule, each with what turns a JSON
# value into the value written to jobs.toml (TOML dates, whole numbers as ints).
CONVERT: dict[str, Callable[[Any], Any]] = {
    "start_date": lambda v: check_date("start_date", v),
    "end_date": lambda v: check_date("end_date", v),
    "url": lambda v: list(check_urls(v)),
    "command": check_command,
    "on_failure": lambda v: check_command(v, "on_failure"),
    "max_retries": lambda v: check_int("max_retries", v, 0, 1000),
    "retry_delay": _seconds("retry_delay"),
    "retry_backoff": _seconds("retry_backoff"),
    "retry_max_delay": _seconds("retry_max_delay"),
    "timeout": _seconds("timeout"),
    "timezone": check_timezone,
    "catch_up": lambda v: check_catch_up(v).value,
    "headers": check_headers,
    "max_bytes": lambda v: check_int("max_bytes", v, 1),
    "keep_runs": lambda v: check_int("keep_runs", v, 1),
    "user_agent": _user_agent,
}
SCHEDULE_KEYS = ("hour", "minute", "at", "cron", "every")
ADD_KEYS = ("name", *SCHEDULE_KEYS, *CONVERT)
RETRY_KEYS = ("max_retries", "retry_delay", "retry_backoff", "retry_max_delay")
START_KEYS = ("mode", "hour", "minute", "seconds", "cron", "url", "timezone")
COMMAND_KEYS = ("command", "on_failure")
MODE_FIELDS = {"daily": ("hour", "minute"), "hourly": ("minute",), "interval": ("seconds",), "custom": ("cron",)}


def json_body() -> dict[str, Any]:
    """The request's JSON object; no body at all is ``{}`` (a blank one is malformed JSON)."""
    raw = request.get_data(cache=True)  # raises 413 over MAX_CONTENT_LENGTH
    if not raw:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(data).__name__}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_urls(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(u, str) for u in v))


# The JSON type of each field (the OpenAPI document says the same): a JSON API takes
# numbers as numbers, where the CLI's parser would also take "9".
JSON_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{k: (_is_int, "must be a whole number") for k in ("hour", "minute", "max_retries", "max_bytes", "keep_runs", "seconds")},
    **{k: (_is_number, "must be a number of seconds") for k in ("retry_delay", "retry_backoff", "retry_max_delay", "timeout")},
    **{k: (lambda v: isinstance(v, str), "must be a text") for k in (
        "name", "start_date", "end_date", "at", "cron", "command", "on_failure", "timezone", "catch_up",
        "user_agent", "mode", "job_id")},
    "every": (lambda v: isinstance(v, str) or _is_number(v), "must be an interval (e.g. 15m) or a number of seconds"),
    "url": (_is_urls, "must be a URL or a list of URLs"),
    "headers": (lambda v: isinstance(v, dict), "must be an object of header names to texts"),
}


def _given(body: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    """The keys that are set (``null`` = not given), each of its JSON type; an unknown key is refused by name."""
    for key, value in body.items():
        shown = value if isinstance(value, (str, int, float, bool)) or value is None else "{…}"
        if key not in allowed:
            raise InvalidValue(key, shown, f"is not a field of {what} (allowed: {', '.join(allowed)})")
        test, allowed_text = JSON_TYPES.get(key, (lambda v: True, ""))
        if value is not None and not test(value):
            raise InvalidValue(key, shown, allowed_text)
    return {k: v for k, v in body.items() if v is not None}


def refuse_commands(given: Mapping[str, Any], defaults: Defaults) -> None:
    """A command runs on this machine: through HTTP only when the job file says so."""
    for key in COMMAND_KEYS:
        if key in given and not defaults.allow_http_commands:
            raise Forbidden(f"{key}: commands cannot be set through the HTTP API; a person who can edit "
                            "the job file may allow it with `allow_http_commands = true` in [defaults]")


def schedule_fields(given: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's ``hour``/``minute`` (minute 0 when left out), or ``at``, ``cron``, ``every``."""
    if "minute" in given and "hour" not in given:
        raise InvalidValue("minute", given["minute"], "needs hour (hour H, minute M)")
    kinds = [k for k in ("hour", "at", "cron", "every") if k in given]
    allowed = "give exactly one of hour (with minute), at, cron, every"
    if len(kinds) > 1:
        raise InvalidValue("schedule", " and ".join(kinds), f"are two schedules; {allowed}")
    if not kinds:
        raise InvalidValue("hour", None, f"is missing: {allowed}")
    kind = kinds[0]
    if kind == "hour":
        return {"at": at_from_hour_minute(given["hour"], given.get("minute"))}
    if kind == "at":
        return {"at": parse_at(given["at"])}
    if kind == "cron":
        return {"cron": parse_cron(given["cron"])}
    return {"every": normalize_every(given["every"])}


def add_fields(body: Mapping[str, Any], defaults: Defaults) -> dict[str, Any]:
    """The add body → the keys of a ``[[jobs]]`` table, each value checked and typed."""
    given = _given(body, ADD_KEYS, "a job")
    refuse_commands(given, defaults)
    fields: dict[str, Any] = {"name": check_name(given.get("name")), **schedule_fields(given)}
    for key, convert in CONVERT.items():
        if key in given:
            fields[key] = convert(given[key])
    if "url" in fields and "command" in fields:
        raise InvalidValue("command", fields["command"], "cannot be set together with url (choose one crawl)")
    return fields


def retry_changes(body: Mapping[str, Any]) -> dict[str, Any]:
    given = _given(body, RETRY_KEYS, "the retry config")
    changes = {k: CONVERT[k](v) for k, v in given.items()}
    build_defaults(changes)  # the rules between values (backoff range) with [defaults]' field names
    return changes


def legacy_schedule(given: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's ``start`` modes → the schedule of the job ``default``."""
    mode = given.get("mode")
    if mode in MODE_FIELDS:
        for key, value in given.items():
            if key not in MODE_FIELDS[mode] + ("mode", "url", "timezone"):
                raise InvalidValue(key, value, f"is not used by mode {mode} (it takes {', '.join(MODE_FIELDS[mode])})")
    if mode == "daily":
        if "hour" not in given:
            raise InvalidValue("hour", None, "is missing: mode daily needs hour (and minute)")
        return {"at": at_from_hour_minute(given["hour"], given.get("minute"))}
    if mode == "hourly":
        minute = check_int("minute", given.get("minute", 0), 0, 59)
        return {"cron": f"{minute} * * * *"}
    if mode == "interval":
        if "seconds" not in given:
            raise InvalidValue("seconds", None, "is missing: mode interval needs seconds")
        return {"every": f"{check_int('seconds', given['seconds'], 1, 10 * 365 * 86400)}s"}
    if mode == "custom":
        if "cron" not in given:
            raise InvalidValue("cron", None, "is missing: mode custom needs cron")
        return {"cron": parse_cron(given["cron"])}
    raise InvalidValue("mode", mode, "must be one of daily, hourly, interval, custom")


# --- the request guard ----------------------------------------------------------------


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


# --- responses ----------------------------------------------------------------------


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


# --- the app ------------------------------------------------------------------------


def create_app(daemon: Daemon, token: str | None, bind_host: str, bind_port: int) -> Flask:
    """The Flask app over one daemon's job file and state. ``bind_port`` may be updated later in ``app.config``."""
    app = Flask("crawlsched.web", static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY,
        CRAWLSCHED_BIND=(bind_host, bind_port),
        CRAWLSCHED_HANDOVER_WAIT=HANDOVER_WAIT,
    )
    api = Api(daemon, app)
    log = daemon.log

    @app.before_request
    def guard() -> Response | None:
        host, port = app.config["CRAWLSCHED_BIND"]
        if token is None and not host_allowed(request.headers.get("Host"), host, port):
            return error(403, f"Host {request.headers.get('Host')!r} is not this server's; "
                              f"use http://{_url_host(host)}:{port}/ (requests for other names are refused)")
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

    @app.errorhandler(CrawlschedError)
    def crawlsched_error(exc: CrawlschedError) -> Response:
        if exc.http_status >= 500:
            log.error("web API: %s %s: %s", request.method, request.path, exc)
        return error(exc.http_status, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if exc.code == 404:
            message = f"no such route: {request.method} {request.path}"
        elif exc.code == 413:
            message = f"the request body is larger than {MAX_BODY // 1024} KiB"
        else:
            message = exc.description or exc.name
        response = error(exc.code or 500, message)
        if exc.code == 405 and exc.get_headers():
            response.headers.update({k: v for k, v in exc.get_headers() if k.lower() == "allow"})
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("web API: %s %s failed", request.method, request.path)
        return error(500, f"internal error ({type(exc).__name__}); the daemon's log has the details")

    # The page. It loads without a token so that it can ask for one.
    @app.get("/")
    def root() -> Any:
        return redirect("/scheduler", code=302)

    @app.get("/scheduler")
    def page() -> Response:
        return _static("scheduler.html")

    @app.get("/static/<path:name>")
    def static_file(name: str) -> Response:
        if Path(name).suffix not in STATIC_SUFFIXES:
            return error(404, f"no such file: /static/{name}")
        return _static(name)

    app.get("/healthz")(api.healthz)
    app.get("/metrics")(api.metrics)
    app.get("/api/openapi.json")(api.openapi)
    app.get("/api/scheduler/jobs")(api.jobs)
    app.post("/api/scheduler/job/add")(api.add)
    app.get("/api/scheduler/job/<ref>")(api.show)
    app.delete("/api/scheduler/job/<ref>")(api.delete)
    app.post("/api/scheduler/job/<ref>/pause")(api.pause)
    app.post("/api/scheduler/job/<ref>/resume")(api.resume)
    app.get("/api/scheduler/retry-config")(api.retry_config_get)
    app.post("/api/scheduler/retry-config")(api.retry_config)
    app.post("/api/scheduler/start")(api.start)
    app.post("/api/scheduler/stop")(api.stop)
    app.get("/api/scheduler/status")(api.status)
    app.post("/api/scheduler/run-now")(api.run_now)
    return app


def _static(name: str) -> Response:
    response = send_from_directory(STATIC_DIR, name, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Api:
    """The routes: each reads or writes through the daemon's store and state."""

    def __init__(self, daemon: Daemon, app: Flask) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.state = daemon.state
        self.app = app

    # --- shared -------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.daemon.clock(), UTC)

    def load(self) -> JobFile:
        return self.store.load()

    def find(self, jobfile: JobFile, ref: str) -> Job:
        job = jobfile.find(ref)
        if job is None:
            raise JobNotFound(ref)
        return job

    def job_dict(self, job: Job, now: datetime) -> dict[str, Any]:
        states = self.state.job_states([job.id])
        return render.job_dict(job, states.get(job.id), now)

    def changed(self) -> None:
        """Tell the daemon the job file changed: it reloads at once, not at its next poll."""
        self.daemon.request_reload()

    # --- jobs ---------------------------------------------------------------------

    def jobs(self) -> Response:
        now = self.now()
        jobfile = self.load()
        states = self.state.job_states([j.id for j in jobfile.jobs])
        return ok(jobs=[render.job_dict(j, states.get(j.id), now) for j in jobfile.jobs])

    def add(self) -> Response:
        body = json_body()
        now = self.now()
        fields = add_fields(body, self.load().defaults)
        job = self.store.add(fields, now=now, id_taken=self.state.known_id)
        self.state.remember_id(job.id, now.timestamp())
        self.changed()
        return ok(message=ADDED.format(name=job.name), job_id=job.id)

    def show(self, ref: str) -> Response:
        limit = check_int("limit", request.args.get("limit", "50"), 1, 1000)
        now = self.now()
        job = self.find(self.load(), ref)
        runs = self.state.runs(job.id, limit)
        return ok(job=self.job_dict(job, now), runs=[render.run_dict(r, job) for r in runs])

    def delete(self, ref: str) -> Response:
        removed = self.store.remove(self.find(self.load(), ref).id)
        self.changed()
        return ok(message=f"🗑️ Job '{removed.name}' deleted", removed=[removed.id])

    def _set_paused(self, ref: str, paused: bool) -> Response:
        _given(json_body(), (), "this request (it takes no fields)")
        job = self.store.set_paused(self.find(self.load(), ref).id, paused)
        self.changed()
        message = f"⏸️ Job '{job.name}' paused" if paused else f"▶️ Job '{job.name}' resumed"
        return ok(message=message, job=self.job_dict(job, self.now()))

    def pause(self, ref: str) -> Response:
        return self._set_paused(ref, True)

    def resume(self, ref: str) -> Response:
        return self._set_paused(ref, False)

    def retry_config_get(self) -> Response:
        return ok(message="Retry config", defaults=render.defaults_dict(self.load().defaults))

    def retry_config(self) -> Response:
        changes = retry_changes(json_body())
        if not changes:
            return self.retry_config_get()
        defaults = self.store.set_defaults(changes)
        self.changed()
        return ok(message="✅ Retry config updated", defaults=render.defaults_dict(defaults))

    # --- the seed's legacy endpoints ------------------------------------------------

    def start(self) -> Response:
        """Resume every job; with a ``mode``, first create or replace the job ``default``."""
        given = _given(json_body(), START_KEYS, "the start request")
        job_id = None
        if given:
            if "mode" not in given:
                key = next(iter(given))
                raise InvalidValue(key, given[key], "needs mode (daily, hourly, interval or custom)")
            job_id = self._upsert_default(given).id
        resumed = self.store.set_paused_all(False)
        self.changed()
        message = f"▶️ Scheduler started: {resumed} job{'s' if resumed != 1 else ''} resumed"
        if job_id:
            message += f"; job '{job_id}' scheduled"
        return ok(message=message, resumed=resumed, job_id=job_id)

    def _upsert_default(self, given: Mapping[str, Any]) -> Job:
        now = self.now()
        jobfile = self.load()
        existing = jobfile.find("default")
        existing = existing if existing is not None and existing.id == "default" else None
        tz = check_timezone(given["timezone"]) if "timezone" in given else (
            existing.timezone if existing else jobfile.defaults.timezone or self.store.machine_tz)
        table: dict[str, Any] = {"id": "default", "name": existing.name if existing else "default",
                                 **legacy_schedule(given), "timezone": tz}
        if "url" in given:
            table["url"] = list(check_urls(given["url"]))
        elif existing is not None and "url" in existing.explicit:
            table["url"] = list(existing.urls)
        elif existing is not None and "command" in existing.explicit:
            table["command"] = existing.command
        table["start_date"] = timing.today_in(tz, now)
        created = existing.created_at if existing and existing.created_at else now.astimezone(timing.zone(tz))
        table["created_at"] = created.replace(microsecond=0)
        build_job(table, jobfile.defaults, self.store.machine_tz)  # refused as a value (422), not as a broken file
        job = self.store.upsert(table, now=now)
        self.state.remember_id(job.id, now.timestamp())
        return job

    def stop(self) -> Response:
        _given(json_body(), (), "the stop request (it takes no fields)")
        paused = self.store.set_paused_all(True)
        self.changed()
        return ok(message=f"⏹️ Scheduler stopped: {paused} job{'s' if paused != 1 else ''} paused", paused=paused)

    def run_now(self) -> Response:
        given = _given(json_body(), ("job_id",), "the run-now request")
        ref = given.get("job_id", "default")
        if not isinstance(ref, str):
            raise InvalidValue("job_id", ref, "must be a job id or name")
        job = self.find(self.load(), ref)
        request_id = self.state.request_run(job.id, time.time(), source="api")
        self.daemon.request_wake()
        wait = self.app.config["CRAWLSCHED_HANDOVER_WAIT"]
        deadline = time.monotonic() + wait
        taken = self.state.request_taken(request_id)
        while not taken and time.monotonic() < deadline:
            time.sleep(0.02)
            taken = self.state.request_taken(request_id)
        if taken:
            message = f"▶️ Job '{job.name}' handed over to the daemon"
        else:
            message = f"Job '{job.name}' queued; the daemon runs it as soon as it can"
        return ok(message=message, job_id=job.id, taken=taken)

    def status(self) -> Response:
        return reply(status_dict(self.daemon, self.now(), self.app.config["CRAWLSCHED_BIND"]))

    # --- operations -------------------------------------------------------------------

    def healthz(self) -> Response:
        reason = health_problem(self.daemon, self.daemon.clock())
        if reason:
            return reply({"ok": False, "error": reason}, 503)
        return reply({"ok": True})

    def metrics(self) -> Response:
        text = metrics_text(self.daemon, self.now())
        return Response(text, mimetype="text/plain", content_type="text/plain; version=0.0.4; charset=utf-8")

    def openapi(self) -> Response:
        return _static_json("openapi.json")


def _static_json(name: str) -> Response:
    data = json.loads((STATIC_DIR / name).read_text(encoding="utf-8"))
    return reply(data)


# --- status, health, metrics -------------------------------------------------------------


def status_dict(daemon: Daemon, now: datetime, bind: tuple[str, int]) -> dict[str, Any]:
    """``crawlsched status --json``'s shape, seen from inside the daemon."""
    local = timing.machine_timezone()
    running = bool(daemon.started and not daemon.stopping)
    row = daemon.state.daemon() if running else None
    config_error, jobfile = daemon.config_error, None
    try:
        jobfile = daemon.store.load()
    except CrawlschedError as exc:
        config_error = config_error or str(exc)
    next_job, next_at = None, None
    if row is not None and row.get("next_job"):
        next_job, next_at = row["next_job"], timing.from_epoch(row.get("next_due"))
    elif jobfile is not None:
        states = daemon.state.job_states([j.id for j in jobfile.jobs])
        upcoming = [(v.next_run, j.id) for j in jobfile.jobs if not j.paused
                    and (v := render.view(j, states.get(j.id), now)).next_run is not None]  # fmt: skip
        if upcoming:
            next_at, next_job = min(upcoming)
    known = jobfile.find(next_job) if jobfile is not None and next_job else None
    next_tz = known.timezone if known is not None else local
    started = timing.from_epoch(row.get("started_at")) if row else None
    beat = timing.from_epoch(row.get("heartbeat")) if row else None
    host, port = bind
    return {
        "success": True,
        "running": running,
        "pid": os.getpid() if running else None,
        "host": row.get("host") if row else None,
        "version": row.get("version") if row else None,
        "started_at": timing.format_local(started, local),
        "started_at_iso": timing.iso_local(started, local),
        "heartbeat": timing.format_local(beat, local),
        "heartbeat_iso": timing.iso_local(beat, local),
        "http": f"http://{_url_host(host)}:{port}",
        "config_ok": config_error is None,
        "config_error": config_error,
        "job_count": len(jobfile.jobs) if jobfile is not None else len(daemon.jobs),
        "next_job": next_job,
        "next_run": timing.format_local(next_at, next_tz),
        "next_run_iso": timing.iso_local(next_at, next_tz),
        "jobs_file": str(daemon.store.path),
        "home": str(daemon.home),
    }


def health_problem(daemon: Daemon, now: float) -> str | None:
    """Why the scheduler is not healthy, or None: the loop must be alive and the job file applied."""
    if not daemon.started:
        return "the scheduler loop has not started"
    if daemon.stopping:
        return "the scheduler is stopping"
    try:
        row = daemon.state.daemon() or {}
    except Exception as exc:
        return f"the state database cannot be read ({type(exc).__name__})"
    beat = row.get("heartbeat")
    if beat is None or now - beat > HEALTH_STALE:
        age = "never" if beat is None else f"{now - beat:.0f} s ago"
        return f"the scheduler loop looks stuck: its last heartbeat was {age}"
    if daemon.config_error:
        return f"the job file is not applied: {daemon.config_error}"
    return None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def metrics_text(daemon: Daemon, now: datetime) -> str:
    """Prometheus text format: a few aggregate queries, no per-run work."""
    try:
        jobs = list(daemon.store.load().jobs)
    except CrawlschedError:
        jobs = list(daemon.jobs.values())  # a broken file: the daemon still runs the last good jobs
    states = daemon.state.job_states([j.id for j in jobs])
    by_status = {s.value: 0 for s in JobStatus}
    for job in jobs:
        by_status[render.view(job, states.get(job.id), now).status.value] += 1
    outcomes = daemon.state.read(
        "SELECT status, attempt > 0 AS attempt, count(*) AS n FROM runs"
        " WHERE status != 'running' GROUP BY status, attempt > 0")
    columns = ", ".join(f"sum(l <= {b})" for b in LATENESS_BUCKETS)
    late = daemon.state.read(
        f"SELECT {columns}, count(*), coalesce(sum(l), 0) FROM (SELECT max(started_at - scheduled_for, 0) AS l"
        " FROM runs WHERE attempt = 1 AND trigger = 'schedule' AND started_at IS NOT NULL)")[0]
    ids = {j.id for j in jobs}
    last_ok = [r for r in daemon.state.read(
        "SELECT job_id, max(finished_at) AS t FROM runs WHERE status = 'success' GROUP BY job_id") if r["job_id"] in ids]

    out = ["# HELP crawlsched_up 1 while the scheduler serves this endpoint.", "# TYPE crawlsched_up gauge", "crawlsched_up 1"]
    out += ["# HELP crawlsched_jobs Jobs in the job file, by status.", "# TYPE crawlsched_jobs gauge"]
    out += [f'crawlsched_jobs{{status="{s}"}} {n}' for s, n in by_status.items()]
    out += ["# HELP crawlsched_attempts_total Finished attempts, by outcome.", "# TYPE crawlsched_attempts_total counter"]
    counts = {o: 0 for o in render.ATTEMPT_OUTCOMES}
    not_run = {"skipped": 0, "missed": 0}
    for row in outcomes:
        (counts if row["attempt"] else not_run)[row["status"]] = row["n"]
    out += [f'crawlsched_attempts_total{{outcome="{_label(o)}"}} {n}' for o, n in counts.items()]
    out += ["# HELP crawlsched_fires_not_run_total Fires that did not run (skipped: overlap; missed: daemon down).",
            "# TYPE crawlsched_fires_not_run_total counter"]
    out += [f'crawlsched_fires_not_run_total{{status="{_label(s)}"}} {n}' for s, n in not_run.items()]
    out += ["# HELP crawlsched_fire_lateness_seconds Start of a scheduled first attempt after its fire time.",
            "# TYPE crawlsched_fire_lateness_seconds histogram"]
    for bound, count in zip(LATENESS_BUCKETS, late[: len(LATENESS_BUCKETS)]):
        out.append(f'crawlsched_fire_lateness_seconds_bucket{{le="{bound}"}} {count or 0}')
    total, total_sum = late[len(LATENESS_BUCKETS)], late[len(LATENESS_BUCKETS) + 1]
    out += [f'crawlsched_fire_lateness_seconds_bucket{{le="+Inf"}} {total}',
            f"crawlsched_fire_lateness_seconds_sum {_fmt(total_sum)}",
            f"crawlsched_fire_lateness_seconds_count {total}"]
    out += ["# HELP crawlsched_last_success_timestamp_seconds When each job's newest successful attempt ended.",
            "# TYPE crawlsched_last_success_timestamp_seconds gauge"]
    out += [f'crawlsched_last_success_timestamp_seconds{{job="{_label(r["job_id"])}"}} {_fmt(r["t"])}' for r in last_ok]
    out += ["# HELP crawlsched_config_reload_success 1 when the job file as it is now is applied, 0 when it is broken.",
            "# TYPE crawlsched_config_reload_success gauge",
            f"crawlsched_config_reload_success {0 if daemon.config_error else 1}"]
    return "\n".join(out) + "\n"


# --- the server ------------------------------------------------------------------------------


def parse_bind(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5000"``, ``"[::1]:5000"``, ``"localhost:0"`` → (host, port)."""
    parsed = split_host(text) if text and text.strip() else None
    if parsed is None or parsed[1] is None or not parsed[0] or parsed[1] > 65535:
        raise WebConfigError(f"--http: {text!r} is not HOST:PORT (e.g. 127.0.0.1:5000)")
    return parsed[0], parsed[1]


def load_token(token_file: str | Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The API token: ``--token-file PATH`` (first line), else ``$CRAWLSCHED_TOKEN``, else None."""
    env = os.environ if environ is None else environ
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WebConfigError(f"--token-file: cannot read {token_file} ({exc})") from None
        lines = text.strip().splitlines()
        return check_token(lines[0].strip() if lines else "", f"--token-file {token_file}")
    if env.get("CRAWLSCHED_TOKEN", "").strip():  # set but empty counts as not set, as in the CLI
        return check_token(env["CRAWLSCHED_TOKEN"].strip(), "CRAWLSCHED_TOKEN")
    return None


def check_token(token: str, where: str = "token") -> str:
    if not token:
        raise WebConfigError(f"{where}: the token is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise WebConfigError(f"{where}: the token must be one word of printable characters")
    return token


class WebServer:
    """The running web server: ``port`` is the real one (``:0`` picks a free port); ``close()`` stops it."""

    def __init__(self, server: Any, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._closing = False
        self.thread = threading.Thread(target=self.run, name="crawlsched-web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    def run(self) -> None:
        try:
            self.server.run()
        except Exception:
            if not self._closing:
                logging.getLogger("crawlsched").exception("web server stopped")

    def close(self, timeout: float = 5.0) -> None:
        self._closing = True
        server = self.server
        # Close the listening socket and every connection; the loop ends when its map is empty.
        while server._map:
            for channel in list(server._map.values()):
                try:
                    channel.handle_close()
                except Exception:
                    server._map.pop(getattr(channel, "_fileno", None), None)
        server.task_dispatcher.shutdown(timeout=timeout)
        self.thread.join(timeout)


def start_server(daemon: Daemon, bind: str, token: str | None = None) -> WebServer:
    """Serve the page and API on ``HOST:PORT`` (waitress, 4 threads) in a background thread.

    Refuses (``WebConfigError``, exit 2) a non-loopback address without a token.
    ``token`` None falls back to ``$CRAWLSCHED_TOKEN``.
    """
    import waitress

    host, port = parse_bind(bind)
    token = check_token(token) if token is not None else load_token(None)
    if token is None and not is_loopback(host):
        raise WebConfigError(
            f"--http {bind}: refusing to serve the API on a non-loopback address without a token "
            "(anyone who reaches it could add and run jobs); give --token-file PATH or set "
            "CRAWLSCHED_TOKEN, or bind 127.0.0.1")
    listen_host = "127.0.0.1" if host == "localhost" else host  # one socket, one port
    app = create_app(daemon, token, host, port)
    try:
        server = waitress.create_server(app, host=listen_host, port=port, threads=4, ident="crawlsched",
                                        max_request_body_size=SERVER_MAX_BODY)
    except OSError as exc:
        raise CrawlschedError(f"--http {bind}: cannot listen there ({exc.strerror or exc})") from None
    real_port = int(server.effective_port)
    app.config["CRAWLSCHED_BIND"] = (host, real_port)
    handle = WebServer(server, host, real_port)
    handle.thread.start()
    daemon.log.info("web API on %s/scheduler%s", handle.url, " (token required)" if token else "")
    return handle
