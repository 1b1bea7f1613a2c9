"""The command line: parse → call the library → render. No logic of its own.

Every command's docstring is its ``--help`` and carries an example. Errors are
one line on stderr (``crawlsched: error: …``), or ``{"success": false, "error":
…}`` on stdout with ``--json``, and the exit code of SPEC §5 — never a
traceback (``CRAWLSCHED_DEBUG=1`` shows one for an unexpected failure).

Start-up time matters (``crawlsched --help`` should stay under 100 ms), so
only ``typer`` and the errors module are imported here; the store, the state
database and rich are imported by the commands that use them, and
``requests``, the daemon and the crawler are never imported on this path.

This package holds the app, the environment of one invocation, the output
helpers and the ``command`` decorator; the commands live by topic in
``edit`` (the job file; its shared options in ``options``), ``settings`` ([defaults]), ``show`` (jobs,
runs, status) and ``daemon`` (the daemon and running jobs), imported
by ``main`` (only the module of the command being run) or by ``app`` (all) so that they register.
"""

from __future__ import annotations

import functools
import os
import sys
import typing
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer

from crawlsched.cli.terminal import BROKEN_PIPE, console_broken_pipe, plain_argument_metavars, quiet_stdout
from crawlsched.errors import CrawlschedError, JobNotFound

if TYPE_CHECKING:
    from rich.console import Console

    from crawlsched.model import Job, JobFile
    from crawlsched.state import State
    from crawlsched.state.open import StateChoice
    from crawlsched.store import JobStore

UTC = timezone.utc
HANDOVER_WAIT = 5.0  # seconds `run-now` waits for the daemon to take the request

