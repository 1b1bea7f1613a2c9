"""The command line: parse → call the library → render. No logic of its own.

Every command's docstring is its ``--help`` and carries an example. Errors are
one line on stderr (``crawlsched: error: …``), or ``{"success": false, "error":
…}`` on stdout with ``--json``, and the exit code of SPEC §5 — never a
traceback (``CRAWLSCHED_DEBUG=1`` shows one for an unexpected failure).

Start-up time matters (``crawlsched --help`` should stay under 100 ms), so
only ``typer`` and the errors module are imported here; the store, the state
database and rich are imported by the commands that use them, and
``requests``, the daemon and the crawler are never imported on this path.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, List, Optional

import typer

from crawlsched.errors import CrawlschedError, DaemonNotRunning, InvalidValue, JobNotFound

if TYPE_CHECKING:
    from rich.console import Console

    from crawlsched.model import Job, JobFile
    from crawlsched.state import State
    from crawlsched.store import JobStore

UTC = timezone.utc
DAEMON_FRESH = 90.0  # seconds: a daemon whose heartbeat is older is not up
STOP_WAIT = 60.0  # seconds `stop` waits for the daemon to exit
HANDOVER_WAIT = 5.0  # seconds `run-now` waits for the daemon to take the request
ADDED = "✅ Job '{name}' berhasil ditambahkan"  # the seed's message, word for word

app = typer.Typer(
    name="crawlsched",
    help="Schedule recurring crawl jobs: a readable jobs.toml, a daemon that fires on time and retries, and the history of every attempt.",
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Refused(CrawlschedError):
    """A command that will not go ahead as asked (bad combination of options): exit 2."""

    exit_code = 2


# --- the environment of one invocation -------------------------------------------------


@dataclass
class Env:
    """Where the job file and the home are, and the state database once opened."""

    jobs_file: Path
    home: Path
    _state: Any = field(default=None, repr=False)

    @property
    def db_path(self) -> Path:
        return self.home / "crawlsched.db"

    def store(self) -> JobStore:
        from crawlsched.store import JobStore, user_cache_dir

        # The parse cache lives in the user's cache folder, not in the home: a read
        # must not create folders where the user merely ran `crawlsched list`.
        return JobStore(self.jobs_file, cache_dir=user_cache_dir())

    def state(self, *, create: bool = False) -> State | None:
        """The state database; None when it does not exist and ``create`` is false (no history yet)."""
        if self._state is None:
            if not create and not self.db_path.exists():
                return None
            from crawlsched.state import State

            self._state = State(self.db_path).open()
        return self._state

    def close(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None


_env: Env | None = None


def env() -> Env:
    global _env
    if _env is None:  # a command called without the app's callback (tests calling functions)
        from crawlsched.store import resolve_paths

        _env = Env(*resolve_paths(None, None))
    return _env


@app.callback()
def _root(
    jobs_file: Annotated[Optional[str], typer.Option("--jobs-file", "-f", metavar="PATH", help="The job file [default: $CRAWLSCHED_JOBS, else ./jobs.toml].", show_default=False)] = None,
    home: Annotated[Optional[str], typer.Option("--home", metavar="PATH", help="Folder for the state database, logs and data [default: $CRAWLSCHED_HOME, else the job file's folder].", show_default=False)] = None,
) -> None:
    """Schedule recurring crawl jobs: a readable jobs.toml, a daemon that fires on time and retries, and the history of every attempt.

    Start with `crawlsched add "News" --at 09:05 --url https://example.com/news`, then `crawlsched list`.
    """
    global _env
    from crawlsched.store import resolve_paths

    _env = Env(*resolve_paths(jobs_file, home))


# --- output ------------------------------------------------------------------------------


def _emit(obj: dict[str, Any]) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, default=str))


def _console() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        # A pipe has no width: don't squeeze rows into $COLUMNS or 80, a script reads whole lines.
        console = Console(highlight=False, width=max(200, console.width))
    return console


def _say(message: str) -> None:
    typer.echo(message)


def _fail(message: str, code: int, as_json: bool) -> None:
    message = " ".join(message.split()) or "unknown error"  # one line, always
    if as_json:
        _emit({"success": False, "error": message})
    else:
        typer.echo(f"crawlsched: error: {message}", err=True)
    raise typer.Exit(code)


def command(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command whose errors become one line and an exit code (or JSON with ``--json``)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            as_json = bool(kwargs.get("as_json"))
            try:
                return fn(*args, **kwargs)
            except typer.Exit:
                raise
            except CrawlschedError as exc:
                _fail(str(exc), exc.exit_code, as_json)
            except OSError as exc:
                where = f"{exc.filename}: " if exc.filename else ""
                _fail(f"{where}{exc.strerror or exc}", 1, as_json)
            except Exception as exc:
                if os.environ.get("CRAWLSCHED_DEBUG"):
                    raise
                _fail(f"unexpected {type(exc).__name__}: {exc} (CRAWLSCHED_DEBUG=1 shows the traceback)", 1, as_json)
            finally:
                env().close()

        return app.command(name)(run)

    return register


# --- shared pieces -------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _load() -> JobFile:
    return env().store().load()


def _find(jobfile: JobFile, ref: str) -> Job:
    job = jobfile.find(ref)
    if job is None:
        raise JobNotFound(ref)
    return job


def _job_dict(job: Job, now: datetime) -> dict[str, Any]:
    from crawlsched import render

    state = env().state()
    js = state.job_states([job.id]).get(job.id) if state is not None else None
    return render.job_dict(job, js, now)


def _job_dicts(jobfile: JobFile, now: datetime) -> list[dict[str, Any]]:
    from crawlsched import render

    state = env().state()
    states = state.job_states([j.id for j in jobfile.jobs]) if state is not None else {}
    store = env().store()
    store.load_fire_memo()  # next fires an earlier `list` computed: exact, and 10,000 jobs need them
    jobs = [render.job_dict(j, states.get(j.id), now) for j in jobfile.jobs]
    store.save_fire_memo(now.timestamp())
    return jobs


def _num(value: float | None) -> float | int | None:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


# The options `add` and `edit` share. Typer needs them spelled out on each command.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
AtOpt = Annotated[Optional[str], typer.Option("--at", metavar="HH:MM", help="Every day at this time, in the job's zone.", rich_help_panel="Schedule (exactly one)")]
HourOpt = Annotated[Optional[int], typer.Option("--hour", metavar="H", help="Every day at this hour (with --minute; H alone is H:00).", rich_help_panel="Schedule (exactly one)")]
MinuteOpt = Annotated[Optional[int], typer.Option("--minute", metavar="M", help="The minute for --hour.", rich_help_panel="Schedule (exactly one)")]
CronOpt = Annotated[Optional[str], typer.Option("--cron", metavar="EXPR", help='A five-field cron expression, e.g. "0 10 * * 1".', rich_help_panel="Schedule (exactly one)")]
EveryOpt = Annotated[Optional[str], typer.Option("--every", metavar="DUR", help="A fixed interval: 30s, 15m, 1h30m, 2d.", rich_help_panel="Schedule (exactly one)")]
UrlOpt = Annotated[Optional[List[str]], typer.Option("--url", metavar="URL", help="An http(s) URL to fetch (repeatable).", rich_help_panel="Crawl (one of)")]
CommandOpt = Annotated[Optional[str], typer.Option("--command", metavar="CMD", help="A command to run instead (no shell).", rich_help_panel="Crawl (one of)")]
StartOpt = Annotated[Optional[str], typer.Option("--start", metavar="YYYY-MM-DD", help="First day [default: today in the job's zone].", show_default=False)]
EndOpt = Annotated[Optional[str], typer.Option("--end", metavar="YYYY-MM-DD", help="Last day, inclusive [default: no end].", show_default=False)]
MaxRetriesOpt = Annotated[Optional[int], typer.Option("--max-retries", metavar="N", help="Retries after a failed attempt [default: from [defaults], else 3].", show_default=False, rich_help_panel="Retries")]
RetryDelayOpt = Annotated[Optional[float], typer.Option("--retry-delay", metavar="S", help="Seconds before a retry [default: from [defaults], else 300].", show_default=False, rich_help_panel="Retries")]
BackoffOpt = Annotated[Optional[float], typer.Option("--retry-backoff", metavar="X", help="Multiply the delay by X per retry (1 = fixed).", rich_help_panel="Retries")]
MaxDelayOpt = Annotated[Optional[float], typer.Option("--retry-max-delay", metavar="S", help="Cap on the delay between retries.", rich_help_panel="Retries")]
TimeoutOpt = Annotated[Optional[float], typer.Option("--timeout", metavar="S", help="Seconds one attempt may take [default: 300].", show_default=False)]
TzOpt = Annotated[Optional[str], typer.Option("--tz", metavar="ZONE", help="IANA time zone, e.g. Asia/Jakarta [default: [defaults], else this machine's].", show_default=False)]
CatchUpOpt = Annotated[Optional[str], typer.Option("--catch-up", metavar="latest|none|all", help="Fires missed while the daemon was down: run the latest, none, or all.")]
OnFailureOpt = Annotated[Optional[str], typer.Option("--on-failure", metavar="CMD", help="Command run once after the final failed attempt.")]
MaxBytesOpt = Annotated[Optional[int], typer.Option("--max-bytes", metavar="N", help="Largest body accepted [default: 100 MiB].", show_default=False)]
HeaderOpt = Annotated[Optional[List[str]], typer.Option("--header", metavar='"Name: value"', help="HTTP header (repeatable); use ${VAR} for secrets, read at run time.")]
UserAgentOpt = Annotated[Optional[str], typer.Option("--user-agent", metavar="TEXT", help="User-Agent header [default: crawlsched/VERSION].", show_default=False)]
KeepRunsOpt = Annotated[Optional[int], typer.Option("--keep-runs", metavar="N", help="Bodies and run logs kept per job [default: 30].", show_default=False)]


def _schedule(at: str | None, hour: int | None, minute: int | None, cron: str | None, every: str | None, *, required: bool) -> dict[str, Any]:
    """Exactly one schedule option → ``{"at" | "cron" | "every": value}``."""
    from crawlsched.model import at_from_hour_minute, parse_at

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
    max_retries: int | None, retry_delay: float | None, retry_backoff: float | None,
    retry_max_delay: float | None, timeout: float | None, tz: str | None, catch_up: str | None,
    on_failure: str | None, max_bytes: int | None, headers: list[str] | None,
    user_agent: str | None, keep_runs: int | None,
) -> dict[str, Any]:
    """The job-table keys of the options that were given (None = not given)."""
    from crawlsched.model import check_date

    if urls and command is not None:
        raise InvalidValue("command", command, "cannot be given together with --url (choose one crawl: --url or --command)")
    fields: dict[str, Any] = {
        "url": list(urls) if urls else None,
        "command": command,
        "start_date": check_date("start_date", start),
        "end_date": check_date("end_date", end),
        "max_retries": max_retries,
        "retry_delay": _num(retry_delay),
        "retry_backoff": _num(retry_backoff),
        "retry_max_delay": _num(retry_max_delay),
        "timeout": _num(timeout),
        "timezone": tz,
        "catch_up": catch_up,
        "on_failure": on_failure,
        "max_bytes": max_bytes,
        "headers": _headers(headers),
        "user_agent": user_agent,
        "keep_runs": keep_runs,
    }
    return {k: v for k, v in fields.items() if v is not None}


# --- commands: the job file ----------------------------------------------------------------


@command("add")
def add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The job's name; its id is made from it.", show_default=False)],
    at: AtOpt = None, hour: HourOpt = None, minute: MinuteOpt = None, cron: CronOpt = None, every: EveryOpt = None,
    url: UrlOpt = None, command_: CommandOpt = None,
    start: StartOpt = None, end: EndOpt = None,
    max_retries: MaxRetriesOpt = None, retry_delay: RetryDelayOpt = None,
    retry_backoff: BackoffOpt = None, retry_max_delay: MaxDelayOpt = None,
    timeout: TimeoutOpt = None, tz: TzOpt = None, catch_up: CatchUpOpt = None,
    on_failure: OnFailureOpt = None, max_bytes: MaxBytesOpt = None, header: HeaderOpt = None,
    user_agent: UserAgentOpt = None, keep_runs: KeepRunsOpt = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do not verify TLS certificates (verify = false).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a job to the job file and print its id.

    Give exactly one schedule (--at, --hour/--minute, --cron, --every) and one crawl
    (--url, repeatable, or --command; neither is fine when [defaults] names one).
    Nothing is written when any value is refused (exit 2).

    Example:

    \b
      crawlsched add "Daily Morning Crawl" --at 09:05 --start 2026-12-01 --end 2026-12-31 --url https://example.com/news --max-retries 3 --retry-delay 300
    """
    now = _now()
    fields: dict[str, Any] = {"name": name, **_schedule(at, hour, minute, cron, every, required=True)}
    fields.update(_options(
        urls=url, command=command_, start=start, end=end, max_retries=max_retries, retry_delay=retry_delay,
        retry_backoff=retry_backoff, retry_max_delay=retry_max_delay, timeout=timeout, tz=tz, catch_up=catch_up,
        on_failure=on_failure, max_bytes=max_bytes, headers=header, user_agent=user_agent, keep_runs=keep_runs,
    ))  # fmt: skip
    if insecure:
        fields["verify"] = False
    # Ids are never reused: the history vetoes any id it has seen. The database
    # is created only once the job is written, so refused input leaves no trace.
    known = env().state()
    job = env().store().add(fields, now=now, id_taken=known.known_id if known is not None else lambda _id: False)
    state = env().state(create=True)
    assert state is not None
    state.remember_id(job.id, now.timestamp())
    if as_json:
        _emit({"success": True, "message": ADDED.format(name=job.name), "job_id": job.id})
    else:
        _say(job.id)


