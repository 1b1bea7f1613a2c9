"""Commands that change the job file's jobs: add, edit, rm, pause, resume; and validate, prune, import.

The keys of ``[defaults]`` (retry-config, defaults) are in ``crawlsched.cli.settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from crawlsched import cli, control  # cli: the package, read at call time (tests replace things there)
from crawlsched.cli import JsonOpt, _emit, _find, _job_dict, _load, _now, _say, command, env
from crawlsched.cli.options import (
    AtOpt,
    BackoffOpt,
    CatchUpOpt,
    CommandOpt,
    CronOpt,
    EndOpt,
    EveryOpt,
    HeaderOpt,
    HourOpt,
    KeepRunsOpt,
    MaxBytesOpt,
    MaxDelayOpt,
    MaxRetriesOpt,
    MinuteOpt,
    OnFailureOpt,
    RetryDelayOpt,
    StartOpt,
    TimeoutOpt,
    TzOpt,
    UrlOpt,
    UserAgentOpt,
    _options,
    _schedule,
)
from crawlsched.errors import InvalidValue, Refused


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
      crawlsched add "Daily Morning Crawl" --at 09:05 \\
          --start 2030-01-01 --end 2030-01-31 --url https://example.com/news \\
          --max-retries 3 --retry-delay 300
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
        from crawlsched.render import ADDED

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
    message = control.UPDATED.format(name=edited.name)
    if as_json:
        _emit({"success": True, "message": message, "job": _job_dict(edited, now)})
    else:
        _say(message)


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
        if not cli._stdin_is_tty():  # looked up in the package, where tests replace it
            raise Refused(f"rm: refusing to delete job \"{found.id}\" without --yes (stdin is not a terminal to ask on)")
        if not typer.confirm(f"Delete job '{found.name}' ({found.id})? Its history stays.", default=False):
            typer.echo("not deleted", err=True)
            raise typer.Exit(1)
    removed = env().store().remove(found.id)
    message = control.DELETED.format(name=removed.name)
    if as_json:
        _emit({"success": True, "message": message, "removed": [removed.id], "job": _job_dict(removed, _now())})
    else:
        _say(message)


def _set_paused(ref: str, paused: bool, as_json: bool) -> None:
    now = _now()
    job = env().store().set_paused(ref, paused)
    message = (control.PAUSED if paused else control.RESUMED).format(name=job.name)
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


@command("validate")
def validate(as_json: JsonOpt = False) -> None:
    """Check the job file.

    Exit 0 when it is valid, 2 with `jobs.toml:LINE: …` when not (and when
    [defaults] executor = "workers" has no PostgreSQL state, $CRAWLSCHED_STATE counting).

    Example:

    \b
      crawlsched -f /etc/crawlsched/jobs.toml validate
    """
    from crawlsched import timing

    from crawlsched.state.open import check_executor

    path = env().jobs_file
    jobfile = _load()
    check_executor(jobfile.defaults.executor, env().state_choice())  # workers need PostgreSQL ($CRAWLSCHED_STATE counts)
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
    from crawlsched.importer import import_file

    store = env().store()
    # The database is created only once the whole seed file has been validated (refused input leaves nothing).
    result = import_file(file, store, lambda: env().state(create=True), _now(), default_url=url or None)
    jobs = result.jobs
    message = result.message(file)
    if as_json:
        _emit({"success": True, "message": message, "job_ids": [j.id for j in jobs], "written": list(result.written)})
    else:
        _say(message)
        for j in jobs:
            _say(f"  {j.id}  {j.name}")
