"""The page's monitoring routes: a job's runs, its chart, a run's body or log, the cards' strips, edits.

- ``GET /api/scheduler/job/<id>/runs`` (``limit``, ``since``, ``status``, ``before``):
  runs newest first, each with its attempts (``crawlsched.fires``);
- ``GET /api/scheduler/job/<id>/stats`` (``since``, ``bucket``): runs per day or hour
  stacked by outcome, and the success rates over that window;
- ``GET /api/scheduler/job/<id>/runs/<run id>/body/<n>`` and ``…/log``: a run's saved
  body or an attempt's log, as text (never as HTML), only files of that job and run
  under the home: the path is built from the run's row, never from the request;
- ``GET /api/scheduler/recent`` (``changed_after``): the last runs of every job (the
  cards' strips; with ``changed_after``, only the strips changed since that version)
  and the fleet's last 24 h, with an ``ETag`` so an unchanged answer costs a 304;
- ``PATCH /api/scheduler/job/<id>``: the add form's fields for an existing job, through
  ``JobStore.edit`` (the code ``crawlsched edit`` uses).

The read routes also answer for a job removed from the file whose history is still kept
(``"removed": true``): what it did stays readable after it is gone.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Response, request, send_file

from crawlsched import control, render, timing
from crawlsched.errors import InvalidValue, JobNotFound, RunNotFound, Unsupported
from crawlsched.fires import OUTCOMES, Fire, StripCache, job_fires, job_stats, since_text
from crawlsched.model import Job, ScheduleKind
from crawlsched.durations import check_int
from crawlsched.validate import ID_RE, check_name
from crawlsched.runfiles import sniff
from crawlsched.crawl.runs import run_dir, run_log
from crawlsched.state import Run
from crawlsched.web.payload import (ADD_KEYS, CONVERT, SCHEDULE_KEYS, _given, json_body, refuse_commands, refuse_environment,
                                    refuse_private_targets, schedule_fields)
from crawlsched.web.responses import error, ok, reply, scrub

if TYPE_CHECKING:
    from crawlsched.web.api import Api

EDIT_KEYS = (*ADD_KEYS, "no_end")
PREVIEW = 64 * 1024  # bytes of a body or log the page shows; the whole file is a link away
MESSAGE_CUT = 160  # characters of a message in a strip's tooltip
TEXT_TYPES = ("text/", "application/json", "application/xml")

def _inside(path: Path, root: Path) -> Path | None:
    """``path`` resolved, if it is a regular file under ``root`` (symbolic links followed, then checked)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


