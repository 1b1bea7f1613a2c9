"""The options `add` and `edit` share, and what turns them into job-table keys.

Typer needs the options spelled out on each command, so they are type aliases
here; ``_schedule`` and ``_options`` check the values given.
"""

from __future__ import annotations

from typing import Annotated, Any, List, Optional

import typer

from crawlsched.errors import InvalidValue

AtOpt = Annotated[Optional[str], typer.Option("--at", metavar="HH:MM", help="Every day at this time, in the job's zone.", rich_help_panel="Schedule (exactly one)")]
HourOpt = Annotated[Optional[int], typer.Option("--hour", metavar="H", help="Every day at this hour (with --minute; H alone is H:00).", rich_help_panel="Schedule (exactly one)")]
MinuteOpt = Annotated[Optional[int], typer.Option("--minute", metavar="M", help="The minute for --hour.", rich_help_panel="Schedule (exactly one)")]
CronOpt = Annotated[Optional[str], typer.Option("--cron", metavar="EXPR", help='A five-field cron expression, e.g. "0 10 * * 1", or @hourly, @daily, @weekly, @monthly, @yearly.', rich_help_panel="Schedule (exactly one)")]
EveryOpt = Annotated[Optional[str], typer.Option("--every", metavar="DUR", help="A fixed interval: seconds, or 30s, 15m, 1h30m, 2d.", rich_help_panel="Schedule (exactly one)")]
UrlOpt = Annotated[Optional[List[str]], typer.Option("--url", metavar="URL", help="An http(s) URL to fetch (repeatable).", rich_help_panel="Crawl (one of)")]
CommandOpt = Annotated[Optional[str], typer.Option("--command", metavar="CMD", help="A command to run instead (no shell).", rich_help_panel="Crawl (one of)")]
StartOpt = Annotated[Optional[str], typer.Option("--start", metavar="YYYY-MM-DD", help="First day [default: today in the job's zone].", show_default=False)]
EndOpt = Annotated[Optional[str], typer.Option("--end", metavar="YYYY-MM-DD", help="Last day, inclusive [default: no end].", show_default=False)]
MaxRetriesOpt = Annotated[Optional[int], typer.Option("--max-retries", metavar="N", help="Retries after a failed attempt [default: from [defaults], else 3].", show_default=False, rich_help_panel="Retries")]
RetryDelayOpt = Annotated[Optional[str], typer.Option("--retry-delay", metavar="DUR", help="Wait before a retry: seconds, or 30s, 5m, 1h30m [default: from [defaults], else 300].", show_default=False, rich_help_panel="Retries")]
BackoffOpt = Annotated[Optional[float], typer.Option("--retry-backoff", metavar="X", help="Multiply the delay by X per retry (1 = fixed).", rich_help_panel="Retries")]
MaxDelayOpt = Annotated[Optional[str], typer.Option("--retry-max-delay", metavar="DUR", help="Cap on the delay between retries: seconds, or 30s, 5m, 1h.", rich_help_panel="Retries")]
TimeoutOpt = Annotated[Optional[str], typer.Option("--timeout", metavar="DUR", help="How long one attempt may take: seconds, or 30s, 10m, 1h [default: 300].", show_default=False)]
TzOpt = Annotated[Optional[str], typer.Option("--tz", metavar="ZONE", help="IANA time zone, e.g. Asia/Jakarta [default: [defaults], else this machine's].", show_default=False)]
CatchUpOpt = Annotated[Optional[str], typer.Option("--catch-up", metavar="latest|none|all", help="Fires missed while the daemon was down: run the latest, none, or all.")]
OnFailureOpt = Annotated[Optional[str], typer.Option("--on-failure", metavar="CMD", help="Command run once after the final failed attempt.")]
MaxBytesOpt = Annotated[Optional[int], typer.Option("--max-bytes", metavar="N", help="Largest body accepted [default: 100 MiB].", show_default=False)]
HeaderOpt = Annotated[Optional[List[str]], typer.Option("--header", metavar='"Name: value"', help="HTTP header (repeatable); use ${VAR} for secrets, read at run time.")]
UserAgentOpt = Annotated[Optional[str], typer.Option("--user-agent", metavar="TEXT", help="User-Agent header [default: crawlsched/VERSION].", show_default=False)]
KeepRunsOpt = Annotated[Optional[int], typer.Option("--keep-runs", metavar="N", help="Bodies and run logs kept per job [default: 30].", show_default=False)]


def _schedule(at: str | None, hour: int | None, minute: int | None, cron: str | None, every: str | None, *, required: bool) -> dict[str, Any]:
    """Exactly one schedule option → ``{"at" | "cron" | "every": value}``."""
    from crawlsched.schedules import at_from_hour_minute, parse_at

    if minute is not None and hour is None:
        raise InvalidValue("minute", minute, "needs --hour (--hour H --minute M)")
    given = [opt for opt, value in (("--at", at), ("--hour", hour), ("--cron", cron), ("--every", every)) if value is not None]
    allowed = "give exactly one of --at HH:MM, --hour H [--minute M], --cron EXPR, --every DUR"
    if len(given) > 1:
        raise InvalidValue("schedule", " and ".join(given), f"are two schedules; {allowed}")
    if not given:
        if required:
            raise InvalidValue("schedule", None, f"is missing; {allowed}")
        return {}
    if at is not None:
        return {"at": parse_at(at)}
    if hour is not None:
        return {"at": at_from_hour_minute(hour, minute)}
    if cron is not None:
        return {"cron": cron}
    return {"every": every}


def duration(field_name: str, text: str | None) -> int | float | None:
    """A duration option (seconds, ``30s``, ``5m``, ``1h30m``, ``2d``) → seconds as the file keeps them (300, 1.5)."""
    if text is None:
        return None
    from crawlsched.durations import parse_duration
    from crawlsched.render import _num

    return _num(parse_duration(text, field_name))


def _headers(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            # Without a colon the whole text may be a token: never echo it.
            raise InvalidValue("header", "<hidden>", 'must be "Name: value" (e.g. "Authorization: Bearer ${TOKEN}")')
        out[name.strip()] = value.strip()
    return out


def _options(
    *, urls: list[str] | None, command: str | None, start: str | None, end: str | None,
    max_retries: int | None, retry_delay: str | None, retry_backoff: float | None,
    retry_max_delay: str | None, timeout: str | None, tz: str | None, catch_up: str | None,
    on_failure: str | None, max_bytes: int | None, headers: list[str] | None,
    user_agent: str | None, keep_runs: int | None,
) -> dict[str, Any]:
    """The job-table keys of the options that were given (None = not given)."""
    from crawlsched.schedules import check_date
    from crawlsched.render import _num

    if urls and command is not None:
        raise InvalidValue("command", command, "cannot be given together with --url (choose one crawl: --url or --command)")
    fields: dict[str, Any] = {
        "url": list(urls) if urls else None,
        "command": command,
        "start_date": check_date("start_date", start),
        "end_date": check_date("end_date", end),
        "max_retries": max_retries,
        "retry_delay": duration("retry_delay", retry_delay),
        "retry_backoff": _num(retry_backoff),
        "retry_max_delay": duration("retry_max_delay", retry_max_delay),
        "timeout": duration("timeout", timeout),
        "timezone": tz,
        "catch_up": catch_up,
        "on_failure": on_failure,
        "max_bytes": max_bytes,
        "headers": _headers(headers),
        "user_agent": user_agent,
        "keep_runs": keep_runs,
    }
    return {k: v for k, v in fields.items() if v is not None}
