"""Each command's one-line summary, for ``crawlsched --help`` without importing the commands.

The root help lists every command beside the first paragraph of its docstring. Importing the
six command modules (and Typer turning each command's options into Click's) to print those 21
lines was most of ``crawlsched --help``'s time; this table holds them instead, and the root help
registers a bare stand-in per command (crawlsched.cli.main). A test renders the help both ways
and requires them equal: a changed docstring fails it until the table follows.
"""

from __future__ import annotations

from typing import Any

SUMMARIES = {
    "add": "Add a job to the job file and print its id.",
    "edit": "Change some fields of one job; the rest of the file stays as it was.",
    "list": "Show every job as a table (or JSON).",
    "show": "Show one job's settings and its recent runs.",
    "rm": "Delete a job; its history stays.",
    "pause": "Stop firing a job until `resume`.",
    "resume": "Fire a paused job again.",
    "retry-config": "Show or set the retry defaults.",
    "defaults": "Show or set the default crawl, zone and more.",
    "validate": "Check the job file.",
    "prune": "Remove finished jobs; their history stays.",
    "history": "List runs, newest first, with success rates.",
    "logs": "Show the output of a job's newest run, or of the run named.",
    "status": "Is the daemon up? Since when, what is next, config ok?",
    "stop": "Stop the running daemon gracefully.",
    "run-now": "Ask the running daemon to fire a job now.",
    "run": "Run a job now in this process, with its retries, and show progress.",
    "daemon": "Run the scheduler in the foreground until SIGTERM or Ctrl-C.",
    "worker": "Run queued attempts from the PostgreSQL state until SIGTERM or Ctrl-C.",
    "demo": "A first run with nothing to set up: three jobs, a local target, the real daemon, a live table.",
    "import": "Move the seed's scheduler_jobs.json into the job file, keeping ids.",
}


def register_stand_ins(app: Any, order: tuple[str, ...]) -> None:
    """One command per name with its summary and nothing else: enough for the root help, an
    unknown command's error and ``--version``. ``main`` registers them only when no command is
    named, so none is ever run; if one were, it fails loudly rather than doing nothing."""
    for name in order:
        app.command(name, short_help=SUMMARIES[name], hidden=False)(_stand_in(name))


def _stand_in(name: str) -> Any:
    def stand_in() -> None:
        raise RuntimeError(f"crawlsched: the stand-in of `{name}` ran instead of the command (a bug)")

    stand_in.__doc__ = SUMMARIES[name]
    return stand_in
