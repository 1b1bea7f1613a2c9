"""The crawlsched.crawl package: its import cost, and the names it re-exports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from crawlsched import crawl
from crawlsched.crawl import bodies, command, http, outcome, runs, secrets

REPO = Path(__file__).resolve().parents[1]


def test_importing_the_package_does_not_import_requests():
    code = "import sys, crawlsched.crawl; print('requests' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.strip() == "False", proc.stderr
    assert crawl.fetch_urls is http.fetch_urls


def test_the_package_re_exports_the_names_its_callers_import():
    assert crawl.Outcome is outcome.Outcome and crawl.run_command is command.run_command
    assert (crawl.body_name, crawl.bodies_complete, crawl.url_output, crawl.remove_partial_bodies) == (
        bodies.body_name, bodies.bodies_complete, bodies.url_output, bodies.remove_partial_bodies)
    assert (crawl.run_stamp, crawl.run_key, crawl.prune_runs, crawl.STAMP_RE) == (
        runs.run_stamp, runs.run_key, runs.prune_runs, runs.STAMP_RE)
    assert (crawl.expand_vars, crawl.VAR_RE, crawl.MissingVariable) == (
        secrets.expand_vars, secrets.VAR_RE, secrets.MissingVariable)
