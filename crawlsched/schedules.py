"""What a schedule may say: ``at``, ``cron`` and ``every``, the dates around them and their zone.

Each is checked where it is built (a job table, ``add``'s options, the API) and
comes back in the one form the job file keeps (``"9:05"`` → ``"09:05"``); a
refusal names the field, the value and what is allowed (``InvalidValue``).
When those schedules fire is ``crawlsched.timing``.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

from crawlsched.durations import SECONDS_RE, check_int, parse_every
from crawlsched.errors import InvalidValue
from crawlsched.model import CRON_MACROS, MAX_DATE, MIN_DATE, vixie_cron, zone

AT_RE = re.compile(r"(\d{1,2}):(\d{2})")


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


def normalize_every(value: Any) -> str:
    """The text kept in the file: as written when it is text with units, else seconds as ``"Ns"``."""
    seconds = parse_every(value)
    if isinstance(value, str) and not SECONDS_RE.fullmatch(value.strip()):
        return "".join(value.split())
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds}s"


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


def check_timezone(value: Any, field_name: str = "timezone") -> str:
    if not isinstance(value, str) or not value or value.startswith(("/", ".")) or "\x00" in value:
        raise InvalidValue(field_name, value, "is not an IANA time zone name (e.g. Asia/Jakarta, UTC)")
    try:
        zone(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidValue(field_name, value, "is not a known IANA time zone (e.g. Asia/Jakarta, UTC)") from None
    return value
