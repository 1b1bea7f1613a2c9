"""The crawlsched.crawl package: its import cost, and the names it re-exports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crawlsched import crawl
from crawlsched.crawl import bodies, command, http, outcome, runs, secrets

REPO = Path(__file__).resolve().parents[1]


def test_importing_the_package_does_not_import_requests():
    code = ("import sys, crawlsched.crawl; from crawlsched.crawl import *; import crawlsched.crawl.public_only, "
            "crawlsched.crawl.reasons; print('requests' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.strip() == "False", proc.stderr
    assert crawl.fetch_urls is http.fetch_urls


def test_importing_one_module_of_the_package_does_not_load_the_others():
    code = "import sys, crawlsched.crawl.runs; print(sorted(m for m in sys.modules if m.startswith('crawlsched.crawl')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.strip() == str(["crawlsched.crawl", "crawlsched.crawl.bodies", "crawlsched.crawl.runs"]), proc.stderr


def test_the_package_re_exports_the_names_its_callers_import():
    assert crawl.Outcome is outcome.Outcome and crawl.run_command is command.run_command
    assert (crawl.body_name, crawl.bodies_complete, crawl.url_output, crawl.remove_partial_bodies) == (
        bodies.body_name, bodies.bodies_complete, bodies.url_output, bodies.remove_partial_bodies)
    assert (crawl.run_stamp, crawl.run_key, crawl.prune_runs, crawl.STAMP_RE) == (
        runs.run_stamp, runs.run_key, runs.prune_runs, runs.STAMP_RE)
    assert (crawl.expand_vars, crawl.VAR_RE, crawl.MissingVariable) == (
        secrets.expand_vars, secrets.VAR_RE, secrets.MissingVariable)
    assert all(getattr(crawl, name) is not None for name in crawl.__all__)  # every name resolves
    with pytest.raises(AttributeError, match="no_such_name"):
        crawl.no_such_name  # noqa: B018
