"""``crawlsched logs``: what a run left behind (crawlsched.runfiles does the finding)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from crawlsched.cli import JsonOpt, _emit, _load, _say, command, env


@command("logs")
def logs(
    job: Annotated[str, typer.Argument(metavar="JOB", help="Job id or exact name; the id of a removed job reads its files.", show_default=False)],
    run: Annotated[Optional[str], typer.Option("--run", metavar="NAME", help="The run's name, as `history` and the folders show it (20261201T020500Z) [default: the newest].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the output of a job's newest run, or of the run named.

    A command job: the log of each attempt. A URL job: the bodies it saved,
    with path, size and content type. Exit 1 for no such job or run.

    Example:

    \b
      crawlsched logs daily-morning-crawl --run 20261201T020500Z
    """
    from crawlsched import history, runfiles

    state = env().state()
    target = history.resolve(_load(), state, job)
    out = runfiles.run_output(env().home, state, target.job_id, run)
    if as_json:
        _emit(out.as_dict())
        return
    told = f"{out.status}, {out.attempts} attempt{'s' if out.attempts != 1 else ''}" if out.status else "not in the history"
    _say(f"run {out.run} of {out.job_id} ({told})")
    for f in out.bodies:
        _say(f"{f.path}  {f.size} bytes" + (f"  {f.content_type}" if f.content_type else ""))
    for f in out.logs:
        text, cut = runfiles.read_text(f.path)
        _say(f"--- attempt {f.attempt}: {f.path} ({f.size} bytes)")
        if text:
            typer.echo(text, nl=not text.endswith("\n"))
        if cut:
            _say(f"--- cut at {runfiles.TEXT_LIMIT} bytes; the whole log is {f.path}")
    if not out.bodies and not out.logs:
        _say("nothing saved by this run")
