"""Validating a job file's tables: ``[[jobs]]`` into ``Job``, ``[defaults]`` into ``Defaults``.

Every value is checked where it is built (``build_job``, ``build_defaults``, the
``check_*`` functions of a job's own fields, which the CLI and the API share),
with a message that names the field, the value and what is allowed
(``InvalidValue``). The checks of the other values live with their concept:
durations and numbers in ``crawlsched.durations``, schedules, dates and zones in
``crawlsched.schedules``, URLs in ``crawlsched.urls``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Mapping

from crawlsched.dsn import check_dsn
from crawlsched.durations import check_int, check_multiplier, check_seconds
from crawlsched.errors import InvalidValue
from crawlsched.model import (
    DEFAULT_KEYS,
    EXECUTORS,
    JOB_KEYS,
    MAX_DATE,
    MIN_DATE,
    CatchUp,
    Defaults,
    Job,
    KeepHistory,
    ScheduleKind,
)
from crawlsched.schedules import check_date, check_timezone, normalize_every, parse_at, parse_cron
from crawlsched.urls import check_urls

ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # always .fullmatch: "$" would accept a final "\n"
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 200
# What a job that names no crawl is told, by the CLI and the API alike (SPEC §8: say how to set one).
NO_CRAWL = ("is missing: this job names no crawl (url or command) and [defaults] has no default crawl; "
            "give the job a url or a command, or set a default crawl with `crawlsched defaults --url URL`")
KEEP_HISTORY_RE = re.compile(r"\s*(\d+)\s*(d|days?|runs?)\s*", re.IGNORECASE)
MAX_KEEP_DAYS = 3653  # ten years, the bound of every other span (SPEC §7)


def check_keep_history(value: Any, field_name: str = "defaults.keep_history") -> KeepHistory:
    """``365`` or ``"365d"`` (days), ``"10000 runs"`` (the newest rows, over all jobs), or ``"forever"``."""
    allowed = 'takes days (365 or "365d", at most 3653), a number of history rows ("10000 runs") or "forever"'
    if isinstance(value, str) and value.strip().lower() == "forever":
        return KeepHistory()
    if isinstance(value, int) and not isinstance(value, bool):
        days: int | None = value
        runs = None
    elif isinstance(value, str) and (match := KEEP_HISTORY_RE.fullmatch(value)):
        number, unit = int(match.group(1)), match.group(2).lower()
        days, runs = (number, None) if unit.startswith("d") else (None, number)
    else:
        raise InvalidValue(field_name, value, allowed)
    if days is not None and not 1 <= days <= MAX_KEEP_DAYS:
        raise InvalidValue(field_name, value, allowed)
    if runs is not None and not 1 <= runs <= 2**53:
        raise InvalidValue(field_name, value, "keeps from 1 to 2^53 runs")
    return KeepHistory(days=days, runs=runs)


def check_keep_logs(value: Any, field_name: str = "defaults.keep_logs") -> int:
    """Days of daily log files kept: ``30`` or ``"30d"``."""
    if isinstance(value, str) and (match := KEEP_HISTORY_RE.fullmatch(value)) and match.group(2).lower().startswith("d"):
        value = int(match.group(1))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_KEEP_DAYS:
        raise InvalidValue(field_name, value, 'takes days of log files to keep (30 or "30d", from 1 to 3653)')
    return value

def check_command(value: Any, field_name: str = "command") -> str:
    import shlex

    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise InvalidValue(field_name, value, "must be a non-empty command line")
    try:
        shlex.split(value)
    except ValueError as exc:
        raise InvalidValue(field_name, value, f"cannot be split into arguments ({exc})") from None
    return value

def check_env_names(field_name: str, value: Any) -> tuple[str, ...]:
    """A list of environment variable names, as ``${NAME}`` uses them."""
    if not isinstance(value, list) or not all(isinstance(v, str) and ENV_NAME_RE.fullmatch(v) for v in value):
        shown = value if not isinstance(value, list) else next(
            (v for v in value if not (isinstance(v, str) and ENV_NAME_RE.fullmatch(v))), value)
        raise InvalidValue(field_name, shown, 'must be a list of variable names, e.g. ["NEWS_TOKEN"] (letters, digits, _)')
    return tuple(value)


def check_bool(field_name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue(field_name, value, "must be true or false")
    return value


def check_name(value: Any) -> str:
    if value is None:
        raise InvalidValue("name", None, "missing: every job has a name")
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue("name", value, "must be a non-empty text")
    if len(value) > MAX_NAME:
        raise InvalidValue("name", value, f"is longer than {MAX_NAME} characters")
    if not value.isprintable():
        raise InvalidValue("name", value, "must be printable text: no control or invisible characters"
                                          " (NUL, newlines, tabs, zero-width spaces, lone surrogates)")
    return value.strip()


def check_id(value: Any) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidValue("id", value, "must match [a-z0-9][a-z0-9_-]* (at most 64 characters)")
    return value


def check_headers(value: Any, field_name: str = "headers") -> dict[str, str]:
    if not isinstance(value, Mapping):
        # A header written as one text ("Authorization: Bearer …") holds its secret: never echo it.
        raise InvalidValue(field_name, "<hidden>", 'must be a table of header names to texts, e.g. { Authorization = "Bearer ${TOKEN}" }')
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not HEADER_NAME_RE.fullmatch(key):
            raise InvalidValue(f"{field_name}.{key}", key, "is not a valid HTTP header name")
        if not isinstance(val, str) or any(c in val for c in "\r\n\x00"):
            # The value itself may be a secret: never echo it.
            raise InvalidValue(f"{field_name}.{key}", "<hidden>", "must be one line of text")
        out[key] = val
    return out


def check_verify(value: Any) -> bool | str:
    if isinstance(value, bool) or (isinstance(value, str) and value and "\x00" not in value):
        return value
    raise InvalidValue("verify", value, "must be true, false or the path of a CA bundle")


def check_catch_up(value: Any, field_name: str = "catch_up") -> CatchUp:
    try:
        return CatchUp(value)
    except ValueError:
        raise InvalidValue(field_name, value, "must be one of latest, none, all") from None


def slug_id(name: str) -> str:
    """An id made from a name: lower case ASCII, ``[a-z0-9][a-z0-9_-]*``, at most 48 characters."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9_]+", "-", ascii_name).strip("-_")[:48].strip("-_")
    return slug or "job"


