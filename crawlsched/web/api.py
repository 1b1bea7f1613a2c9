"""The endpoint handlers: each reads or writes through the job store and the state, and knows
of the scheduler only its ``control.SchedulerView``."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from flask import Flask, Response, request

from crawlsched import control, render, timing
from crawlsched.errors import InvalidValue, JobFileError, JobNotFound
from crawlsched.model import Defaults, Job, JobFile
from crawlsched.durations import check_int
from crawlsched.schedules import check_timezone
from crawlsched.validate import build_job
from crawlsched.web.joblist import JobCards
from crawlsched.web.ops import MetricsExporter, health_problem, status_dict
from crawlsched.web.payload import START_KEYS, _given, add_fields, api_urls, json_body, legacy_schedule, retry_changes
from crawlsched.web.responses import _static_json, ok, reply

if TYPE_CHECKING:
    from crawlsched.control import SchedulerView
    from crawlsched.state import State
    from crawlsched.store import JobStore

UTC = timezone.utc


class Api:
    """The routes: each reads or writes through the job store and the state."""

    def __init__(self, store: JobStore, state: State, scheduler: SchedulerView, app: Flask, *,
                 home: Path, log: logging.Logger) -> None:
        self.store = store
        self.state = state
        self.scheduler = scheduler
        self.home = Path(home)
        self.log = log
        self.app = app
        self.exporter = MetricsExporter(state, scheduler)
        self.cards = JobCards()  # the job list's JSON, per job
        self._listed: tuple[Any, JobFile | None] = (None, None)  # (the file's stat key, its jobs) the list last read

    # --- shared -------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.scheduler.clock(), UTC)

    def load(self) -> JobFile:
        """The job file as it is now, for a write: a broken file raises ``JobFileError`` (422)."""
        return self.store.load()

    def load_for_read(self) -> tuple[JobFile, str | None]:
        """The jobs to show and the file's error (SPEC §5): a broken file shows the jobs the
        daemon is running (its last good file), never a 500."""
        try:
            return self.store.load(), None
        except JobFileError as exc:
            running = JobFile(defaults=self.scheduler.defaults or Defaults(), jobs=tuple(self.scheduler.jobs.values()))
            return running, str(exc)

    @staticmethod
    def file_facts(jobfile: JobFile, error: str | None) -> dict[str, Any]:
        """What the page needs beside the jobs: is the file applied, is there a default crawl, is the scheduler on."""
        return {
            "config_error": error,
            "default_crawl": bool(jobfile.defaults.url or jobfile.defaults.command),
            "scheduler_paused": jobfile.defaults.paused,
        }

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
        self.scheduler.request_reload()

    # --- jobs ---------------------------------------------------------------------

    def jobs(self) -> Response:
        """Every job (``render.job_dict``), written again only for the jobs that changed (``JobCards``).
        The answer carries ``valid_until``: the first instant a job in it changes by itself."""
        now = self.now()
        key = self.store.stat_key()
        listed_key, jobfile = self._listed
        error = None
        if jobfile is None or key is None or key != listed_key:  # the same key: the same file (conditional.py)
            jobfile, error = self.load_for_read()
            self._listed = (key, jobfile if error is None else None)
        states = self.state.job_states([j.id for j in jobfile.jobs])
        body, until = self.cards.body(jobfile.jobs, states, now, self.file_facts(jobfile, error))
        response = Response(body, mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        response.valid_until = until  # type: ignore[attr-defined]  # read by conditional.CachedJobs
        return response

    def add(self) -> Response:
        body = json_body()
        now = self.now()
        fields = add_fields(body, self.load().defaults)
        job = self.store.add(fields, now=now, id_taken=self.state.known_id)
        self.state.remember_id(job.id, now.timestamp())
        self.changed()
        return ok(message=render.ADDED.format(name=job.name), job_id=job.id)

    def show(self, ref: str) -> Response:
        limit = check_int("limit", request.args.get("limit", "50"), 1, 1000)
        now = self.now()
        jobfile, error = self.load_for_read()
        job = self.find(jobfile, ref)
        runs = self.state.runs(job.id, limit)
        extra = {"config_error": error} if error else {}
        return ok(job=self.job_dict(job, now), runs=[render.run_dict(r, job) for r in runs], **extra)

    def delete(self, ref: str) -> Response:
        removed = self.store.remove(self.find(self.load(), ref).id)
        self.changed()
        return ok(message=control.DELETED.format(name=removed.name), removed=[removed.id])

    def _set_paused(self, ref: str, paused: bool) -> Response:
        _given(json_body(), (), "this request (it takes no fields)")
        job = self.store.set_paused(self.find(self.load(), ref).id, paused)
        self.changed()
        message = (control.PAUSED if paused else control.RESUMED).format(name=job.name)
        return ok(message=message, job=self.job_dict(job, self.now()))

    def pause(self, ref: str) -> Response:
        return self._set_paused(ref, True)

    def resume(self, ref: str) -> Response:
        return self._set_paused(ref, False)

    def retry_config_get(self) -> Response:
        jobfile, error = self.load_for_read()
        extra = {"config_error": error} if error else {}
        return ok(message="Retry config", defaults=render.defaults_dict(jobfile.defaults), **extra)

    def retry_config(self) -> Response:
        changes = retry_changes(json_body())
        if not changes:
            return self.retry_config_get()
        defaults = self.store.set_defaults(changes)
        self.changed()
        return ok(message=control.RETRY_CONFIG_UPDATED, defaults=render.defaults_dict(defaults))

    # --- the seed's legacy endpoints ------------------------------------------------

    def start(self) -> Response:
        """Switch the scheduler on (remove ``[defaults] paused``); with a ``mode``, first create or
        replace the job ``default``. A job paused on its own stays paused."""
        given = _given(json_body(), START_KEYS, "the start request")
        job_id = None
        if given:
            if "mode" not in given:
                key = next(iter(given))
                raise InvalidValue(key, given[key], "needs mode (daily, hourly, interval or custom)")
            job_id = self._upsert_default(given).id
        if self.load().defaults.paused:
            self.store.set_defaults({"paused": None})
        self.changed()
        active = sum(1 for j in self.load().jobs if not j.paused)
        message = f"▶️ Scheduler started: {active} job{'s' if active != 1 else ''} scheduled"
        if job_id:
            message += f"; job '{job_id}' created"
        return ok(message=message, scheduler_paused=False, job_id=job_id)

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
            table["url"] = api_urls(given["url"], jobfile.defaults)
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
        """Switch the scheduler off: ``[defaults] paused = true``; every job keeps its own ``paused``."""
        _given(json_body(), (), "the stop request (it takes no fields)")
        if not self.load().defaults.paused:
            self.store.set_defaults({"paused": True})
        self.changed()
        return ok(message="⏹️ Scheduler stopped: no job fires until it is started again", scheduler_paused=True)

    def run_now(self) -> Response:
        given = _given(json_body(), ("job_id",), "the run-now request")
        ref = given.get("job_id", "default")
        if not isinstance(ref, str):
            raise InvalidValue("job_id", ref, "must be a job id or name")
        job = self.find(self.load_for_read()[0], ref)  # a broken file: the daemon still runs its last good jobs
        control.refuse_if_busy(self.state, job, chain_active=self.scheduler.is_busy(job.id))  # 409
        taken, message = control.hand_over(self.state, job, wake=self.scheduler.request_wake,
                                           wait=self.app.config["CRAWLSCHED_HANDOVER_WAIT"], source="api", poll=0.02)
        return ok(message=message, job_id=job.id, taken=taken)

    def status(self) -> Response:
        return reply(status_dict(self.store, self.state, self.scheduler, self.home, self.now(),
                                 self.app.config["CRAWLSCHED_BIND"]))

    # --- operations -------------------------------------------------------------------

    def healthz(self) -> Response:
        reason = health_problem(self.state, self.scheduler, self.scheduler.clock())
        if reason:
            return reply({"ok": False, "error": reason}, 503)
        return reply({"ok": True})

    def metrics(self) -> Response:
        gzip = bool(request.accept_encodings["gzip"])  # Prometheus asks for it
        response = Response(self.exporter.render("gzip" if gzip else None), content_type=self.exporter.content_type)
        response.vary.add("Accept-Encoding")
        if gzip:
            response.headers["Content-Encoding"] = "gzip"
        return response

    def openapi(self) -> Response:
        return _static_json("openapi.json")

