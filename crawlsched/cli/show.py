"""Commands that show jobs, runs and the daemon: list (--watch), show, history, status."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from crawlsched.cli import JsonOpt, _console, _emit, _find, _job_dict, _job_dicts, _load, _now, _say, command, env
from crawlsched.cli.daemon import live_daemon
from crawlsched.errors import CrawlschedError, DaemonNotRunning, InvalidValue, Refused

if TYPE_CHECKING:
    from crawlsched.model import JobFile


def _load_shown(*, say: bool = True) -> tuple[JobFile, str | None]:
    """The job file to show, and its error while it is broken (SPEC §5, "When the job file is broken").

    While a daemon is up, a broken file shows the jobs that daemon runs (its last good
    file) and the error goes to stderr; the command prints its data, then exits 2
    (``_exit_if_broken``). With no daemon up the error is raised as before (exit 2).
    """
    from crawlsched import control

    jobfile, error = control.jobs_to_show(env().store(), env().state(), env().home, time.time())
    if error is not None and say:
        typer.echo(f"crawlsched: error: {control.showing_last_good(error, len(jobfile.jobs))}", err=True)
    return jobfile, error


def _with_error(payload: dict[str, Any], error: str | None) -> dict[str, Any]:
    return {**payload, "config_error": error} if error is not None else payload


def _exit_if_broken(error: str | None) -> None:
    if error is not None:
        raise typer.Exit(2)


SortOpt = Annotated[str, typer.Option("--sort", metavar="KEY", help="Order of the jobs: file (as written), next (soonest first), name, status (failed first) or last (latest run first).")]


@command("list")
def list_(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep the table live, refreshed every second, until Ctrl-C.")] = False,
    sort: SortOpt = "file",
    as_json: JsonOpt = False,
) -> None:
    """Show every job as a table (or JSON).

    The table fits the terminal: name, status, next and last run always;
    absolute times, schedule, message, retries and period when there is room.

    Example:

    \b
      crawlsched list --sort next
    """
    from crawlsched import render, tables

    if sort not in render.SORT_KEYS:
        raise InvalidValue("--sort", sort, f"is not a sort order (one of {', '.join(render.SORT_KEYS)})")
    if watch and as_json:
        raise Refused("list: --watch shows a live table and cannot be combined with --json")
    if watch:
        _watch(sort)
        return
    now = _now()
    if as_json:
        _list_json(now, sort)
        return
    jobfile, error = _load_shown()
    jobs = render.sort_jobs(_job_dicts(jobfile, now), sort)
    console = _console()
    console.print(tables.jobs_table(jobs, now=now, width=console.width, plain=not console.is_terminal))
    _exit_if_broken(error)


def _list_json(now: datetime, sort: str) -> None:
    """``list --json``: ``{"success": true, "jobs": [...]}`` as ``_emit`` would print it, made by
    ``listing``. What a version of the file shows is kept (``listing.kept_rows``): for a file
    unchanged since, the jobs are not read at all."""
    from crawlsched import listing

    store = env().store()
    before = store.stat_key()
    rows = listing.kept_rows(store.cache_dir, store.path, before, store.machine_tz)
    if rows is not None:  # that version was read without error: nothing of it to report
        state = env().state()
        states = state.job_states([r[listing.ID] for r in rows]) if state is not None else {}
        store.load_fire_memo()  # next fires an earlier `list` computed: exact, and 10,000 jobs need them
        text = listing.rows_json(rows, states, now, sort)
        store.save_fire_memo(now.timestamp())
        typer.echo(text)
        return
    jobfile, error = _load_shown()
    # The rows belong to the version read only if the file did not change around the read.
    key = before if error is None and before is not None and store.stat_key() == before else None
    state = env().state()
    states = state.job_states([j.id for j in jobfile.jobs]) if state is not None else {}
    store.load_fire_memo()
    text = listing.jobs_json(jobfile, states, now, sort, key=key, machine_tz=store.machine_tz, cache_dir=store.cache_dir,
                             path=store.path, extra=[("config_error", error)] if error is not None else ())
    store.save_fire_memo(now.timestamp())
    typer.echo(text)
    _exit_if_broken(error)


def _watch(sort: str) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from crawlsched import render, tables

    console = _console()
    plain = not console.is_terminal

    def frame() -> Any:
        now = _now()
        try:
            jobfile, error = _load_shown(say=False)
            jobs = render.sort_jobs(_job_dicts(jobfile, now), sort)
            table = tables.jobs_table(jobs, now=now, width=console.width, plain=plain)
        except CrawlschedError as exc:  # e.g. the file is half-edited: say so and keep watching
            return Text(f"crawlsched: error: {exc}", style="red")
        title = f"crawlsched · {datetime.now().strftime('%H:%M:%S')} · Ctrl-C to stop · {env().jobs_file}"
        parts = [Text(tables.cut_line(title, console.width), style="" if plain else "bold"), table]
        if error is not None:
            from crawlsched import control

            parts.append(Text(f"error: {control.showing_last_good(error, len(jobfile.jobs))}", style="" if plain else "red"))
        return Group(*parts)

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
    limit: Annotated[int, typer.Option("--limit", "-n", metavar="N", min=1, help="How many recent runs to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Show one job's settings and its recent runs.

    Example:

    \b
      crawlsched show daily-morning-crawl --limit 20
    """
    from crawlsched import render, tables

    now = _now()
    jobfile, error = _load_shown()
    found = _find(jobfile, job)
    state = env().state()
    runs = [render.run_dict(r, found) for r in state.runs(found.id, limit)] if state is not None else []
    data = _job_dict(found, now)
    if as_json:
        _emit(_with_error({"success": True, "job": data, "runs": runs}, error))
        _exit_if_broken(error)
        return
    console = _console()
    plain = not console.is_terminal
    console.print(tables.job_details(data, now=now, width=console.width, plain=plain))
    console.print()
    if runs:
        console.print(tables.runs_table(runs, now=now, width=console.width, plain=plain, show_job=False,
                                        zones={found.id: found.timezone}))
    else:
        console.print("no runs yet")
    _exit_if_broken(error)