def build_defaults(raw: Mapping[str, Any]) -> Defaults:
    """Validate a ``[defaults]`` table."""
    if not isinstance(raw, Mapping):
        raise InvalidValue("defaults", raw, "must be a table")
    for key in raw:
        if key not in DEFAULT_KEYS:
            raise InvalidValue(f"defaults.{key}", raw[key] if not isinstance(raw[key], Mapping) else "{…}", f"is not a known key of [defaults] (allowed: {', '.join(DEFAULT_KEYS)})")
    kw: dict[str, Any] = {}
    _common(raw, kw, prefix="defaults.")
    if "max_concurrent" in raw:
        kw["max_concurrent"] = check_int("defaults.max_concurrent", raw["max_concurrent"], 1, 10000)
    if "url" in raw:
        kw["url"] = check_urls(raw["url"], "defaults.url")
    if "command" in raw:
        kw["command"] = check_command(raw["command"], "defaults.command")
    if "url" in raw and "command" in raw:
        raise InvalidValue("defaults.command", raw["command"], "cannot be set together with defaults.url (choose one crawl)")
    if "allow_http_commands" in raw:
        kw["allow_http_commands"] = check_bool("defaults.allow_http_commands", raw["allow_http_commands"])
    if "grace_period" in raw:
        kw["grace_period"] = check_seconds("defaults.grace_period", raw["grace_period"])
    if "allow_http_env" in raw:
        kw["allow_http_env"] = check_env_names("defaults.allow_http_env", raw["allow_http_env"])
    if "http_targets" in raw:
        if raw["http_targets"] not in ("any", "public"):
            raise InvalidValue("defaults.http_targets", raw["http_targets"], 'must be "any" or "public"')
        kw["http_targets"] = raw["http_targets"]
    if "keep_history" in raw:
        kw["keep_history"] = check_keep_history(raw["keep_history"])
    if "keep_logs" in raw:
        kw["keep_logs"] = check_keep_logs(raw["keep_logs"])
    if "paused" in raw:
        kw["paused"] = check_bool("defaults.paused", raw["paused"])
    if "state" in raw:
        kw["state"] = check_dsn(raw["state"], "defaults.state")
    if "executor" in raw:
        kw["executor"] = check_executor(raw["executor"])
    return Defaults(**kw)


