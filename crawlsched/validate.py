"""Validating what users write: a job file's tables into ``Job`` and ``Defaults``, and each value.

Every value is checked where it is built (``build_job``, ``build_defaults``, the
``check_*`` and ``parse_*`` functions the CLI and the API share), with a message
that names the field, the value and what is allowed (``InvalidValue``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfoNotFoundError

from crawlsched.errors import InvalidValue
from crawlsched.model import (
    CRON_MACROS,
    DEFAULT_KEYS,
    JOB_KEYS,
    MAX_DATE,
    MAX_INT,
    MAX_SECONDS,
    MIN_DATE,
    CatchUp,
    Defaults,
    Job,
    KeepHistory,
    ScheduleKind,
    vixie_cron,
    zone,
)

MAX_DIGITS = 30  # longer digit strings are refused before Python converts them (its limit is 4300)
INT_TEXT_RE = re.compile(r"[+-]?[0-9]+")
ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # always .fullmatch: "$" would accept a final "\n"
AT_RE = re.compile(r"(\d{1,2}):(\d{2})")
EVERY_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhd])")
SECONDS_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")  # a sign, so that "-5" is refused as below the minimum
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
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


def check_timezone(value: Any, field_name: str = "timezone") -> str:
    if not isinstance(value, str) or not value or value.startswith(("/", ".")) or "\x00" in value:
        raise InvalidValue(field_name, value, "is not an IANA time zone name (e.g. Asia/Jakarta, UTC)")
    try:
        zone(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidValue(field_name, value, "is not a known IANA time zone (e.g. Asia/Jakarta, UTC)") from None
    return value


def parse_at(value: Any, field_name: str = "at") -> str:
    """``"9:05"`` → ``"09:05"``."""
    match = AT_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise InvalidValue(field_name, value, "is not a time of day (HH:MM, 00:00-23:59)")
    return f"{int(match[1]):02d}:{int(match[2]):02d}"


def at_from_hour_minute(hour: Any, minute: Any) -> str:
    """``--hour 9 --minute 5`` → ``"09:05"``; ``--hour H`` alone means H:00."""
    h = check_int("hour", hour, 0, 23)
    m = check_int("minute", 0 if minute is None else minute, 0, 59)
    return f"{h:02d}:{m:02d}"


def parse_cron(value: Any, field_name: str = "cron") -> str:
    """A five-field cron expression that can fire at least once, or one of cron's macros (``@daily``)."""
    if isinstance(value, str) and value.strip().startswith("@"):
        macro = value.strip().lower()
        if macro not in CRON_MACROS:
            raise InvalidValue(field_name, value, f"is not a cron macro this scheduler runs (allowed: {', '.join(CRON_MACROS)})")
        return macro
    if not isinstance(value, str) or len(value.split()) != 5:
        raise InvalidValue(field_name, value, "is not a five-field cron expression (minute hour day month weekday) or a macro such as @daily")
    expr = " ".join(value.split())
    problem = _cron_problem(expr)
    if problem is not None:
        raise InvalidValue(field_name, value, f"is not a valid cron expression ({problem})")
    return expr


@lru_cache(maxsize=4096)
def _cron_problem(expr: str) -> str | None:
    """Why cronsim refuses ``expr``, or None. Cached: a big job file repeats its schedules."""
    from cronsim import CronSim, CronSimError

    try:
        CronSim(vixie_cron(expr), datetime(2000, 1, 1, tzinfo=zone("UTC")))
    except CronSimError as exc:
        return str(exc)
    return None


def parse_duration(value: Any, field_name: str, minimum: float = 0) -> float:
    """Seconds from a number, or text: ``"90"``, ``"1.5"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"``.

    The one parser of ``--every``, ``--retry-delay``, ``--retry-max-delay`` and
    ``--timeout`` (SPEC §5). At most ten years: the text is summed as floats, so
    a 4,000-digit number is refused by the bound, never an OverflowError.
    """
    if isinstance(value, str) and SECONDS_RE.fullmatch(value.strip()):
        seconds: float | None = float(value.strip())
    elif isinstance(value, str) and value.strip() and EVERY_RE.sub("", value).strip() == "":
        seconds = sum(float(n) * UNITS[u] for n, u in EVERY_RE.findall(value))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = _seconds_of_number(value)
    else:
        seconds = None
    if isinstance(value, int):
        value = _shown_int(value)
    if seconds is None or seconds != seconds:
        raise InvalidValue(field_name, value, "is not a duration (seconds, or a number with s, m, h or d: 30s, 5m, 1h30m, 2d)")
    if seconds < minimum:
        raise InvalidValue(field_name, value, f"must be at least {minimum:g}s")
    if seconds > MAX_SECONDS:
        raise InvalidValue(field_name, value, f"is longer than ten years ({MAX_SECONDS} seconds), the longest allowed")
    return seconds


def _seconds_of_number(value: int | float) -> float:
    """A number of seconds as a float; one too large for a float is infinite (and refused by the bound)."""
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        return math.inf if value > 0 else -math.inf
    return float(value)


def parse_every(value: Any, field_name: str = "every") -> float:
    """``"15m"``, ``"1h30m"``, ``"90s"``, ``"2d"`` or a number of seconds → seconds (1 s to ten years)."""
    return parse_duration(value, field_name, minimum=1)


def normalize_every(value: Any) -> str:
    """The text kept in the file: as written when it is text with units, else seconds as ``"Ns"``."""
    seconds = parse_every(value)
    if isinstance(value, str) and not SECONDS_RE.fullmatch(value.strip()):
        return "".join(value.split())
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds}s"


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