class RunsApi:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.state = api.state
        self._zones: dict[str, str] = {}
        self._jobs_key: Any = None
        self.strips = StripCache(api.state, self._strip_json, monotonic=api.scheduler.monotonic)

    @property
    def home(self) -> Path:
        return self.api.home.resolve()

    # --- helpers -------------------------------------------------------------------

    def _job(self, ref: str) -> Job:
        """A job to read about: with a broken job file, one the daemon is running (reads never fail on it)."""
        return self._job_or_removed(ref)[0]

    def _job_or_removed(self, ref: str) -> tuple[Job, bool]:
        """(the job, whether it was removed): an id no longer in the file whose history is kept
        reads as a stand-in job of that id, in the file's zone (its own zone went with it)."""
        jobfile = self.api.load_for_read()[0]
        try:
            return self.api.find(jobfile, ref), False
        except JobNotFound:
            if not ID_RE.fullmatch(ref) or not self.state.runs(ref, 1):
                raise
        zone = jobfile.defaults.timezone or self.api.store.machine_tz
        return Job(id=ref, name=ref, kind=ScheduleKind.EVERY, spec="1d", timezone=zone), True

    def _bodies(self, job: Job, fire: Fire) -> list[dict[str, Any]]:
        if job.command is not None and not job.urls:
            return []
        first = fire.rows[0]
        if first.attempt == 0:
            return []
        root = self.home / "data" / job.id
        folder = run_dir(self.home, job, first.scheduled_for, first.trigger)
        try:
            names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        except OSError:
            return []
        out = []
        for index, name in enumerate(names):
            real = _inside(folder / name, root)
            if real is not None:
                out.append({"index": index, "name": name, "size": real.stat().st_size})
        return out

    def _log_size(self, job: Job, run: Run) -> int | None:
        if run.attempt == 0:
            return None
        real = _inside(run_log(self.home, job, run.scheduled_for, run.attempt, run.trigger),
                       self.home / "logs" / "runs" / job.id)
        return real.stat().st_size if real is not None else None

    def fire_dict(self, job: Job, fire: Fire) -> dict[str, Any]:
        attempts = []
        for run in fire.rows:
            d = render.run_dict(run, job)
            d["duration"] = _duration(run)
            d["log_size"] = self._log_size(job, run)
            attempts.append(d)
        first, last = fire.rows[0], max(fire.rows, key=lambda r: (r.attempt, r.id))
        tz = job.timezone
        out: dict[str, Any] = {
            "id": fire.id,
            "job_id": job.id,
            "status": fire.status,
            "trigger": first.trigger,
            **_times("scheduled_for", first.scheduled_for, tz),
            **_times("started_at", first.started_at, tz),
            **_times("finished_at", last.finished_at, tz),
            "duration": _span(first.started_at, last.finished_at),
            "attempts": attempts,
            "attempt_count": sum(1 for r in fire.rows if r.attempt > 0),
            "max_attempts": last.max_attempts,
            "message": last.message,
            "http_status": last.http_status,
            "exit_code": last.exit_code,
            "bytes": last.bytes,
            "bodies": self._bodies(job, fire),
        }
        return out

    # --- routes ----------------------------------------------------------------------

    def runs(self, ref: str) -> Response:
        job, removed = self._job_or_removed(ref)
        args = request.args
        limit = check_int("limit", args.get("limit", "20"), 1, 200)
        before = check_int("before", args["before"], 1, 2**53) if "before" in args else None
        statuses = _statuses(args.get("status"))
        now = self.api.now()
        since = since_text(args["since"], now, job.timezone) if args.get("since") else None
        page = job_fires(self.state, job.id, limit=limit, before=before,
                         since=since.timestamp() if since else None, statuses=statuses)
        return ok(job_id=job.id, removed=removed, runs=[self.fire_dict(job, f) for f in page.fires],
                  next_before=page.next_before)

    def stats(self, ref: str) -> Response:
        job, removed = self._job_or_removed(ref)
        args = request.args
        now = self.api.now()
        bucket = args.get("bucket", "day")
        if bucket not in ("day", "hour"):
            raise InvalidValue("bucket", bucket, "must be day or hour")
        since = since_text(args.get("since") or ("24h" if bucket == "hour" else "7d"), now, job.timezone)
        if since >= now:
            raise InvalidValue("since", args.get("since"), "must be in the past")
        limit = timedelta(days=31) if bucket == "hour" else timedelta(days=3700)
        if now - since > limit:
            raise InvalidValue("since", args.get("since"), f"is more than {limit.days} days back for bucket {bucket}")
        stats = job_stats(self.state, job.id, since=since, until=now + timedelta(seconds=1), bucket=bucket, tz=job.tz)
        return ok(job_id=job.id, removed=removed, bucket=bucket, since=since.astimezone(job.tz).isoformat(timespec="seconds"),
                  until=now.astimezone(job.tz).isoformat(timespec="seconds"), buckets=stats.buckets,
                  runs=stats.runs, attempts=stats.attempts, success_rate=stats.success_rate,
                  run_success_rate=stats.run_success_rate)

    def _row(self, job: Job, run_id: int) -> Run:
        run = self.state.run(run_id)
        if run is None or run.job_id != job.id:
            raise RunNotFound(f"job {job.id} has no run {run_id}")
        return run

    def body(self, ref: str, run_id: int, index: int) -> Response:
        job = self._job(ref)
        run = self._row(job, run_id)
        bodies = self._bodies(job, Fire([run]))
        if index >= len(bodies):
            raise RunNotFound(f"run {run_id} of job {job.id} has no saved body number {index}")
        folder = run_dir(self.home, job, run.scheduled_for, run.trigger)
        real = _inside(folder / bodies[index]["name"], self.home / "data" / job.id)
        if real is None:
            raise RunNotFound(f"run {run_id} of job {job.id} has no saved body number {index}")
        return _file(real, bodies[index]["name"])

    def log(self, ref: str, run_id: int) -> Response:
        job = self._job(ref)
        run = self._row(job, run_id)
        real = None
        if run.attempt > 0:
            real = _inside(run_log(self.home, job, run.scheduled_for, run.attempt, run.trigger),
                           self.home / "logs" / "runs" / job.id)
        if real is None:
            raise RunNotFound(f"run {run_id} of job {job.id} has no log")
        return _file(real, real.name)

    def recent(self) -> Response:
        ids = self._job_ids()
        version = self.strips.update(ids)
        fleet = self.strips.fleet(self.api.scheduler.clock())
        tag = f'"{version}-{fleet["attempts_24h"]}-{fleet["successes_24h"]}"'
        if tag in request.headers.get("If-None-Match", ""):
            response = Response(status=304)
        else:
            full, fragments = self.strips.changed_since(ids, request.args.get("changed_after"))
            strips = ", ".join(f"{json.dumps(job_id)}: {fragment}" for job_id, fragment in fragments.items())
            body = (f'{{"success": true, "version": {json.dumps(version)}, "full": {json.dumps(full)}, '
                    f'"recent": {{{strips}}}, "fleet": {json.dumps(fleet)}}}')
            response = Response(body, mimetype="application/json")
        response.headers["ETag"] = tag
        response.headers["Cache-Control"] = "no-cache"
        return response

    def _job_ids(self) -> list[str]:
        key = self.api.store.stat_key()
        if key is None or key != self._jobs_key:  # the job file is read again only when it changed
            self._zones = {j.id: j.timezone for j in self.api.load_for_read()[0].jobs}
            self._jobs_key = key
        return list(self._zones)

    def warm(self) -> None:
        """Read every job's strip in a background thread, so the first page to open finds them ready."""

        def run() -> None:
            try:
                ids = self._job_ids()
                self.strips.update(ids)
                self.strips.changed_since(ids, None)  # and each strip's JSON
            except Exception:  # noqa: BLE001 -- a cold cache is only slower; the route reads it again
                self.api.log.debug("warming the strips failed", exc_info=True)

        threading.Thread(target=run, name="crawlsched-strips", daemon=True).start()

    def _strip_json(self, job_id: str, fires: list[Fire]) -> str:
        tz = timing.zone(self._zones.get(job_id, "UTC"))
        return json.dumps([_strip_entry(f, tz) for f in fires], ensure_ascii=False)

    def edit(self, ref: str) -> Response:
        if request.content_length and request.mimetype != "application/json":
            raise Unsupported(f"a PATCH body must be application/json, not {request.headers.get('Content-Type') or 'untyped'}")
        body = json_body()
        now = self.api.now()
        jobfile = self.api.load()
        job = self.api.find(jobfile, ref)
        try:
            changes, remove = edit_changes(body, jobfile.defaults)
            edited = self.api.store.edit(job.id, changes, now=now, remove=remove)
        except InvalidValue as exc:
            return _field_error(exc)
        self.api.changed()
        return ok(message=control.UPDATED.format(name=edited.name), job=self.api.job_dict(edited, now))


