"""Request bodies: the JSON object of a request → the keys of a ``[[jobs]]`` table, each value checked and typed."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Iterable, Mapping

from flask import request

from crawlsched import targets
from crawlsched.crawl.secrets import VAR_RE, expand_vars
from crawlsched.errors import BadRequest, Forbidden, InvalidValue, json_kind
from crawlsched.render import _num
from crawlsched.model import Defaults
from crawlsched.durations import check_int, check_seconds, parse_json_int
from crawlsched.schedules import (
    at_from_hour_minute,
    check_date,
    check_timezone,
    normalize_every,
    parse_at,
    parse_cron,
)
from crawlsched.urls import check_urls, redact_url
from crawlsched.validate import (
    build_defaults,
    check_catch_up,
    check_command,
    check_headers,
    check_name,
)


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
        # parse_int: an integer too long for Python (4300+ digits) is refused by its field (422), not here.
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_int=parse_json_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, not {json_kind(data)}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# Numbers may come as JSON numbers or as decimal strings ("hour": "09"), as an HTML form
# sends them (SPEC §8). ASCII digits only: "²" or "١" are digits to str.isdigit, not to int().
INT_TEXT = re.compile(r"[+-]?[0-9]+")
DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and INT_TEXT.fullmatch(v) is not None)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or (
        isinstance(v, str) and DECIMAL_TEXT.fullmatch(v) is not None)


def _number(v: Any) -> Any:
    """A decimal string as the number it writes (``"09"`` → 9, ``"1.5"`` → 1.5); anything else as it is."""
    if not isinstance(v, str):
        return v
    if INT_TEXT.fullmatch(v):
        return int(v)
    if DECIMAL_TEXT.fullmatch(v):
        return float(v)
    return v


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


NUMERIC_KEYS = frozenset(k for k, (test, _) in JSON_TYPES.items() if test in (_is_int, _is_number)) | {"every"}


def _given(body: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    """The keys that are set (``null`` = not given), each of its JSON type; an unknown key is refused by name."""
    for key, value in body.items():
        # Written as JSON writes it (errors._show), arrays and objects too; a header's
        # value may be a secret, so a malformed `headers` is never echoed.
        shown = "{…}" if key == "headers" and value is not None else value
        if key not in allowed:
            raise InvalidValue(key, shown, f"is not a field of {what} (allowed: {', '.join(allowed)})")
        test, allowed_text = JSON_TYPES.get(key, (lambda v: True, ""))
        if value is not None and not test(value):
            raise InvalidValue(key, shown, allowed_text)
    return {k: _number(v) if k in NUMERIC_KEYS else v for k, v in body.items() if v is not None}


def refuse_commands(given: Mapping[str, Any], defaults: Defaults) -> None:
    """A command runs on this machine: through HTTP only when the job file says so."""
    for key in COMMAND_KEYS:
        if key in given and not defaults.allow_http_commands:
            raise Forbidden(f"{key}: commands cannot be set through the HTTP API; a person who can edit "
                            "the job file may allow it with `allow_http_commands = true` in [defaults]")


def refuse_environment(field: str, texts: Iterable[str], defaults: Defaults) -> None:
    """Only the job file may use the daemon's environment (SPEC §7), or names it lists.

    A ``${NAME}`` in a URL or header is expanded from the daemon's environment when the job
    runs: through the API, anyone who can reach it could send ``${HOME}`` or a secret to a
    server of their own. A person who can edit the job file lists the names it may use.
    """
    for text in texts:
        for name in VAR_RE.findall(text):
            if name not in defaults.allow_http_env:
                raise InvalidValue(field, f"${{{name}}}", "is an environment variable, which a URL or header sent "
                                   "through the HTTP API may not use unless the job file allows it with "
                                   f'`allow_http_env = ["{name}"]` in [defaults]')


def refuse_private_targets(urls: Iterable[str], defaults: Defaults) -> None:
    """Under ``http_targets = "public"``, a URL whose host resolves to a non-public address now is refused.

    At once, as a 422; the crawler checks every connection again when the job runs (DNS can
    change, a redirect can lead elsewhere), so a host that does not resolve now is let through.
    """
    if defaults.http_targets != "public":
        return
    from urllib.parse import urlsplit

    for template in urls:
        try:
            parts = urlsplit(expand_vars(template, os.environ))
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except (KeyError, ValueError):
            continue  # a missing variable or a bad port fails the run, with its own message
        address = targets.non_public(parts.hostname or "", port) if parts.hostname else None
        if address is not None:
            raise InvalidValue("url", redact_url(template), f"reaches {address}, {targets.describe(address)}; this "
                               'scheduler fetches only public addresses ([defaults] http_targets = "public")')


def api_urls(value: Any, defaults: Defaults) -> list[str]:
    """A URL or list of URLs from a request body: valid, using only allowed ``${NAME}``s and targets."""
    urls = list(check_urls(value))
    refuse_environment("url", urls, defaults)
    refuse_private_targets(urls, defaults)
    return urls


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
    refuse_environment("url", fields.get("url", ()), defaults)
    refuse_environment("headers", fields.get("headers", {}).values(), defaults)
    refuse_private_targets(fields.get("url", ()), defaults)
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

