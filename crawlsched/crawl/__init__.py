"""One attempt at a crawl: fetch URLs or run a command, and say what happened.

This is the only package that talks to crawl targets (SPEC §4). Everything an
attempt returns is an :class:`Outcome`; it does not raise for anything a target
or the disk can do to it, so the daemon's retry loop stays a loop over outcomes.

==================  ===============================================================
``outcome``         :class:`Outcome`, and the wording its messages share
``http``            :func:`fetch_urls`: a URL job's attempt and its limits
``reasons``         why a request failed, in words that never quote the URL
``public_only``     ``http_targets = "public"``: refuse a private peer once connected
``bodies``          bodies on disk: names, the ``.part``-fsync-rename save, completeness
``runs``            what a run's files are called (:func:`run_name`), :func:`prune_runs`
``command``         :func:`run_command`: a command job's attempt, its process group, the gate;
                    :func:`prepare_command`: spawned ahead, held at the gate
``secrets``         ``${VAR}`` expansion, and keeping the values out of every message
==================  ===============================================================

The names other modules use are re-exported here, each loaded from its module on
first use. ``requests`` is imported only inside :mod:`~crawlsched.crawl.http`'s
functions: the CLI imports this package (for :func:`run_stamp`,
:func:`expand_vars`) and should not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Each re-exported name and the module it lives in. Loaded on first use (PEP 562), so that
#: importing one module of the package (the daemon's runner imports ``runs``) does not load
#: the others: ``run_command``'s subprocess machinery, ``fetch_urls``'s.
_EXPORTS = {
    "bodies_complete": "bodies", "body_name": "bodies", "remove_partial_bodies": "bodies", "url_output": "bodies",
    "GATE": "command", "Prepared": "command", "SharedGate": "command", "prepare_command": "command", "run_command": "command",
    "fetch_urls": "http", "parse_retry_after": "http",
    "Outcome": "outcome",
    "STAMP_RE": "runs", "end_run": "runs", "prune_runs": "runs", "run_dir": "runs", "run_key": "runs",
    "run_log": "runs", "run_name": "runs", "run_stamp": "runs",
    "VAR_RE": "secrets", "MissingVariable": "secrets", "expand_vars": "secrets", "redact_url": "secrets",
}  # fmt: skip

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from crawlsched.crawl.bodies import bodies_complete, body_name, remove_partial_bodies, url_output
    from crawlsched.crawl.command import GATE, Prepared, SharedGate, prepare_command, run_command
    from crawlsched.crawl.http import fetch_urls, parse_retry_after
    from crawlsched.crawl.outcome import Outcome
    from crawlsched.crawl.runs import STAMP_RE, end_run, prune_runs, run_dir, run_key, run_log, run_name, run_stamp
    from crawlsched.crawl.secrets import VAR_RE, MissingVariable, expand_vars, redact_url


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value