def edit_changes(body: dict[str, Any], defaults: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The PATCH body → the changes ``JobStore.edit`` takes (each value checked as ``add`` checks it)."""
    given = _given(body, EDIT_KEYS, "a job's changes")
    no_end = given.pop("no_end", False)
    if not isinstance(no_end, bool):
        raise InvalidValue("no_end", no_end, "must be true or false")
    refuse_commands(given, defaults)
    changes: dict[str, Any] = {}
    if any(k in given for k in SCHEDULE_KEYS):
        changes.update(schedule_fields(given))
    if "name" in given:
        changes["name"] = check_name(given["name"]).strip()
    for key, convert in CONVERT.items():
        if key in given:
            changes[key] = convert(given[key])
    if "url" in changes and "command" in changes:
        raise InvalidValue("command", changes["command"], "cannot be set together with url (choose one crawl)")
    # The same guards as an added job's (SPEC §7): no ${NAME} the job file does not allow,
    # no private address under http_targets = "public".
    refuse_environment("url", changes.get("url", ()), defaults)
    refuse_environment("headers", changes.get("headers", {}).values(), defaults)
    refuse_private_targets(changes.get("url", ()), defaults)
    if no_end and "end_date" in changes:
        raise InvalidValue("end_date", given["end_date"], "cannot be given together with no_end")
    if not changes and not no_end:
        raise InvalidValue("body", "{}", "changes nothing; give at least one field of the add form")
    return changes, ("end_date",) if no_end else ()


def _field_error(exc: InvalidValue) -> Response:
    """A refused value (422, or 409 for a taken name), with the field it names for the page's form."""
    response = reply({"success": False, "error": scrub(str(exc)), "field": exc.field}, exc.http_status)
    return response


def _file(path: Path, name: str) -> Response:
    """A body or log as text (``?max=N`` for its first N bytes), never as something a browser renders."""
    size = path.stat().st_size
    limit = check_int("max", request.args["max"], 1, 2**53) if "max" in request.args else None
    kind = sniff(path)  # what its first bytes show (crawlsched.runfiles, as `crawlsched logs` says it)
    textual = kind is not None and kind.startswith(TEXT_TYPES)
    safe_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:200] or "file"
    if limit is not None and limit < size:
        with path.open("rb") as fh:
            data = fh.read(limit)
        response = Response(data, mimetype="text/plain" if textual else "application/octet-stream")
        response.headers["X-Crawlsched-Truncated"] = "1"
    else:
        response = send_file(path, mimetype="text/plain" if textual else "application/octet-stream",
                             as_attachment=not textual, download_name=safe_name, max_age=0, conditional=False)
    if textual:
        response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["Content-Disposition"] = f'{"inline" if textual else "attachment"}; filename="{safe_name}"'
    response.headers["X-Crawlsched-Size"] = str(size)
    response.headers["X-Crawlsched-Content-Type"] = kind or "application/octet-stream"
    response.headers["Cache-Control"] = "no-store"
    return response