def check_executor(value: Any, field_name: str = "defaults.executor") -> str:
    """Who runs the attempts: ``local`` (the daemon's threads) or ``workers`` (needs a PostgreSQL state)."""
    if value not in EXECUTORS or not isinstance(value, str):
        raise InvalidValue(field_name, value, 'must be "local" (the daemon runs the attempts) or "workers" '
                           '(`crawlsched worker` processes run them; needs a PostgreSQL state)')
    return value


def _common(raw: Mapping[str, Any], kw: dict[str, Any], prefix: str = "") -> None:
    """Keys a job and ``[defaults]`` share."""
    if "max_retries" in raw:
        kw["max_retries"] = check_int(prefix + "max_retries", raw["max_retries"], 0, 1000)
    if "retry_delay" in raw:
        kw["retry_delay"] = check_seconds(prefix + "retry_delay", raw["retry_delay"])
    if "retry_backoff" in raw:
        kw["retry_backoff"] = check_multiplier(prefix + "retry_backoff", raw["retry_backoff"], 1, 100,
                                               "must be a multiplier from 1 to 100 (1 = fixed delay)")
    if "retry_max_delay" in raw:
        kw["retry_max_delay"] = check_seconds(prefix + "retry_max_delay", raw["retry_max_delay"])
    if "timezone" in raw:
        kw["timezone"] = check_timezone(raw["timezone"], prefix + "timezone")
    if "timeout" in raw:
        timeout = check_seconds(prefix + "timeout", raw["timeout"])
        if timeout is not None and timeout < 1:
            raise InvalidValue(prefix + "timeout", raw["timeout"], "must be at least 1 second")
        kw["timeout"] = timeout
    if "headers" in raw:
        kw["headers"] = check_headers(raw["headers"], prefix + "headers")
    if "catch_up" in raw:
        kw["catch_up"] = check_catch_up(raw["catch_up"], prefix + "catch_up")
    if "on_failure" in raw:
        kw["on_failure"] = check_command(raw["on_failure"], prefix + "on_failure")
    if "max_bytes" in raw:
        kw["max_bytes"] = check_int(prefix + "max_bytes", raw["max_bytes"], 1)
    if "verify" in raw:
        kw["verify"] = check_verify(raw["verify"])
    if "user_agent" in raw:
        ua = raw["user_agent"]
        if not isinstance(ua, str) or not ua or any(not c.isprintable() for c in ua):
            raise InvalidValue(prefix + "user_agent", ua, "must be one line of text")
        kw["user_agent"] = ua
    if "keep_runs" in raw:
        kw["keep_runs"] = check_int(prefix + "keep_runs", raw["keep_runs"], 1)


def build_job(raw: Mapping[str, Any], defaults: Defaults, machine_tz: str = "UTC") -> Job:
    """Validate one ``[[jobs]]`` table and apply the defaults to it."""
    if not isinstance(raw, Mapping):
        raise InvalidValue("jobs", raw, "each job must be a table ([[jobs]])")
    for key in raw:
        if key not in JOB_KEYS:
            shown = raw[key] if not isinstance(raw[key], Mapping) else "{…}"
            raise InvalidValue(key, shown, f"is not a known job key (allowed: {', '.join(JOB_KEYS)})")
    if "id" not in raw:
        raise InvalidValue("id", None, "is missing; every job needs an id ([a-z0-9][a-z0-9_-]*)")
    job_id = check_id(raw["id"])
    name = check_name(raw.get("name", job_id))

    kinds = [k for k in ("at", "cron", "every") if k in raw]
    if len(kinds) != 1:
        given = ", ".join(kinds) or "none"
        raise InvalidValue("schedule", given, "must be exactly one of at, cron, every")
    kind = ScheduleKind(kinds[0])
    if kind is ScheduleKind.AT:
        spec = parse_at(raw["at"])
    elif kind is ScheduleKind.CRON:
        spec = parse_cron(raw["cron"])
    else:
        spec = normalize_every(raw["every"])

    kw: dict[str, Any] = {
        "max_retries": defaults.max_retries,
        "retry_delay": defaults.retry_delay,
        "retry_backoff": defaults.retry_backoff,
        "retry_max_delay": defaults.retry_max_delay,
        "timeout": defaults.timeout,
        "headers": defaults.headers,
        "catch_up": defaults.catch_up,
        "on_failure": defaults.on_failure,
        "max_bytes": defaults.max_bytes,
        "verify": defaults.verify,
        "user_agent": defaults.user_agent,
        "keep_runs": defaults.keep_runs,
        "timezone": defaults.timezone or machine_tz,
        "http_targets": defaults.http_targets,
    }
    _common(raw, kw)
    if "headers" in raw and defaults.headers:
        kw["headers"] = {**defaults.headers, **kw["headers"]}

    start = check_date("start_date", raw.get("start_date"))
    end = check_date("end_date", raw.get("end_date"))
    if start and end and start > end:
        raise InvalidValue("end_date", end.isoformat(), f"is before start_date {start.isoformat()}")

    if "url" in raw and "command" in raw:
        raise InvalidValue("command", raw["command"], "cannot be set together with url (choose one crawl)")
    if "url" in raw:
        urls, command = check_urls(raw["url"]), None
    elif "command" in raw:
        urls, command = (), check_command(raw["command"])
    elif defaults.url or defaults.command:
        urls, command = defaults.url, defaults.command
    else:
        raise InvalidValue("url", None, NO_CRAWL)

    created = check_created_at(raw.get("created_at"))
    return Job(
        id=job_id,
        name=name,
        kind=kind,
        spec=spec,
        start_date=start,
        end_date=end,
        urls=urls,
        command=command,
        paused=check_bool("paused", raw["paused"]) if "paused" in raw else False,
        created_at=created,
        explicit=_key_set(tuple(raw)),
        **kw,
    )