@command("edit")
def edit(
    job: Annotated[str, typer.Argument(metavar="JOB", help="Job id or exact name.", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", metavar="NEW", help="A new name (the id stays).")] = None,
    at: AtOpt = None, hour: HourOpt = None, minute: MinuteOpt = None, cron: CronOpt = None, every: EveryOpt = None,
    url: UrlOpt = None, command_: CommandOpt = None,
    start: StartOpt = None, end: EndOpt = None,
    no_end: Annotated[bool, typer.Option("--no-end", help="Remove the end date.")] = False,
    max_retries: MaxRetriesOpt = None, retry_delay: RetryDelayOpt = None,
    retry_backoff: BackoffOpt = None, retry_max_delay: MaxDelayOpt = None,
    timeout: TimeoutOpt = None, tz: TzOpt = None, catch_up: CatchUpOpt = None,
    on_failure: OnFailureOpt = None, max_bytes: MaxBytesOpt = None, header: HeaderOpt = None,
    user_agent: UserAgentOpt = None, keep_runs: KeepRunsOpt = None,
    insecure: Annotated[Optional[bool], typer.Option("--insecure/--verify-tls", help="Stop / start verifying TLS certificates.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change some fields of one job; the rest of the file stays as it was.

    Takes the options of `add`. A new schedule replaces the old one, --url replaces
    --command and the other way round; --no-end removes the end date.

    Example:

    \b
      crawlsched edit daily-morning-crawl --at 07:30 --max-retries 5
    """
    now = _now()
    changes: dict[str, Any] = _schedule(at, hour, minute, cron, every, required=False)
    changes.update(_options(
        urls=url, command=command_, start=start, end=end, max_retries=max_retries, retry_delay=retry_delay,
        retry_backoff=retry_backoff, retry_max_delay=retry_max_delay, timeout=timeout, tz=tz, catch_up=catch_up,
        on_failure=on_failure, max_bytes=max_bytes, headers=header, user_agent=user_agent, keep_runs=keep_runs,
    ))  # fmt: skip
    if name is not None:
        changes["name"] = name
    if no_end and end is not None:
        raise InvalidValue("end_date", end, "cannot be given together with --no-end")
    if insecure is not None:
        changes["verify"] = False if insecure else None  # None: back to the default (verify)
    if not changes and not no_end:
        raise Refused("edit: nothing to change; give at least one option (see crawlsched edit --help)")
    edited = env().store().edit(job, changes, now=now, remove=("end_date",) if no_end else ())
    message = f"✅ Job '{edited.name}' updated"
    if as_json:
        _emit({"success": True, "message": message, "job": _job_dict(edited, now)})
    else:
        _say(message)


@command("list")
def list_(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep the table live, refreshed every second, until Ctrl-C.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show every job as a table (or JSON).

    Columns: name, status, schedule, period, next run, last run, retries, last message.

    Example:

    \b
      crawlsched list --watch
    """
    if watch and as_json:
        raise Refused("list: --watch shows a live table and cannot be combined with --json")
    if watch:
        _watch()
        return
    now = _now()
    jobs = _job_dicts(_load(), now)
    if as_json:
        _emit({"success": True, "jobs": jobs})
        return
    from crawlsched import render

    console = _console()
    console.print(render.jobs_table(jobs, plain=not console.is_terminal))


def _watch() -> None:
    from rich.live import Live
    from rich.text import Text

    from crawlsched import render

    console = _console()
    plain = not console.is_terminal

    def frame() -> Any:
        try:
            table = render.jobs_table(_job_dicts(_load(), _now()), plain=plain)
        except CrawlschedError as exc:  # e.g. the file is half-edited: say so and keep watching
            return Text(f"crawlsched: error: {exc}", style="red")
        table.title = f"crawlsched · {env().jobs_file} · {datetime.now().strftime('%H:%M:%S')} · Ctrl-C to stop"
        return table

    try:
        with Live(frame(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(1)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass


@command("show")
def show(
    job: Annotated[str, typer.Argument(metavar="JOB", help="Job id or exact name.", show_default=False)],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many recent runs to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Show one job's settings and its recent runs.

    Example:

    \b
      crawlsched show daily-morning-crawl --limit 20
    """
    from crawlsched import render

    now = _now()
    found = _find(_load(), job)
    state = env().state()
    runs = [render.run_dict(r, found) for r in state.runs(found.id, limit)] if state is not None else []
    data = _job_dict(found, now)
    if as_json:
        _emit({"success": True, "job": data, "runs": runs})
        return
    console = _console()
    plain = not console.is_terminal
    console.print(render.job_details(data, plain=plain))
    console.print()
    if runs:
        console.print(render.runs_table(runs, plain=plain, show_job=False))
    else:
        console.print("no runs yet")


@command("rm")
def rm(
    job: Annotated[str, typer.Argument(metavar="JOB", help="Job id or exact name.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a job; its history stays.

    Its id is never reused.
    Asks first on a terminal; --yes skips the question and is required when stdin is not a terminal.

    Example:

    \b
      crawlsched rm daily-morning-crawl --yes
    """
    found = _find(_load(), job)
    if not yes:
        if not _stdin_is_tty():
            raise Refused(f"rm: refusing to delete job \"{found.id}\" without --yes (stdin is not a terminal to ask on)")
        if not typer.confirm(f"Delete job '{found.name}' ({found.id})? Its history stays.", default=False):
            typer.echo("not deleted", err=True)
            raise typer.Exit(1)
    removed = env().store().remove(found.id)
    message = f"🗑️ Job '{removed.name}' deleted"
    if as_json:
        _emit({"success": True, "message": message, "removed": [removed.id], "job": _job_dict(removed, _now())})
    else:
        _say(message)


def _set_paused(ref: str, paused: bool, as_json: bool) -> None:
    now = _now()
    job = env().store().set_paused(ref, paused)
    message = f"⏸️ Job '{job.name}' paused" if paused else f"▶️ Job '{job.name}' resumed"
    if as_json:
        _emit({"success": True, "message": message, "job": _job_dict(job, now)})
    else:
        _say(message)


@command("pause")
def pause(job: Annotated[str, typer.Argument(metavar="JOB", help="Job id or exact name.", show_default=False)], as_json: JsonOpt = False) -> None:
    """Stop firing a job until `resume`.

    Writes paused = true in the job file.

    Example:

    \b
      crawlsched pause daily-morning-crawl
    """
    _set_paused(job, True, as_json)


@command("resume")
def resume(job: Annotated[str, typer.Argument(metavar="JOB", help="Job id or exact name.", show_default=False)], as_json: JsonOpt = False) -> None:
    """Fire a paused job again.

    Example:

    \b
      crawlsched resume daily-morning-crawl
    """
    _set_paused(job, False, as_json)


@command("retry-config")
def retry_config(
    max_retries: Annotated[Optional[int], typer.Option("--max-retries", metavar="N", help="Retries after a failed attempt (0 = none).")] = None,
    retry_delay: Annotated[Optional[float], typer.Option("--retry-delay", metavar="S", help="Seconds before a retry.")] = None,
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
    from crawlsched.model import build_defaults

    changes = {k: v for k, v in {
        "max_retries": max_retries,
        "retry_delay": _num(retry_delay),
        "retry_backoff": _num(retry_backoff),
        "retry_max_delay": _num(retry_max_delay),
    }.items() if v is not None}  # fmt: skip
    if changes:
        build_defaults(changes)  # a bad value is refused as itself, before the file is touched
        defaults = env().store().set_defaults(changes)
        message = "✅ Retry config updated"
    else:
        defaults = _load().defaults
        message = "Retry config"
    data = render.defaults_dict(defaults)
    if as_json:
        _emit({"success": True, "message": message, "defaults": data})
        return
    _say(f"{message}: max_retries = {data['max_retries']}, retry_delay = {data['retry_delay']}s, "
         f"retry_backoff = {data['retry_backoff']}, retry_max_delay = {data['retry_max_delay'] or 'none'}")  # fmt: skip


@command("validate")
def validate(as_json: JsonOpt = False) -> None:
    """Check the job file.

    Exit 0 when it is valid, 2 with `jobs.toml:LINE: …` when not.

    Example:

    \b
      crawlsched -f /etc/crawlsched/jobs.toml validate
    """
    from crawlsched import timing

    path = env().jobs_file
    jobfile = _load()
    now = _now()
    finished = [j.id for j in jobfile.jobs if timing.is_finished(j, now)]
    if not path.exists():
        message = f"{path}: no job file yet (no jobs); `crawlsched add` creates it"
    else:
        message = f"{path}: OK, {len(jobfile.jobs)} job{'s' if len(jobfile.jobs) != 1 else ''}"
        if finished:
            message += f" ({len(finished)} finished: `crawlsched prune` removes them)"
    if as_json:
        _emit({"success": True, "message": message, "job_count": len(jobfile.jobs), "finished": finished, "jobs_file": str(path)})
    else:
        _say(message)


@command("prune")
def prune(as_json: JsonOpt = False) -> None:
    """Remove finished jobs; their history stays.

    A job is finished when its end date has passed and no fire is left.

    Example:

    \b
      crawlsched prune
    """
    from crawlsched import timing

    state = env().state()
    anchors = {}
    if state is not None:
        anchors = {job_id: timing.from_epoch(row["anchor"]) for job_id, row in state.seen().items() if row["anchor"] is not None}
    gone = env().store().prune(_now(), anchors)
    ids = [j.id for j in gone]
    message = f"🧹 Removed {len(ids)} finished job{'s' if len(ids) != 1 else ''}" + (f": {', '.join(ids)}" if ids else "")
    if as_json:
        _emit({"success": True, "message": message, "removed": ids})
    else:
        _say(message)


# --- commands: history and the daemon ----------------------------------------------------


@command("history")
def history(
    job: Annotated[Optional[str], typer.Argument(metavar="[JOB]", help="Job id or exact name [default: all jobs].", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs to list.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first, with the success rate.

    The rate is over the attempts listed.
    Skipped and missed fires are listed too but do not count in the rate.
    A deleted job's history can still be read by its id.

    Example:

    \b
      crawlsched history daily-morning-crawl --limit 50
    """
    from crawlsched import render

    jobfile = _load()
    state = env().state()
    job_id = None
    if job is not None:
        found = jobfile.find(job)
        if found is not None:
            job_id = found.id
        elif state is not None and state.known_id(job):
            job_id = job  # removed from the file; its history stays
        else:
            raise JobNotFound(job)
    runs = state.runs(job_id, limit) if state is not None else []
    by_id = {j.id: j for j in jobfile.jobs}
    rows = [render.run_dict(r, by_id.get(r.job_id)) for r in runs]
    rate = render.success_rate(runs)
    if as_json:
        _emit({"success": True, "runs": rows, "success_rate": rate})
        return
    console = _console()
    if not rows:
        console.print("no runs yet")
        return
    console.print(render.runs_table(rows, plain=not console.is_terminal, show_job=job_id is None))
    attempts = [r for r in runs if r.attempt > 0 and r.status in render.ATTEMPT_OUTCOMES]
    if rate is None:
        console.print("success rate: - (no finished attempts listed)")
    else:
        ok = sum(1 for r in attempts if r.status == "success")
        console.print(f"success rate: {rate:.0%} ({ok} of {len(attempts)} attempts)")


def live_daemon(state: State | None, now: float) -> dict[str, Any] | None:
    """The daemon's row when one is up: its pid is alive and its heartbeat is fresh (< 90 s)."""
    from crawlsched.state import pid_alive

    row = state.daemon() if state is not None else None
    if not row or row.get("stopped_at") is not None or not pid_alive(row.get("pid")):
        return None
    if row.get("heartbeat") is None or now - row["heartbeat"] > DAEMON_FRESH:
        return None
    return row


def _status(now: datetime) -> dict[str, Any]:
    from crawlsched import timing
    from crawlsched.errors import JobFileError

    row = live_daemon(env().state(), now.timestamp())
    local = timing.machine_timezone()
    config_ok, config_error, jobfile = True, None, None
    try:
        jobfile = _load()
    except JobFileError as exc:
        config_ok, config_error = False, str(exc)
    if row is not None and row.get("config_ok") is not None:
        # The daemon's own view wins: it may still run the last good file.
        config_ok, config_error = bool(row["config_ok"]), row.get("config_error")
    next_job, next_at, next_tz = None, None, local
    if row is not None and row.get("next_job"):
        next_job, next_at = row["next_job"], timing.from_epoch(row.get("next_due"))
    elif jobfile is not None:
        upcoming = [(d["next_run_iso"], d["id"]) for d in _job_dicts(jobfile, now) if d["next_run_iso"] and not d["paused"]]
        if upcoming:
            iso, next_job = min(upcoming, key=lambda item: datetime.fromisoformat(item[0]))
            next_at = datetime.fromisoformat(iso)
    if jobfile is not None and next_job is not None:
        known = jobfile.find(next_job)
        next_tz = known.timezone if known is not None else local
    started = timing.from_epoch(row.get("started_at")) if row else None
    beat = timing.from_epoch(row.get("heartbeat")) if row else None
    return {
        "success": True,
        "running": row is not None,
        "pid": row.get("pid") if row else None,
        "host": row.get("host") if row else None,
        "version": row.get("version") if row else None,
        "started_at": timing.format_local(started, local),
        "started_at_iso": timing.iso_local(started, local),
        "heartbeat": timing.format_local(beat, local),
        "heartbeat_iso": timing.iso_local(beat, local),
        "http": row.get("http") if row else None,
        "config_ok": config_ok,
        "config_error": config_error,
        "next_job": next_job,
        "next_run": timing.format_local(next_at, next_tz),
        "next_run_iso": timing.iso_local(next_at, next_tz),
        "jobs_file": str(env().jobs_file),
        "home": str(env().home),
    }


@command("status")
def status(as_json: JsonOpt = False) -> None:
    """Is the daemon up? Since when, what is next, config ok?

    Exit 0 when the daemon is up, 3 when not (with --json too).

    Example:

    \b
      crawlsched status --json
    """
    from crawlsched import render

    data = _status(_now())
    if as_json:
        _emit(data)
    else:
        for line in render.status_lines(data):
            _say(line)
    if not data["running"]:
        raise typer.Exit(DaemonNotRunning.exit_code)


def _daemon_or_fail() -> dict[str, Any]:
    row = live_daemon(env().state(), time.time())
    if row is None:
        raise DaemonNotRunning(f"the daemon is not running (home {env().home}); start it with `crawlsched daemon`")
    return row


@command("stop")
def stop(as_json: JsonOpt = False) -> None:
    """Stop the running daemon gracefully.

    Sends SIGTERM and waits up to 60 s for it to exit. Exit 3 when none is running.

    Example:

    \b
      crawlsched stop
    """
    import signal

    from crawlsched.state import pid_alive

    pid = int(_daemon_or_fail()["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise CrawlschedError(f"the daemon (pid {pid}) got SIGTERM but has not exited after {STOP_WAIT:g} s")
        time.sleep(0.1)
    message = f"daemon (pid {pid}) stopped"
    if as_json:
        _emit({"success": True, "message": message, "pid": pid})
    else:
        _say(message)


@command("run-now")
def run_now(job: Annotated[str, typer.Argument(metavar="JOB", help="Job id or exact name.", show_default=False)], as_json: JsonOpt = False) -> None:
    """Ask the running daemon to fire a job now.

    Exit 3 when no daemon is up (`crawlsched run JOB` runs it in this process instead).

    Example:

    \b
      crawlsched run-now daily-morning-crawl
    """
    found = _find(_load(), job)
    daemon = _daemon_or_fail()
    state = env().state()
    assert state is not None
    request = state.request_run(found.id, time.time())
    _poke(int(daemon["pid"]))
    deadline = time.monotonic() + HANDOVER_WAIT
    taken = state.request_taken(request)
    while not taken and time.monotonic() < deadline:
        time.sleep(0.05)
        taken = state.request_taken(request)
    if taken:
        message = f"▶️ Job '{found.name}' handed over to the daemon"
    else:
        message = f"Job '{found.name}' queued; the daemon has not taken it within {HANDOVER_WAIT:g} s and will when it can"
    if as_json:
        _emit({"success": True, "message": message, "job_id": found.id, "taken": taken})
    else:
        _say(message)


# --- the daemon, `run`, `demo` and `import` ---------------------------------------------------
#
# Heavy imports (requests, crawlsched.daemon, crawlsched.crawl, flask) stay inside
# these functions: `crawlsched --help` and `list` must not pay for them.


def _poke(pid: int) -> None:
    """Wake the daemon for a run-now request at once (it also polls every 2 s)."""
    import signal

    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError:
        pass


@command("run")
def run(
    job: Annotated[str, typer.Argument(metavar="JOB", help="Job id or exact name.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Run a job now in this process, with its retries, and show progress.

    The same attempts, history rows and log lines as the daemon's. Exit 0 when
    the run succeeds, 1 when it fails (or the job is running elsewhere).
    Ctrl-C during a retry wait ends the run.

    Example:

    \b
      crawlsched run daily-morning-crawl
    """
    import threading

    from crawlsched.logs import setup_logging
    from crawlsched.runner import run_foreground

    found = _find(_load(), job)
    state = env().state(create=True)
    assert state is not None
    log = setup_logging(env().home)
    console = None if as_json else _console()
    stop = threading.Event()

    def progress(line: str) -> None:
        if console is not None:
            console.print(f"[bold]{found.id}[/]: {line}")

    def wait(seconds: float) -> bool:
        try:
            if console is not None and console.is_terminal:
                with console.status(f"waiting {seconds:.0f} s for the next attempt (Ctrl-C ends the run)"):
                    return stop.wait(seconds)
            return stop.wait(seconds)
        except KeyboardInterrupt:
            return True

    result = run_foreground(found, state, env().home, log, progress=progress, wait=wait)
    ok = result.status == "success"
    if as_json:
        from crawlsched import render

        runs = [render.run_dict(r, found) for r in state.runs(found.id, limit=found.max_attempts)]
        _emit({"success": ok, "job_id": found.id, "status": result.status, "message": result.message, "runs": runs})
    if not ok:
        raise typer.Exit(1)


@command("daemon")
def daemon(
    http: Annotated[Optional[str], typer.Option("--http", metavar="HOST:PORT", help="Also serve the web page and JSON API, e.g. 127.0.0.1:5000.")] = None,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", metavar="PATH", help="File holding the API token [default: $CRAWLSCHED_TOKEN]. Required to bind a non-loopback address.")] = None,
    grace: Annotated[Optional[float], typer.Option("--grace", metavar="SECONDS", min=0, help="On SIGTERM, how long running attempts may finish [default: [defaults] grace_period, else 30].")] = None,
) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C.

    Fires every job on time, runs the crawls with their retries, records every
    attempt, and picks up changes of the job file within 2 s (SIGHUP: at once).
    Under systemd (NOTIFY_SOCKET set) it reports READY, STATUS, WATCHDOG and
    STOPPING; see contrib/crawlsched.service.

    Example:

    \b
      crawlsched daemon --http 127.0.0.1:5000
    """
    from crawlsched.daemon import run_daemon
    from crawlsched.logs import setup_logging
    from crawlsched.state import State

    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise Refused(f"--token-file: cannot read {str(token_file)!r} ({exc.strerror})") from None
        if not token:
            raise Refused(f"--token-file: {str(token_file)!r} is empty")
    elif os.environ.get("CRAWLSCHED_TOKEN"):
        token = os.environ["CRAWLSCHED_TOKEN"].strip()
    home = env().home
    log = setup_logging(home)
    store = env().store()
    store.cache_dir = home / ".cache"  # the daemon owns its home
    code = run_daemon(store, State(env().db_path), home, log, grace=grace, http=http, token=token)
    raise typer.Exit(code)


@command("demo")
def demo(
    seconds: Annotated[float, typer.Option("--seconds", min=5, help="How long the daemon runs.")] = 30,
    folder: Annotated[Optional[Path], typer.Option("--dir", metavar="PATH", help="Where to put the demo [default: a new temporary folder].")] = None,
) -> None:
    """A first run with nothing to set up: three jobs, a local target, the real daemon, a live table.

    Starts a small crawl target on 127.0.0.1, writes a job file in a temporary
    folder (a healthy job, a flaky one that succeeds on its third attempt, one
    that always fails), runs the daemon for about 30 s while showing the table,
    and leaves the folder for you to look at.

    Example:

    \b
      crawlsched demo
    """
    from rich.live import Live

    from crawlsched import render
    from crawlsched.demo import run_demo
    from crawlsched.timing import machine_timezone

    console = _console()
    plain = not console.is_terminal

    def table(jobs_file: Path, home: Path) -> Any:
        global _env
        _env = Env(jobs_file, home)
        try:
            t = render.jobs_table(_job_dicts(_load(), _now()), plain=plain)
        finally:
            env().close()
        t.title = f"crawlsched demo · {datetime.now().strftime('%H:%M:%S')}"
        return t

    if console.is_terminal:
        with Live(console=console, auto_refresh=False) as live:
            path = run_demo(seconds, lambda j, h: live.update(table(j, h), refresh=True), folder=folder, tz=machine_timezone())
    else:
        last: list[Any] = []
        path = run_demo(seconds, lambda j, h: last.append((j, h)), folder=folder, tz=machine_timezone())
        if last:
            console.print(table(*last[-1]))
    jobs_file = path / "jobs.toml"
    console.print(f"\nThe demo is in {path}. Look around:")
    console.print(f"  crawlsched -f {jobs_file} history")
    console.print(f"  crawlsched -f {jobs_file} show flaky")
    console.print(f"  cat {path}/logs/crawler_*.log")
    console.print(f"  crawlsched -f {jobs_file} daemon      # run it again")


@command("import")
def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The seed's scheduler_jobs.json.", show_default=False)],
    url: Annotated[Optional[List[str]], typer.Option("--url", metavar="URL", help="The URL each imported job crawls (else [defaults] url/command).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the seed's scheduler_jobs.json into the job file, keeping ids.

    Keeps ids, names, dates, hour and minute, retry settings and the paused
    state. Refuses the whole file if any record is invalid; safe to run twice.

    Example:

    \b
      crawlsched import scheduler_jobs.json --url https://example.com/news
    """
    from crawlsched.importer import import_seed

    state = env().state(create=True)
    store = env().store()
    jobs = import_seed(file, store, state, _now(), default_url=url or None)
    message = f"imported {len(jobs)} job{'s' if len(jobs) != 1 else ''} from {file}"
    if as_json:
        _emit({"success": True, "message": message, "job_ids": [j.id for j in jobs]})
    else:
        _say(message)
        for j in jobs:
            _say(f"  {j.id}  {j.name}")


def main() -> None:
    """The console script ``crawlsched``."""
    app(prog_name="crawlsched")
