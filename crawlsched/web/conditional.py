"""The job list, answered again without rebuilding it while nothing it shows has changed.

The page asks for ``GET /api/scheduler/jobs`` every 2 s. Building that answer is
O(jobs) of Python (a job's status, next run, times in its zone: about 50 µs a job),
so with 1,000 jobs a tab would cost the daemon several % of a core for answers that
are the same each time. This wraps the route: the answer is kept with a key of what
it was built from — the job file's identity (inode, size, mtime), and of the state,
the newest run's id, the running attempts, the pending retries and the jobs' anchors
(a few indexed reads) — and is built again only when that key changes, when the
earliest next run or next retry in it comes (the times in it move then), or after
``MAX_AGE`` seconds (a running attempt whose process died shows as failed without
any write). An ``If-None-Match`` with the current ``ETag`` gets an empty 304.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime
from typing import Any, Callable

from flask import Response, request

MAX_AGE = 30.0  # seconds an unchanged answer is served before it is built again anyway


class CachedJobs:
    def __init__(self, view: Callable[[], Response], store: Any, state: Any, clock: Callable[[], float]) -> None:
        self.view = view
        self.store = store
        self.state = state
        self.clock = clock
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._body: bytes = b""
        self._headers: dict[str, str] = {}
        self._status = 200
        self._etag = ""
        self._until = 0.0

    def key(self) -> tuple:
        return (self.store.stat_key(), *self.state.jobs_view_marks())

    def __call__(self) -> Response:
        now = self.clock()
        key = self.key()
        with self._lock:
            fresh = key == self._key and now < self._until
        if not fresh:
            response = self.view()
            body = response.get_data()
            if response.status_code != 200:
                return response
            earliest = getattr(response, "valid_until", None)  # the job list says; else read it from the answer
            if earliest is None:
                earliest = _earliest_time(response.get_json(silent=True) or {}, now)
            until = min(now + MAX_AGE, max(earliest, now + 0.5))
            etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
            with self._lock:
                self._key, self._body, self._until, self._etag = key, body, until, etag
                self._headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "etag")}
        with self._lock:
            body, headers, etag = self._body, dict(self._headers), self._etag
        if etag in request.headers.get("If-None-Match", ""):
            out = Response(status=304)
        else:
            out = Response(body, status=200)
            out.headers.update(headers)
        out.headers["ETag"] = etag
        out.headers["Cache-Control"] = "no-cache"
        return out


def _earliest_time(data: dict[str, Any], now: float) -> float:
    """The first instant a job's next run or next retry passes: its status and times change then."""
    earliest = float("inf")
    for job in data.get("jobs") or ():
        for name in ("next_run_iso", "next_retry_iso"):
            text = job.get(name)
            if text:
                try:
                    at = datetime.fromisoformat(text).timestamp()
                except ValueError:
                    continue
                if at < earliest:
                    earliest = at
    return max(earliest, now + 0.5)  # a time already past: build again shortly, not on every request


def install(app: Any, api: Any) -> CachedJobs:
    """Put the cache in front of the job list's route (whatever that route puts in its answer)."""
    endpoint = next(rule.endpoint for rule in app.url_map.iter_rules() if rule.rule == "/api/scheduler/jobs")
    cached = CachedJobs(app.view_functions[endpoint], api.store, api.state, api.scheduler.clock)
    app.view_functions[endpoint] = cached
    return cached