def check_created_at(created: Any) -> datetime | None:
    if created is not None and not isinstance(created, datetime):
        if isinstance(created, str):
            try:
                created = datetime.fromisoformat(created)
            except ValueError:
                raise InvalidValue("created_at", created, "is not a date-time (YYYY-MM-DD HH:MM:SS)") from None
        else:
            raise InvalidValue("created_at", created, "is not a date-time (YYYY-MM-DD HH:MM:SS)")
    if created is not None and not MIN_DATE <= created.date() <= MAX_DATE:
        raise InvalidValue("created_at", created.isoformat(), f"is out of range (dates from {MIN_DATE.isoformat()} to {MAX_DATE.isoformat()})")
    return created


# The keys whose values are checked on their own in each job (``JobBuilder``); every other key's value
# is checked together with the others, in ``build_job``.
_OWN_KEYS = frozenset(("id", "name", "created_at"))
_PLAIN_TYPES = (str, int, bool, date)  # exact types: 1 == 1.0 == True, and equal datetimes may differ in zone


class JobBuilder:
    """``build_job`` for the many tables of one job file, under one ``[defaults]``.

    Tables of a big file repeat themselves: 100,000 jobs may hold a few hundred
    schedules and one crawl. A table that differs from one already built only in
    ``id``, ``name`` and ``created_at`` (the same keys in the same order, every
    other value the same plain text, number, boolean or date) gives that job with
    its own three values, checked as ``build_job`` checks them; any other table,
    and any table with a problem, goes through ``build_job`` itself, so the result
    and every error are ``build_job``'s.
    """

    def __init__(self, defaults: Defaults, machine_tz: str = "UTC") -> None:
        self.defaults, self.machine_tz = defaults, machine_tz
        self._built: dict[tuple[Any, ...], dict[str, Any]] = {}  # shape -> the other fields of its job

    def __call__(self, raw: Mapping[str, Any]) -> Job:
        shape = self._shape(raw)
        fields = self._built.get(shape) if shape is not None else None
        if fields is not None:
            try:
                job_id = check_id(raw["id"])
                return Job(id=job_id, name=check_name(raw.get("name", job_id)),
                           created_at=check_created_at(raw.get("created_at")), **fields)
            except InvalidValue:
                pass  # build_job raises it, with everything it checks first
        job = build_job(raw, self.defaults, self.machine_tz)
        if shape is not None:
            self._built[shape] = {k: v for k, v in job.__dict__.items() if k not in _OWN_KEYS and k != "line"}
        return job

    @staticmethod
    def _shape(raw: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The keys in order and the other keys' values with their types; None when a value is not plain
        (a list of URLs, a table of headers, a float, a date-time)."""
        if not isinstance(raw, dict):
            return None
        shape: list[Any] = [tuple(raw)]
        for key, value in raw.items():
            if key not in _OWN_KEYS:
                if type(value) not in _PLAIN_TYPES:
                    return None
                shape.append((type(value), value))
        return tuple(shape)


@lru_cache(maxsize=256)
def _key_set(keys: tuple[str, ...]) -> frozenset[str]:
    """One shared set per combination of keys: 10,000 jobs written alike hold one set, not 10,000."""
    return frozenset(keys)
