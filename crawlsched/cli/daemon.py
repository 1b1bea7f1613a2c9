"""Commands of the daemon and of running jobs: daemon, stop, run-now, run, demo.

Heavy imports (requests, crawlsched.daemon, crawlsched.crawl, flask) stay inside
these functions: `crawlsched --help` and `list` must not pay for them.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from crawlsched import cli  # the package: read at call time what tests replace there
from crawlsched.cli import Env, JsonOpt, _console, _emit, _find, _job_dicts, _load, _now, _say, _use_env, command, env
from crawlsched.cli.apitoken import _reexec_without_token, _token_handed_over
from crawlsched.errors import CrawlschedError, DaemonNotRunning, Refused

if TYPE_CHECKING:
    import logging

    from crawlsched.state import State
    from crawlsched.store import JobStore

STOP_WAIT = 60.0  # seconds `stop` waits for the daemon to exit


def live_daemon(state: State | None, now: float, home: Path | None = None) -> dict[str, Any] | None:
    """The daemon's row when one is up in this invocation's home (``control.live_daemon``), else None."""
    from crawlsched import control

    return control.live_daemon(state, now, env().home if home is None else home)


def lock_holder(home: Path) -> int | None:
    """The pid holding the home's daemon lock, else None (``control.lock_holder``)."""
    from crawlsched import control

    return control.lock_holder(home)


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

    Exit 1, queueing nothing, when the job is running or waiting for a retry (runs
    of one job never overlap); exit 3 when no daemon is up (`crawlsched run JOB`
    runs it in this process instead).

    Example:

    \b
      crawlsched run-now daily-morning-crawl
    """
    from crawlsched import control

    found = _find(_load(), job)
    here = live_daemon(env().state(), time.time())
    # On a shared state the leader takes the request from any home and host (SPEC §10): this
    # home's daemon is woken at once; another host's leader looks for requests within seconds.
    daemon = here or control.live_leader(env().state(), time.time()) or _daemon_or_fail()
    state = env().state()
    assert state is not None
    control.refuse_if_busy(state, found)  # exit 1, nothing queued
    wake = (lambda: _poke(int(daemon["pid"]))) if here is not None else (lambda: None)
    taken, message = control.hand_over(state, found, wake=wake, wait=cli.HANDOVER_WAIT, source="cli")
    if as_json:
        _emit({"success": True, "message": message, "job_id": found.id, "taken": taken})
    else:
        _say(message)


def _poke(pid: int) -> None:
    """Wake the daemon for a run-now request at once (it also looks for requests every 10 s)."""
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
    the run succeeds, 1 when it fails. A job never overlaps itself: this refuses
    (exit 1, saying why) while the daemon runs the job or waits for its retry,
    and the daemon skips the job's fires until this run ends.
    Ctrl-C during a retry wait ends the run.

    Example:

    \b
      crawlsched run daily-morning-crawl
    """
    import signal
    import sys
    import threading

    from crawlsched.logs import setup_logging
    from crawlsched.model import RunStatus
    from crawlsched.foreground import run_foreground

    found = _find(_load(), job)
    state = env().state(create=True)
    assert state is not None
    log = setup_logging(env().home)
    console = None if as_json else _console()
    stop = threading.Event()

    def progress(line: str) -> None:
        if console is not None:
            console.print(f"{found.id}: {line}", markup=False)  # a message may hold [brackets]

    def wait(seconds: float) -> bool:
        try:
            if console is not None and console.is_terminal:
                with console.status(f"waiting {seconds:.0f} s for the next attempt (Ctrl-C ends the run)"):
                    return stop.wait(seconds)
            return stop.wait(seconds)
        except KeyboardInterrupt:
            return True

    # SIGTERM (kill, systemd, a CI timeout) stops the running attempt through the cancel
    # event: the command's process group is stopped and the row closed as interrupted.
    # Ctrl-C arrives as KeyboardInterrupt: run_command stops the group, the runner closes
    # the row, and it ends here with exit 130 and one line, no traceback.
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = run_foreground(found, state, env().home, log, progress=progress, wait=wait, cancel=stop)
    except KeyboardInterrupt:
        message = f"job {found.id}: interrupted (Ctrl-C); the attempt was stopped and recorded as interrupted"
        if as_json:
            _emit({"success": False, "job_id": found.id, "status": RunStatus.INTERRUPTED.value, "message": message, "error": message})
        else:
            print(f"crawlsched: {message}", file=sys.stderr)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    ok = result.status == RunStatus.SUCCESS
    if as_json:
        from crawlsched import render

        runs = [render.run_dict(r, found) for r in state.runs(found.id, limit=found.max_attempts)]
        payload = {"success": ok, "job_id": found.id, "status": result.label, "message": result.message, "runs": runs}
        if not ok:
            payload["error"] = result.message
        _emit(payload)
    if not ok:
        raise typer.Exit(1)


