"""``crawlsched import FILE``: the seed's ``scheduler_jobs.json`` into the job file (SPEC §1, §5).

A seed record (the seed's "Konfigurasi File")::

    {"id": "job_20251107110530", "name": "Crawl Pagi Hari", "start_date": "2025-11-08",
     "end_date": "2025-12-31", "hour": 9, "minute": 5, "max_retries": 3, "retry_delay": 300,
     "status": "active", "created_at": "2025-11-07 11:05:30", "last_run": null, "last_message": null}

becomes a ``[[jobs]]`` table with the same id, name, dates, ``at = "09:05"``,
retry settings, ``paused`` (status ``paused`` or ``stopped``) and ``created_at``
(read in the job's zone: the seed wrote the server's local time). Its run
history (``last_run``, ``last_message``) is not carried over.

All or nothing: every record is checked first, and one bad record refuses the
whole file with ``scheduler_jobs.json: record 3 (id "…"): <field>: …`` (exit 2),
the job file untouched. Importing again replaces the same ids with the same
content, so it is safe to repeat. End dates in the past are accepted: such
jobs are simply finished.
"""

from __future__ import annotations

import json
import stat
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from crawlsched import timing
from crawlsched.errors import InvalidValue, SeedFileError, json_kind
from crawlsched.model import Defaults, Job, zone
from crawlsched.durations import check_int, check_seconds, parse_json_int
from crawlsched.schedules import at_from_hour_minute, check_date, check_timezone
from crawlsched.urls import check_urls
from crawlsched.validate import build_job, check_id, check_name
from crawlsched.state import State
from crawlsched.store import JobStore

SEED_MAX_BYTES = 16 * 2**20  #: the seed's scheduler_jobs.json of 10,000 jobs is about 2 MiB

PAUSED_STATUSES = ("paused", "stopped")
SEED_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Imported:
    """What an import did: ``jobs`` (every record's job), ``written`` (the ids it added or changed)."""

    jobs: list[Job]
    written: tuple[str, ...]

    def message(self, source: object) -> str:
        """``imported 2 jobs from FILE``; a repeat that changed nothing says so, not "imported"."""
        written, same = len(self.written), len(self.jobs) - len(self.written)
        if not self.jobs:
            return f"nothing to import: {source} holds no jobs"
        if not written:
            return f"nothing to import: {_jobs(same)} from {source} already present, unchanged"
        text = f"imported {_jobs(written)} from {source}"
        return text + (f" ({_jobs(same)} already present, unchanged)" if same else "")


def _jobs(n: int) -> str:
    return f"{n} job{'' if n == 1 else 's'}"


def import_seed(path: Path, store: JobStore, state: State | Callable[[], State | None] | None, now: datetime,
                default_url: str | None = None) -> list[Job]:
    """Read the seed's ``scheduler_jobs.json`` into ``store``; returns the jobs of its records."""
    return import_file(path, store, state, now, default_url).jobs


def import_file(path: Path, store: JobStore, state: State | Callable[[], State | None] | None, now: datetime,
                default_url: str | None = None) -> Imported:
    """Read the seed's ``scheduler_jobs.json`` into ``store``; says which jobs it wrote.

    ``state`` may be a callable that opens (or creates) the state database: it is
    called only once every record has been validated, so a refused file leaves
    no database (nor job file) behind.

    ``default_url`` (``import --url URL``) is the crawl of every record, for a
    job file whose ``[defaults]`` names none.
    """
    path = Path(path)
    label = path.name
    records = read_records(path)
    current = store.load()
    url = list(check_urls(default_url, "--url")) if default_url is not None else None
    if url is None and not (current.defaults.url or current.defaults.command) and not all(
        isinstance(r, Mapping) and "url" in r for r in records
    ):
        raise SeedFileError(
            f"{label}: the seed's jobs name no crawl target and the job file's [defaults] has no url or command; "
            "pass --url URL, or set a default crawl first with `crawlsched defaults --url URL`"
        )
    tables: list[dict[str, Any]] = []
    seen_ids: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    taken_names = {j.name: j.id for j in current.jobs}
    for number, record in enumerate(records, start=1):
        where = _where(label, number, record)
        try:
            table = seed_table(record, current.defaults, store.machine_tz, now, url)
            job = build_job(table, current.defaults, store.machine_tz)
        except InvalidValue as exc:
            raise SeedFileError(f"{where}: {exc}") from None
        if job.id in seen_ids:
            raise SeedFileError(f'{where}: id: "{job.id}" is used by record {seen_ids[job.id]} too; ids are unique')
        if job.name in seen_names:
            raise SeedFileError(f'{where}: name: "{job.name}" is used by record {seen_names[job.name]} too; names are unique')
        other = taken_names.get(job.name)
        if other is not None and other != job.id:
            raise SeedFileError(f'{where}: name: "{job.name}" is taken by job "{other}" in {store.path.name}; names are unique')
        seen_ids[job.id] = seen_names[job.name] = number
        tables.append(table)
    if not tables:
        return Imported([], ())
    # A record whose table is already in the file as it would be written is left
    # alone: importing the same file again does not touch the job file at all.
    present = _tables_by_id(store)
    changed = [t for t in tables if present.get(t["id"]) != t]
    if callable(state):
        state = state()  # validated: now the database may be created (before the jobs are written)
    if changed:
        store.add_many(changed, replace=True)
    final = store.load()
    jobs = [j for t in tables if (j := final.find(t["id"])) is not None]
    if state is not None:
        for job in jobs:
            state.remember_id(job.id, now.timestamp())
    return Imported(jobs, tuple(t["id"] for t in changed))


