"""The Flask app: the guard, the error handlers, the page and the route table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, redirect, request
from werkzeug.exceptions import HTTPException

from crawlsched.errors import CrawlschedError
from crawlsched.web import guards, runs
from crawlsched.web.api import Api
from crawlsched.web.guards import MAX_BODY
from crawlsched.web.responses import _static, error

if TYPE_CHECKING:
    from crawlsched.control import SchedulerView
    from crawlsched.state import State
    from crawlsched.store import JobStore

HANDOVER_WAIT = 1.0  # seconds run-now waits for the daemon to take the request
STATIC_SUFFIXES = {".html", ".css", ".js", ".svg", ".png", ".ico"}


def create_app(store: JobStore, state: State, scheduler: SchedulerView, *, home: Path, log: logging.Logger,
               token: str | None = None, bind_host: str = "127.0.0.1", bind_port: int = 5000) -> Flask:
    """The Flask app over a home's job file (``store``), its state and the scheduler serving it
    (``control.SchedulerView``: what the web may read of the loop, and its two requests).
    ``bind_port`` may be updated later in ``app.config``."""
    app = Flask("crawlsched.web", static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY,
        CRAWLSCHED_BIND=(bind_host, bind_port),
        CRAWLSCHED_HANDOVER_WAIT=HANDOVER_WAIT,
    )
    api = Api(store, state, scheduler, app, home=home, log=log)
    guards.install(app, token, log)

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
    runs.install(app, api)  # the page's monitoring routes (crawlsched.web.runs)
    return app