def _statuses(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    items = tuple(s.strip() for s in value.split(",") if s.strip())
    for s in items:
        if s not in OUTCOMES:
            raise InvalidValue("status", s, f"must be one of {', '.join(OUTCOMES)} (several: failed,interrupted)")
    return items


def _times(name: str, epoch: float | None, tz: str) -> dict[str, str | None]:
    plain, iso = timing.local_pair(timing.from_epoch(epoch), tz)
    return {name: plain, name + "_iso": iso}


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start), 3)


def _duration(run: Run) -> float | None:
    return _span(run.started_at, run.finished_at)


def _strip_entry(fire: Fire, tz: Any) -> list[Any]:
    """``[id, status, scheduled for, attempts, max attempts, message]``: compact, 1,000 cards × 20 runs of them."""
    last = max(fire.rows, key=lambda r: (r.attempt, r.id))
    message = " ".join((last.message or "").split())
    when = datetime.fromtimestamp(fire.rows[0].scheduled_for, tz).strftime("%Y-%m-%d %H:%M:%S")
    return [fire.id, fire.status, when, sum(1 for r in fire.rows if r.attempt > 0), last.max_attempts,
            message if len(message) <= MESSAGE_CUT else message[: MESSAGE_CUT - 1] + "…"]


def install(app: Any, api: Api) -> RunsApi:
    """Add the monitoring routes to ``app``."""
    from crawlsched.web import conditional

    conditional.install(app, api)  # the job list: rebuilt only when what it shows changed
    runs = RunsApi(api)
    for method, rule, view in (
        ("GET", "/api/scheduler/recent", runs.recent),
        ("PATCH", "/api/scheduler/job/<ref>", runs.edit),
        ("GET", "/api/scheduler/job/<ref>/runs", runs.runs),
        ("GET", "/api/scheduler/job/<ref>/stats", runs.stats),
        ("GET", "/api/scheduler/job/<ref>/runs/<int:run_id>/body/<int:index>", runs.body),
        ("GET", "/api/scheduler/job/<ref>/runs/<int:run_id>/log", runs.log),
    ):
        app.add_url_rule(rule, endpoint=f"monitor_{view.__name__}", view_func=view, methods=[method])
    app.config["CRAWLSCHED_MONITOR"] = runs
    return runs