_app = typer.Typer(
    name="crawlsched",
    help="Schedule recurring crawl jobs: a readable jobs.toml, a daemon that fires on time and retries, and the history of every attempt.",
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# --- the environment of one invocation -------------------------------------------------


class Env:
    """Where the job file and the home are, and the state database once opened.

    A plain class, not a dataclass: ``dataclasses`` (and what it imports) would be the one
    module ``crawlsched --help`` loads beyond Typer's own.
    """

    def __init__(self, jobs_file: Path, home: Path) -> None:
        self.jobs_file = jobs_file
        self.home = home
        self._state: Any = None
        self._choice: Any = None

    def __repr__(self) -> str:
        return f"Env(jobs_file={self.jobs_file!r}, home={self.home!r})"

    @property
    def db_path(self) -> Path:
        """The home's SQLite file: the state unless $CRAWLSCHED_STATE or [defaults] state names PostgreSQL."""
        return self.home / "crawlsched.db"

    def state_choice(self) -> StateChoice:
        """Which state this invocation uses (``crawlsched.state.open.choose_state``); bad settings: exit 2."""
        if self._choice is None:
            from crawlsched.state.open import ENV_VAR, choose_state

            named = None if os.environ.get(ENV_VAR, "").strip() else self.store().defaults_state(self.home)
            try:
                self._choice = choose_state(self.home, named)
            except CrawlschedError:
                if named is not None:
                    self.store().load()  # a bad [defaults] state is the job file's error: jobs.toml:LINE
                raise
        return self._choice

    def state_label(self) -> str | None:
        """The state as messages show it: the SQLite path, or the PostgreSQL DSN without its password;
        None when the setting itself is refused (``state()`` raises the reason)."""
        try:
            return self.state_choice().label
        except CrawlschedError:
            return None

    def store(self) -> JobStore:
        from crawlsched.store import JobStore, user_cache_dir

        # The parse cache lives in the user's cache folder, not in the home: a read
        # must not create folders where the user merely ran `crawlsched list`.
        return JobStore(self.jobs_file, cache_dir=user_cache_dir())

    def state(self, *, create: bool = False) -> State | None:
        """The state (``crawlsched.state.open``): PostgreSQL when named, else the home's SQLite file, which
        is None when it does not exist and ``create`` is false (no history yet)."""
        if self._state is None:
            choice = self.state_choice()
            if not choice.postgres and not create and not choice.path.exists():
                return None
            from crawlsched.state.open import open_choice

            self._state = open_choice(choice)
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


def _use_env(new: Env) -> None:
    """Make ``new`` the environment that ``env()`` returns (the root callback, the demo's table)."""
    global _env
    _env = new


def _print_version(value: bool) -> None:
    if value:
        from crawlsched import __version__

        typer.echo(f"crawlsched {__version__}")
        raise typer.Exit(0)


@_app.callback()
def _root(
    jobs_file: Annotated[Optional[str], typer.Option("--jobs-file", "-f", metavar="PATH", help="The job file [default: $CRAWLSCHED_JOBS, else ./jobs.toml].", show_default=False)] = None,
    home: Annotated[Optional[str], typer.Option("--home", metavar="PATH", help="Folder for the state database, logs and data [default: $CRAWLSCHED_HOME, else the job file's folder].", show_default=False)] = None,
    version: Annotated[bool, typer.Option("--version", help="Print `crawlsched VERSION` and exit.", is_eager=True, callback=_print_version)] = False,
) -> None:
    """Schedule recurring crawl jobs: a readable jobs.toml, a daemon that fires on time and retries, and the history of every attempt.

    Start with `crawlsched add "News" --at 09:05 --url https://example.com/news`, then `crawlsched list`.
    """
    from crawlsched.store import resolve_paths

    _use_env(Env(*resolve_paths(jobs_file, home)))


# --- output ------------------------------------------------------------------------------


def _emit(obj: dict[str, Any]) -> None:
    import json

    typer.echo(json.dumps(obj, ensure_ascii=False, default=str))


def _console() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        # A pipe has no width: don't squeeze rows into $COLUMNS or 80, a script reads whole lines.
        console = Console(highlight=False, width=max(200, console.width))
    console.on_broken_pipe = console_broken_pipe  # type: ignore[method-assign] # rich's would exit 1
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
        # The modules write `from __future__ import annotations`: Typer would evaluate each
        # annotation's text four times (inspect.signature and get_type_hints, for the command
        # and for its callback), about a third of `crawlsched --help`. Once, here.
        fn.__annotations__ = typing.get_type_hints(fn, include_extras=True)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            as_json = bool(kwargs.get("as_json"))
            try:
                return fn(*args, **kwargs)
            except typer.Exit:
                raise
            except BrokenPipeError:  # `crawlsched status | head -1`: the reader left; say nothing more
                quiet_stdout()
                raise typer.Exit(BROKEN_PIPE) from None
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

        # The summary in `crawlsched --help` is the docstring's first paragraph, whole:
        # Click would cut it to the room left beside the name, ending in "...".
        return _app.command(name, short_help=_summary(fn.__doc__))(run)

    return register


def _summary(doc: str | None) -> str | None:
    if not doc:
        return None
    import inspect

    return " ".join(inspect.cleandoc(doc).split("\n\n", 1)[0].split())




plain_argument_metavars()


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


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


# Every command's --json (the options `add` and `edit` share are in `options`).
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


# --- the commands, by topic -----------------------------------------------------------------

# Which module registers each command. `crawlsched CMD` imports only CMD's module (and what it
# imports): Typer turns every registered command into a Click command on each call, so the
# others would only cost time. `app` loads all; `crawlsched --help` none (crawlsched.cli.summaries).
COMMAND_MODULES = {
    "add": "edit", "edit": "edit", "rm": "edit", "pause": "edit", "resume": "edit", "validate": "edit",
    "prune": "edit", "import": "edit", "retry-config": "settings", "defaults": "settings",
    "list": "show", "show": "show", "history": "show", "status": "show", "logs": "logs",
    "stop": "daemon", "run-now": "daemon", "run": "daemon", "daemon": "daemon", "demo": "daemon",
    "worker": "worker",
}
# `crawlsched --help` lists the commands in this order, whatever the modules' order.
COMMAND_ORDER = (
    "add", "edit", "list", "show", "rm", "pause", "resume", "retry-config", "defaults", "validate", "prune",
    "history", "logs", "status", "stop", "run-now", "run", "daemon", "worker", "demo", "import",
)
ROOT_OPTIONS_WITH_VALUE = ("-f", "--jobs-file", "--home")


def _load_commands(names: list[str] | None = None) -> typer.Typer:
    """Import the modules of the commands ``names`` (all when None); they register with the app."""
    for module in sorted({COMMAND_MODULES[n] for n in names} if names is not None else set(COMMAND_MODULES.values())):
        __import__(f"crawlsched.cli.{module}")  # the import statement's path: -X importtime sees it
    _app.registered_commands.sort(key=lambda info: COMMAND_ORDER.index(info.name))
    return _app


def _command_named(argv: list[str]) -> str | None:
    """The command ``argv`` runs, when it names a known one after the root options; else None."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ROOT_OPTIONS_WITH_VALUE:
            i += 2
        elif arg.startswith(("--jobs-file=", "--home=")) or (arg.startswith("-f") and not arg.startswith("--")):
            i += 1
        elif arg == "--":
            return argv[i + 1] if i + 1 < len(argv) and argv[i + 1] in COMMAND_MODULES else None
        elif arg.startswith("-"):
            return None  # --help, --version, an unknown option: the whole app answers
        else:
            return arg if arg in COMMAND_MODULES else None
    return None


def __getattr__(name: str) -> Any:
    if name == "app":  # `from crawlsched.cli import app`: the app with every command
        return _load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """The console script ``crawlsched``.

    A usage error Click finds before a command runs (a missing argument, an
    option that is no integer, an unknown option) is one line like every other
    error, ``crawlsched: error: …`` on stderr with exit 2 (README: "an error is
    one line"); with ``--json`` it is the same ``{"success": false, "error": …}``
    object.
    """
    argv = sys.argv[1:]
    as_json = "--json" in argv[: argv.index("--") if "--" in argv else None]
    named = _command_named(argv)
    if named is not None:
        _load_commands([named])
    else:  # the root help, --version, an unknown command: the commands' summaries are enough
        from crawlsched.cli.summaries import register_stand_ins

        register_stand_ins(_app, COMMAND_ORDER)
    try:
        code = _app(prog_name="crawlsched", standalone_mode=False)
    except Exception as exc:
        # Click's classes (Typer 0.28 vendors its own copy): UsageError, BadParameter,
        # NoSuchOption … derive from ClickException; Abort is Ctrl-C at a prompt.
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        if "Abort" in kinds:
            sys.exit(1)
        if "ClickException" not in kinds:
            raise
        ctx = getattr(exc, "ctx", None)
        if "NoArgsIsHelpError" in kinds and not as_json:  # bare `crawlsched`: its help, as Click prints it
            sys.stderr.write(exc.format_message() + "\n")  # type: ignore[attr-defined]
            sys.exit(getattr(exc, "exit_code", 2))
        # "crawlsched add: Missing option …"; the root's own errors need no second "crawlsched:"
        where = f"{ctx.command_path}: " if ctx is not None and " " in ctx.command_path else ""
        message = " ".join(f"{where}{exc.format_message()}".split())  # type: ignore[attr-defined]
        if as_json:
            _emit({"success": False, "error": message})
        else:
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            sys.stderr.write(f"crawlsched: error: {message}{hint}\n")
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