@command("history")
def history(
    job: Annotated[Optional[str], typer.Argument(metavar="[JOB]", help="Job id or exact name [default: all jobs]; the id of a removed job reads its history.", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", metavar="N", min=1, help="How many runs to list.")] = 20,
    since: Annotated[Optional[str], typer.Option("--since", metavar="WHEN", help="Only runs since then: 24h, 7d (back from now) or an ISO date or date-time.", show_default=False)] = None,
    status: Annotated[Optional[str], typer.Option("--status", metavar="STATUS", help="Only runs with this status: running, success, failed, skipped, missed, interrupted (several: failed,interrupted).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first, with success rates.

    success_rate is over the attempts listed; run_success_rate over the runs
    (fires) those attempts belong to whose chain has ended, judged by all
    their attempts. Skipped and missed fires are listed but count in neither.
    An id wins over a name: a removed job's history is read by its id.

    Example:

    \b
      crawlsched history daily-morning-crawl --since 7d --status failed
    """
    from crawlsched import history as hist
    from crawlsched import render, tables
    from crawlsched.timing import machine_timezone

    now = _now()
    statuses = hist.parse_statuses(status) if status is not None else None
    after = hist.parse_since(since, now, machine_timezone()) if since is not None else None
    jobfile, error = _load_shown()
    state = env().state()
    job_id = hist.resolve(jobfile, state, job).job_id if job is not None else None
    runs = state.runs(job_id, limit, since=after.timestamp() if after else None, statuses=statuses) if state is not None else []
    by_id = {j.id: j for j in jobfile.jobs}
    rows = [render.run_dict(r, by_id.get(r.job_id)) for r in runs]
    rates = hist.rates(runs, state)
    if as_json:
        _emit(_with_error({"success": True, "runs": rows, "success_rate": rates.success_rate,
                           "run_success_rate": rates.run_success_rate}, error))
        _exit_if_broken(error)
        return
    console = _console()
    if not rows:
        console.print("no runs yet" if since is None and status is None else "no runs match")
        _exit_if_broken(error)
        return
    zones = {j.id: j.timezone for j in jobfile.jobs}
    console.print(tables.runs_table(rows, now=now, width=console.width, plain=not console.is_terminal,
                                    show_job=job_id is None, zones=zones))
    if rates.success_rate is None:
        console.print("success rate: - (no finished attempts listed)")
    else:
        console.print(f"success rate: {rates.success_rate:.0%} ({rates.attempts_ok} of {rates.attempts} attempts)")
    if rates.run_success_rate is not None:
        console.print(f"run success rate: {rates.run_success_rate:.0%} ({rates.runs_ok} of {rates.runs} runs)")
    _exit_if_broken(error)


def _status(now: datetime) -> dict[str, Any]:
    """The status (``render.status_dict``); a database that cannot be read is reported as
    ``state_error`` and the daemon counts as down unless its lock shows it up."""
    from crawlsched import render
    from crawlsched.cli import daemon as cli_daemon
    from crawlsched.errors import JobFileError
    from crawlsched.roster import roster

    row, state, state_error, pid = None, None, None, None
    label = env().state_label()
    try:
        state = env().state()
        row = live_daemon(state, now.timestamp())
        pid = row.get("pid") if row else None
    except Exception as exc:  # sqlite3.DatabaseError, OSError, a refused schema: status must still answer
        state, state_error = None, _state_trouble(label, exc)
        # A daemon holding the home's lock is up even if we cannot read its row.
        holder = getattr(cli_daemon, "lock_holder", None)
        pid = holder(env().home) if holder is not None else None
    config_ok, config_error, jobfile = True, None, None
    try:
        jobfile = _load()
    except JobFileError as exc:
        config_ok, config_error = False, str(exc)
    if row is not None and row.get("config_ok") is not None:
        # The daemon's own view wins: it may still run the last good file.
        config_ok, config_error = bool(row["config_ok"]), row.get("config_error")
    states: dict[str, Any] = {}
    store = None
    if jobfile is not None:  # what is next, as of now: from the job file and the state
        if state is not None:
            try:
                states = state.job_states([j.id for j in jobfile.jobs])
            except Exception as exc:
                state_error = state_error or _state_trouble(label, exc)
        store = env().store()
        store.load_fire_memo()  # next fires an earlier `list` computed: exact, and 10,000 jobs need them
    members = None
    if state is not None:
        try:
            members = roster(state, now.timestamp())
        except Exception as exc:
            state_error = state_error or _state_trouble(label, exc)
    # On a shared state, a daemon up on another host (or standing by here) is the daemon up: the
    # leader's process and times are shown when this home runs none.
    elsewhere = bool(members and getattr(state, "shared", False) and any(d["alive"] for d in members["daemons"]))
    if row is None and pid is None and elsewhere:
        from crawlsched.control import live_leader

        row = live_leader(state, now.timestamp())
        pid = row.get("pid") if row else None
    data = render.status_dict(
        row, jobfile, now, states=states, running=row is not None or pid is not None or elsewhere, pid=pid,
        http=row.get("http") if row else None, config_ok=config_ok, config_error=config_error,
        jobs_file=str(env().jobs_file), home=str(env().home), state_error=state_error,
        jobs_file_missing=not env().jobs_file.exists(), scheduler_paused=_scheduler_paused(jobfile, row), state=label,
        roster=members)
    if store is not None:
        store.save_fire_memo(now.timestamp())
    return data


def _state_trouble(label: str | None, exc: Exception) -> str:
    """Why the state could not be read, as ``state_error`` says it: naming the state, never its password."""
    from crawlsched.errors import CrawlschedError

    message = " ".join(str(exc).split())
    if label is None or isinstance(exc, CrawlschedError) and label in message:
        return message  # it names the state already (a PostgreSQL state's messages are redacted where made)
    return f"{label}: {message}"


def _scheduler_paused(jobfile: JobFile | None, row: dict[str, Any] | None) -> bool:
    """``[defaults] paused`` of the file; while the file is broken, of the daemon's last good file."""
    if jobfile is not None:
        return jobfile.defaults.paused
    last_good = env().store().load_last_good(env().home) if row is not None else None
    return bool(last_good is not None and last_good.defaults.paused)


@command("status")
def status(as_json: JsonOpt = False) -> None:
    """Is the daemon up? Since when, what is next, config ok?

    Exit 0 when the daemon is up, 3 when not (with --json too).

    Example:

    \b
      crawlsched status --json
    """
    from crawlsched import tables

    data = _status(_now())
    if as_json:
        _emit(data)
    else:
        for line in tables.status_lines(data):
            _say(line)
    if not data["running"]:
        raise typer.Exit(DaemonNotRunning.exit_code)