# Query parameters whose values are masked for display (substring match, any case).
SECRET_PARAM_RE = re.compile(r"token|key|secret|pass|pwd|auth|sig|session|credential|code", re.I)
_VAR_RE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def check_urls(value: Any, field_name: str = "url") -> tuple[str, ...]:
    if isinstance(value, str):
        return (check_url(value, field_name),)
    if isinstance(value, (list, tuple)) and value:
        return tuple(check_url(v, field_name) for v in value)
    raise InvalidValue(field_name, value, "must be a URL or a non-empty list of URLs")


def check_command(value: Any, field_name: str = "command") -> str:
    import shlex

    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise InvalidValue(field_name, value, "must be a non-empty command line")
    try:
        shlex.split(value)
    except ValueError as exc:
        raise InvalidValue(field_name, value, f"cannot be split into arguments ({exc})") from None
    return value


class HugeNumber(int):
    """A JSON integer of more digits than any bound allows (Python refuses to convert past 4300).

    It stands for the number where it was written (``json.loads(parse_int=parse_json_int)``)
    so that the field's own check refuses it by name; its value is beyond every
    bound, and it is shown by its length.
    """

    digits: int

    def __new__(cls, digits: int, negative: bool = False) -> HugeNumber:
        number = super().__new__(cls, -(10**MAX_DIGITS) if negative else 10**MAX_DIGITS)
        number.digits = digits
        return number

    def __repr__(self) -> str:
        return f"a {self.digits}-digit {'negative ' if self < 0 else ''}number"

    __str__ = __repr__


def parse_json_int(text: str) -> int:
    """``json.loads``'s ``parse_int``: a number too long to hold becomes a ``HugeNumber``, refused by its field."""
    digits = len(text.lstrip("-"))
    return HugeNumber(digits, text.startswith("-")) if digits > MAX_DIGITS else int(text)


def _shown_int(value: int) -> int:
    """An int for a message: a long one by its length (``repr`` of 4300+ digits raises)."""
    if isinstance(value, HugeNumber) or value.bit_length() <= 3 * MAX_DIGITS + 10:
        return value
    bits = value.bit_length()
    digits = len(str(abs(value))) if bits < 14000 else int(bits * math.log10(2)) + 1
    return HugeNumber(digits, value < 0)


def check_int(field_name: str, value: Any, low: int | None = 0, high: int | None = MAX_INT) -> int:
    """A whole number from ``low`` to ``high`` (never beyond 2^53); a decimal text such as ``"09"`` too."""
    if isinstance(value, str):
        text = value.strip()
        if INT_TEXT_RE.fullmatch(text):
            value = parse_json_int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(field_name, value, "must be a whole number")
    high = MAX_INT if high is None else min(high, MAX_INT)
    low = -MAX_INT if low is None else low
    if value < low:
        raise InvalidValue(field_name, _shown_int(value), f"must be at least {low}")
    if value > high:
        raise InvalidValue(field_name, _shown_int(value), f"must be at most {high}")
    return int(value)


def check_seconds(field_name: str, value: Any, low: float = 0, allow_none: bool = False) -> float | None:
    """A number of seconds from ``low`` to ten years; a decimal text too."""
    if value is None and allow_none:
        return None
    shown = value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InvalidValue(field_name, shown, "must be a number of seconds")
    if isinstance(shown, int):
        shown = _shown_int(shown)
    seconds = _seconds_of_number(value)
    if seconds < low:
        raise InvalidValue(field_name, shown, f"must be at least {low:g} seconds")
    if seconds > MAX_SECONDS:
        raise InvalidValue(field_name, shown, f"must be at most ten years ({MAX_SECONDS} seconds)")
    return seconds


def check_date(field_name: str, value: Any) -> date | None:
    """A date from 1900-01-01 to 9999-12-30 (TOML date or ``YYYY-MM-DD``)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        raise InvalidValue(field_name, value.isoformat(), "must be a date (YYYY-MM-DD), not a date-time")
    day = None
    if isinstance(value, date):
        day = value
    elif isinstance(value, str):
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            pass
    if day is None:
        raise InvalidValue(field_name, value, "is not a date (YYYY-MM-DD)")
    if not MIN_DATE <= day <= MAX_DATE:
        raise InvalidValue(field_name, value if isinstance(value, str) else day.isoformat(),
                           f"is out of range (dates from {MIN_DATE.isoformat()} to {MAX_DATE.isoformat()})")
    return day


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
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue("name", value, "must be a non-empty text")
    if len(value) > MAX_NAME:
        raise InvalidValue("name", value, f"is longer than {MAX_NAME} characters")
    if any(not c.isprintable() for c in value):
        raise InvalidValue("name", value, "must not contain control characters (NUL, newlines, tabs)")
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
    return Defaults(**kw)


def _common(raw: Mapping[str, Any], kw: dict[str, Any], prefix: str = "") -> None:
    """Keys a job and ``[defaults]`` share."""
    if "max_retries" in raw:
        kw["max_retries"] = check_int(prefix + "max_retries", raw["max_retries"], 0, 1000)
    if "retry_delay" in raw:
        kw["retry_delay"] = check_seconds(prefix + "retry_delay", raw["retry_delay"])
    if "retry_backoff" in raw:
        backoff = check_seconds(prefix + "retry_backoff", raw["retry_backoff"])
        if backoff is not None and (backoff < 1 or backoff > 100):
            raise InvalidValue(prefix + "retry_backoff", raw["retry_backoff"], "must be a multiplier from 1 to 100 (1 = fixed delay)")
        kw["retry_backoff"] = backoff
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

    created = raw.get("created_at")
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


@lru_cache(maxsize=256)
def _key_set(keys: tuple[str, ...]) -> frozenset[str]:
    """One shared set per combination of keys: 10,000 jobs written alike hold one set, not 10,000."""
    return frozenset(keys)