@command("daemon")
def daemon(
    http: Annotated[Optional[str], typer.Option("--http", metavar="HOST:PORT", help="Also serve the web page and JSON API, e.g. 127.0.0.1:5000.")] = None,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", metavar="PATH", help="File holding the API token [default: $CRAWLSCHED_TOKEN]. Required to bind a non-loopback address, and there at least 128 bits (32 hex characters, e.g. `openssl rand -hex 16`).")] = None,
    grace: Annotated[Optional[float], typer.Option("--grace", metavar="SECONDS", min=0, help="On SIGTERM, how long running attempts may finish [default: [defaults] grace_period, else 30].")] = None,
) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C.

    Fires every job on time, runs the crawls with their retries, records every
    attempt, and picks up changes of the job file at once (inotify; on a network
    file system or without inotify it checks the file every second; SIGHUP: at once).
    Under systemd (NOTIFY_SOCKET set) it reports READY, STATUS, WATCHDOG and
    STOPPING; see contrib/crawlsched.service.

    Example:

    \b
      crawlsched daemon --http 127.0.0.1:5000
    """
    from crawlsched.logs import setup_logging

    _reexec_without_token()  # from here on, /proc/<pid>/environ holds no token
    handed = _token_handed_over()
    token = None
    if http:
        from crawlsched.web.server import check_bind, load_token

        environ = {"CRAWLSCHED_TOKEN": handed} if handed is not None else None
        token = load_token(token_file, environ)  # also takes CRAWLSCHED_TOKEN out of the environment
        # Refused before anything starts (exit 2): no token, or a weak one, on a non-loopback address.
        check_bind(http, token, f"--token-file {token_file}" if token_file else "CRAWLSCHED_TOKEN")
    else:
        if token_file is not None:
            raise Refused("--token-file: only with --http (the token guards the web API)")
        os.environ.pop("CRAWLSCHED_TOKEN", None)  # crawl commands never inherit it
    home = env().home
    log = setup_logging(home)
    # A fatal signal (SIGBUS from a mapped file that turned immutable under SQLite, SIGSEGV)
    # still leaves a line and the stack on stderr (the journal): never a silent death.
    import faulthandler

    faulthandler.enable()
    store = env().store()
    store.cache_dir = home / ".cache"  # the daemon owns its home
    state = _daemon_state(store)
    from crawlsched.state.open import guard_log, scrub

    choice = env().state_choice()
    guard_log(log, choice)
    try:
        code = run_daemon(store, state, home, log, grace=grace, http=http, token=token)
    except Exception as exc:  # e.g. a PostgreSQL state that cannot be reached at start: said without its password
        if not choice.postgres or os.environ.get("CRAWLSCHED_DEBUG"):
            raise
        detail = scrub(" ".join(str(exc).split()), choice, os.environ) or type(exc).__name__
        raise CrawlschedError(f"the daemon could not start on the state {choice.label}: {detail}") from None
    if getattr(state, "unsafe_to_close", lambda: False)():
        # Connections were set aside on database files that are still read-only: closing
        # them at exit writes to their -shm map, which is SIGBUS. Exit without closing.
        import logging
        import sys

        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def _daemon_state(store: JobStore) -> State:
    """The daemon's state store, not opened yet (the daemon opens it as its first step).

    ``executor = "workers"`` without a PostgreSQL state is refused here, before anything
    starts (exit 2). A job file that does not load is the daemon's to report, as always.
    """
    from crawlsched.memory import collector_paused
    from crawlsched.state.open import check_executor, open_choice

    choice = env().state_choice()
    try:
        # The daemon's process (run_daemon owns it): its jobs are loaded here, with the collector paused
        # and frozen after, as its start then plans them (Daemon.start; its settle unfreezes and collects).
        with collector_paused(True, freeze=True):
            executor = store.load(cache_later=True).defaults.executor  # the daemon's start loads it again: kept (store)
    except CrawlschedError:
        executor = None
    if executor is not None:
        check_executor(executor, choice)
    return open_choice(choice, daemon=True)  # type: ignore[return-value]


def run_daemon(store: JobStore, state: State, home: Path, log: logging.Logger, *, grace: float | None = None,
               http: str | None = None, token: str | None = None) -> int:
    """``crawlsched daemon``: the scheduler, and the web API when asked; runs until SIGTERM.

    The CLI wires the two together: ``crawlsched.daemon`` knows nothing of the web
    (model ← … ← daemon ← cli, web).
    """
    from crawlsched.daemon import Daemon, DaemonView

    daemon = Daemon(store, state, home, log, grace=grace)
    server = None
    if http:
        from crawlsched.web import start_server

        server = start_server(store, state, DaemonView(daemon), http, home=home, log=log, token=token)
        daemon.http_url = server.url
    try:
        return daemon.run()
    finally:
        if server is not None:
            server.close()


@command("demo")
def demo(
    seconds: Annotated[float, typer.Option("--seconds", metavar="S", min=5, help="How long the daemon runs, in seconds (at least 5).")] = 30,
    folder: Annotated[Optional[Path], typer.Option("--dir", metavar="PATH", help="Where to put the demo [default: a new temporary folder].")] = None,
) -> None:
    """A first run with nothing to set up: three jobs, a local target, the real daemon, a live table.

    Starts a small crawl target on 127.0.0.1, writes a job file in a temporary
    folder (a healthy job, a flaky one that succeeds on its third attempt, one
    that always fails), runs the daemon for about 30 s while showing the table,
    and leaves the folder for you to look at. Exit 1, with the daemon's last
    lines, if the daemon stops on its own.

    Example:

    \b
      crawlsched demo
    """
    from crawlsched.errors import DemoFailed

    console = _console()
    plain = not console.is_terminal
    try:
        _demo(console, plain, seconds, folder)
    except DemoFailed as exc:  # the daemon's last lines first, then the one-line error
        import sys

        print("the daemon's last lines:" if exc.tail else "the daemon wrote nothing", file=sys.stderr)
        for line in exc.tail:
            print(f"  {line}", file=sys.stderr)
        raise


def _demo(console: Any, plain: bool, seconds: float, folder: Path | None) -> None:
    from rich.live import Live

    from crawlsched import tables
    from crawlsched.demo import run_demo
    from crawlsched.timing import machine_timezone

    def table(jobs_file: Path, home: Path) -> Any:
        _use_env(Env(jobs_file, home))
        try:
            now = _now()
            t = tables.jobs_table(_job_dicts(_load(), now), now=now, width=console.width, plain=plain)
        finally:
            env().close()
        t.title = f"crawlsched demo · {datetime.now().strftime('%H:%M:%S')}"
        return t

    if console.is_terminal:
        with Live(console=console, auto_refresh=False) as live:
            path = run_demo(seconds, lambda j, h: live.update(table(j, h), refresh=True), folder=folder, tz=machine_timezone())
    else:
        last: list[Any] = []
        try:
            path = run_demo(seconds, lambda j, h: last.append((j, h)), folder=folder, tz=machine_timezone())
        finally:  # the last table, also when the daemon died (the error follows it)
            if last:
                console.print(table(*last[-1]))
    jobs_file = path / "jobs.toml"
    # Whole lines, never broken by rich at the terminal's width: the paths are copied and pasted.
    for line in (f"\nThe demo is in {path}. Look around:", f"  crawlsched -f {jobs_file} history",
                 f"  crawlsched -f {jobs_file} show flaky", f"  cat {path}/logs/crawler_*.log", "Run it again:",
                 f"  crawlsched -f {jobs_file} daemon"):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