def _tables_by_id(store: JobStore) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(store.path.read_text(encoding="utf-8-sig"))  # a byte-order mark is no TOML
    except FileNotFoundError:
        return {}
    tables = data.get("jobs", [])
    return {t["id"]: t for t in tables if isinstance(t, dict) and isinstance(t.get("id"), str)} if isinstance(tables, list) else {}


def read_records(path: Path) -> list[Any]:
    """The seed file's JSON array: a regular file of at most ``SEED_MAX_BYTES`` (a device, a
    FIFO or a huge file is refused before it is read, not read until memory runs out)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # before opening it: opening a FIFO waits for a writer
            raise SeedFileError(f"{path}: is not a regular file (the seed's scheduler_jobs.json)")
        with open(path, "rb") as fh:
            data = fh.read(SEED_MAX_BYTES + 1)
        if len(data) > SEED_MAX_BYTES:
            raise SeedFileError(f"{path}: is larger than {SEED_MAX_BYTES // 2**20} MiB; a seed file of jobs is far smaller")
        text = data.decode("utf-8-sig")
    except FileNotFoundError:
        raise SeedFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedFileError(f"{path}: cannot be read ({exc})") from None
    try:
        data = json.loads(text, parse_int=parse_json_int)  # 4300+ digits: refused by the field, not a ValueError
    except json.JSONDecodeError as exc:
        raise SeedFileError(f"{path.name}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, list):
        raise SeedFileError(f"{path.name}: must hold a JSON array of jobs (the seed's scheduler_jobs.json), not {json_kind(data)}")
    return data


def seed_table(record: Any, defaults: Defaults, machine_tz: str, now: datetime, url: list[str] | None) -> dict[str, Any]:
    """One seed record → the keys of a ``[[jobs]]`` table (values checked, as ``add`` writes them)."""
    if not isinstance(record, Mapping):
        raise InvalidValue("record", record, "must be a JSON object")
    if "id" not in record:
        raise InvalidValue("id", None, "is missing; every seed job has an id")
    job_id = check_id(record["id"])
    tz = check_timezone(record["timezone"]) if record.get("timezone") is not None else defaults.timezone or machine_tz
    table: dict[str, Any] = {"id": job_id, "name": check_name(record.get("name") or job_id)}
    if record.get("hour") is None:
        raise InvalidValue("hour", None, "is missing; a seed job runs daily at hour:minute")
    table["at"] = at_from_hour_minute(record["hour"], record.get("minute"))
    start = check_date("start_date", record.get("start_date"))
    table["start_date"] = start if start is not None else timing.today_in(tz, now)
    end = check_date("end_date", record.get("end_date"))
    if end is not None:
        table["end_date"] = end
    if record.get("url") is not None:
        table["url"] = list(check_urls(record["url"]))
    elif url is not None:
        table["url"] = url
    if record.get("max_retries") is not None:
        table["max_retries"] = check_int("max_retries", record["max_retries"], 0, 1000)
    if record.get("retry_delay") is not None:
        delay = check_seconds("retry_delay", record["retry_delay"])
        table["retry_delay"] = int(delay) if delay is not None and delay.is_integer() else delay
    table["timezone"] = tz
    status = record.get("status")
    if status is not None and not isinstance(status, str):
        raise InvalidValue("status", status, "must be a text (active, paused, stopped, success, failed, retrying)")
    if status in PAUSED_STATUSES:
        table["paused"] = True
    table["created_at"] = _created_at(record.get("created_at"), tz, now)
    return table


def _created_at(value: Any, tz: str, now: datetime) -> datetime:
    if value is None:
        return now.astimezone(zone(tz)).replace(microsecond=0)
    if isinstance(value, str):
        for parse in (lambda v: datetime.strptime(v, SEED_TIME), datetime.fromisoformat):
            try:
                parsed = parse(value.strip())
            except ValueError:
                continue
            aware = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone(tz))
            return aware.replace(microsecond=0)
    raise InvalidValue("created_at", value, "is not a date-time (YYYY-MM-DD HH:MM:SS)")


def _where(label: str, number: int, record: Any) -> str:
    ident = record.get("id") if isinstance(record, Mapping) else None
    shown = f" (id {json.dumps(ident[:64], ensure_ascii=False)})" if isinstance(ident, str) else ""
    return f"{label}: record {number}{shown}"
