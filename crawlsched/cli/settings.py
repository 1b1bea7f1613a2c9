"""Commands that show or set the keys of ``[defaults]``: retry-config (the retry settings) and defaults (the rest)."""

from __future__ import annotations

from typing import Annotated, Any, List, Optional

import typer

from crawlsched import control
from crawlsched.cli import JsonOpt, _emit, _load, _say, command, env
from crawlsched.cli.options import BackoffOpt, CatchUpOpt, MaxDelayOpt, _options, duration
from crawlsched.errors import InvalidValue, JobFileError, Refused


@command("retry-config")
def retry_config(
    max_retries: Annotated[Optional[int], typer.Option("--max-retries", metavar="N", help="Retries after a failed attempt (0 = none).")] = None,
    retry_delay: Annotated[Optional[str], typer.Option("--retry-delay", metavar="DUR", help="Wait before a retry: seconds, or 30s, 5m, 1h30m.")] = None,
    retry_backoff: BackoffOpt = None,
    retry_max_delay: MaxDelayOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or set the retry defaults.

    They live in [defaults] in the job file and apply to every job that sets none of its own.
    Without options it shows them.

    Example:

    \b
      crawlsched retry-config --max-retries 5 --retry-delay 600
    """
    from crawlsched import render
    from crawlsched.validate import build_defaults
    from crawlsched.render import _num

    changes = {k: v for k, v in {
        "max_retries": max_retries,
        "retry_delay": duration("retry_delay", retry_delay),
        "retry_backoff": _num(retry_backoff),
        "retry_max_delay": duration("retry_max_delay", retry_max_delay),
    }.items() if v is not None}  # fmt: skip
    if changes:
        build_defaults(changes)  # a bad value is refused as itself, before the file is touched
        defaults = env().store().set_defaults(changes)
        message = control.RETRY_CONFIG_UPDATED
    else:
        defaults = _load().defaults
        message = "Retry config"
    data = render.defaults_dict(defaults)
    if as_json:
        _emit({"success": True, "message": message, "defaults": data})
        return
    _say(f"{message}: max_retries = {data['max_retries']}, retry_delay = {data['retry_delay']}s, "
         f"retry_backoff = {data['retry_backoff']}, retry_max_delay = {data['retry_max_delay'] or 'none'}")  # fmt: skip


@command("defaults")
def defaults(
    url: Annotated[Optional[List[str]], typer.Option("--url", metavar="URL", help="The default crawl: an http(s) URL every job that names no crawl fetches (repeatable).")] = None,
    command_: Annotated[Optional[str], typer.Option("--command", metavar="CMD", help="The default crawl as a command instead (no shell).")] = None,
    tz: Annotated[Optional[str], typer.Option("--tz", metavar="ZONE", help="IANA time zone that `add` writes for jobs given no --tz [default: this machine's].", show_default=False)] = None,
    timeout: Annotated[Optional[str], typer.Option("--timeout", metavar="DUR", help="How long one attempt may take, for jobs that set none: seconds, or 30s, 10m, 1h [default: 300].", show_default=False)] = None,
    catch_up: CatchUpOpt = None,
    max_concurrent: Annotated[Optional[int], typer.Option("--max-concurrent", metavar="N", help="Attempts running at once [default: 8].", show_default=False)] = None,
    state: Annotated[Optional[str], typer.Option("--state", metavar="DSN", help="A PostgreSQL state shared by daemons and workers: postgresql://user@host/db or key=value pairs; ${VAR} is read when it is opened (keep a password in ${VAR} or ~/.pgpass) [default: the home's SQLite file; $CRAWLSCHED_STATE wins].", show_default=False)] = None,
    executor: Annotated[Optional[str], typer.Option("--executor", metavar="local|workers", help="Who runs the attempts: local (this daemon) or workers (`crawlsched worker`; needs a PostgreSQL state) [default: local].", show_default=False)] = None,
    unset: Annotated[Optional[List[str]], typer.Option("--unset", metavar="KEY", help="Remove this key from [defaults] (repeatable), e.g. --unset url.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or set the default crawl, zone and more.

    The keys of [defaults] besides the retry settings (`retry-config`): the
    default crawl, the time zone, the timeout, catch-up, the pool size, and
    where the state lives and who runs the attempts (--state, --executor).

    The default crawl (--url, repeatable, or --command) is what a job runs when it
    names none, as the seed's one crawler did for every schedule: with it, the seed's
    API bodies (which name no URL) work as sent. --url replaces a default --command
    and the other way round. Without options it shows the keys [defaults] sets.
    Nothing is written when any value is refused (exit 2).

    Example:

    \b
      crawlsched defaults --url https://example.com/news --tz Asia/Jakarta
    """
    from crawlsched.model import DEFAULT_KEYS
    from crawlsched.validate import build_defaults

    changes: dict[str, Any] = _options(
        urls=url, command=command_, start=None, end=None, max_retries=None, retry_delay=None, retry_backoff=None,
        retry_max_delay=None, timeout=timeout, tz=tz, catch_up=catch_up, on_failure=None, max_bytes=None,
        headers=None, user_agent=None, keep_runs=None,
    )  # fmt: skip
    changes.pop("start_date", None)
    if max_concurrent is not None:
        changes["max_concurrent"] = max_concurrent
    if state is not None:
        changes["state"] = state
    if executor is not None:
        changes["executor"] = executor
    removed = list(dict.fromkeys(unset or []))
    for key in removed:
        if key not in DEFAULT_KEYS:
            raise InvalidValue("--unset", key, f"is not a key of [defaults] (allowed: {', '.join(DEFAULT_KEYS)})")
        if key in changes:
            raise InvalidValue("--unset", key, f"is set by another option too; give either --{key.replace('_', '-')} or --unset {key}")
    if not changes and not removed:
        jobfile = _load()
        _show_defaults(jobfile.defaults, dict(jobfile.raw_defaults), "Defaults", as_json)
        return
    build_defaults(changes)  # a bad value is refused as itself (defaults.KEY: …), before the file is touched
    edits: dict[str, Any] = {**changes, **{key: None for key in removed}}
    if "url" in changes:
        edits.setdefault("command", None)  # one default crawl: a URL replaces a command
    if "command" in changes:
        edits.setdefault("url", None)
    store = env().store()
    current = store.load()  # a broken file is reported as itself (jobs.toml:LINE), never rewritten
    if {"state", "executor"} & edits.keys():
        _check_executor(current, edits)
    if not changes and not set(removed) & set(current.raw_defaults):  # nothing to remove: the file stays as it is
        unchanged = f"Defaults unchanged ({', '.join(removed)} {'is' if len(removed) == 1 else 'are'} not set)"
        _show_defaults(current.defaults, dict(current.raw_defaults), unchanged, as_json)
        return
    try:
        store.set_defaults(edits)  # the whole new file is checked first
    except JobFileError as exc:  # e.g. --unset url while a job relies on the default crawl
        raise Refused(f"defaults: refused, the job file would not validate after this change ({exc.detail}); "
                      "nothing was changed") from None
    jobfile = store.load()
    _show_defaults(jobfile.defaults, dict(jobfile.raw_defaults), "✅ Defaults updated", as_json)


def _check_executor(current: Any, edits: dict[str, Any]) -> None:
    """``executor = "workers"`` after these edits needs a PostgreSQL state (``$CRAWLSCHED_STATE`` counts): exit 2."""
    from crawlsched.state.open import ENV_VAR, check_executor, choose_state

    def after(key: str, now: Any, default: Any) -> Any:
        if key not in edits:
            return now
        return default if edits[key] is None else edits[key]

    executor = after("executor", current.defaults.executor, "local")
    state = after("state", current.defaults.state, None)
    import os

    check_executor(executor, choose_state(env().home, None if os.environ.get(ENV_VAR, "").strip() else state))


def _show_defaults(values: Any, raw: dict[str, Any], message: str, as_json: bool) -> None:
    """``defaults`` output: the keys [defaults] sets, as written (URL passwords and header values hidden)."""
    import json

    from crawlsched import render

    if as_json:
        from crawlsched.dsn import redact_dsn

        data = {**render.defaults_dict(values), "paused": values.paused, "allow_http_commands": values.allow_http_commands,
                "grace_period": render._num(values.grace_period),
                "state": redact_dsn(values.state) if values.state is not None else None, "executor": values.executor}
        _emit({"success": True, "message": message, "defaults": data, "keys_set": sorted(raw)})
        return
    if not raw:
        _say(f"{message}: [defaults] sets nothing (the built-in defaults apply; no default crawl)")
        return
    _say(f"{message}:")
    for key, value in raw.items():
        if key == "url":
            urls = [value] if isinstance(value, str) else list(value)
            shown = json.dumps([render.mask_url(u) for u in urls], ensure_ascii=False)
        elif key == "state" and isinstance(value, str):
            from crawlsched.dsn import redact_dsn

            shown = json.dumps(redact_dsn(value), ensure_ascii=False)
        elif key == "headers" and isinstance(value, dict):
            shown = "{ " + ", ".join(f"{name} = (hidden)" for name in value) + " }"
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, (int, float)):
            shown = str(render._num(value))
        else:
            shown = json.dumps(value, ensure_ascii=False, default=str)
        _say(f"  {key} = {shown}")
