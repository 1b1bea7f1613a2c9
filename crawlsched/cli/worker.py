"""``crawlsched worker``: run the attempts a daemon with ``executor = "workers"`` queues (SPEC §10)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crawlsched.cli import command, env
from crawlsched.errors import Refused

IDLE_TX_MS = 5000  #: the server ends a worker's session left idle inside a transaction this long (ms)


@command("worker")
def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", metavar="N", min=1, max=1000, help="How many attempts this worker runs at once. Jobs due together start on time when the workers have a slot for each; the others start as slots free.")] = 4,
    home: Annotated[Optional[Path], typer.Option("--home", metavar="DIR", help="Folder for this worker's bodies, run logs and log file [default: the root --home, $CRAWLSCHED_HOME, else the job file's folder].", show_default=False)] = None,
) -> None:
    """Run queued attempts from the PostgreSQL state until SIGTERM or Ctrl-C.

    Needs no job file: each queued attempt carries what its crawl needs, and
    ${VAR} templates are expanded from this process's environment. The state
    is $CRAWLSCHED_STATE (or [defaults] state of the job file, when there is
    one). On SIGTERM it takes no new attempts and gives the running ones their
    grace period, then hands them back (interrupted; the next attempt follows).

    Example:

    \b
      export CRAWLSCHED_STATE=postgresql://crawlsched@db.internal/crawlsched
      crawlsched worker --concurrency 8
    """
    import faulthandler
    import os

    from crawlsched.logs import setup_logging
    from crawlsched.state.open import ENV_VAR, _expanded, guard_log, open_choice

    # A worker frozen (SIGSTOP, a VM paused) inside a write transaction would hold the store's write
    # lock for as long as its connection lives: the server ends such a session after a few seconds.
    os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} -c idle_in_transaction_session_timeout={IDLE_TX_MS}".strip()
    choice = env().state_choice()
    if not choice.postgres:
        raise Refused(f"crawlsched worker needs a PostgreSQL state (the queue lives in it): set ${ENV_VAR} or"
                      " [defaults] state to a postgresql:// URL")
    folder = (home or env().home).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    log = setup_logging(folder)
    guard_log(log, choice)
    faulthandler.enable()
    store = open_choice(choice, daemon=True)
    # opened by the worker: a database that cannot be reached yet is waited for (SPEC §10)
    from crawlsched.workers.worker import run_worker

    code = run_worker(store, _expanded(choice, os.environ), folder, log, concurrency=concurrency)
    raise typer.Exit(code)
