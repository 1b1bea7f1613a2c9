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
``runs``            what a run's files are called (:func:`run_stamp`), :func:`prune_runs`
``command``         :func:`run_command`: a command job's attempt, its process group, the gate
``secrets``         ``${VAR}`` expansion, and keeping the values out of every message
==================  ===============================================================

The names other modules use are re-exported here. ``requests`` is imported only
inside :mod:`~crawlsched.crawl.http`'s functions: the CLI imports this package
(for :func:`run_stamp`, :func:`expand_vars`) and should not pay for it.
"""

from __future__ import annotations

from crawlsched.crawl.bodies import bodies_complete, body_name, remove_partial_bodies, url_output
from crawlsched.crawl.command import GATE, run_command
from crawlsched.crawl.http import fetch_urls, parse_retry_after
from crawlsched.crawl.outcome import Outcome
from crawlsched.crawl.runs import STAMP_RE, prune_runs, run_key, run_stamp
from crawlsched.crawl.secrets import VAR_RE, MissingVariable, expand_vars, redact_url

__all__ = [
    "GATE", "STAMP_RE", "VAR_RE", "MissingVariable", "Outcome", "bodies_complete", "body_name", "expand_vars",
    "fetch_urls", "parse_retry_after", "prune_runs", "redact_url", "remove_partial_bodies", "run_command",
    "run_key", "run_stamp", "url_output",
]  # fmt: skip
