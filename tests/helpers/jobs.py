"""The one way a test writes a job file."""

from __future__ import annotations

import os
from pathlib import Path

UTC_DEFAULTS = 'timezone = "UTC"\n'


def write_jobs(home: Path, body: str, defaults: str | None = UTC_DEFAULTS) -> Path:
    """Write ``home/jobs.toml`` at once (a rename, as an editor's save): a ``[defaults]`` table
    holding ``defaults`` (UTC unless told), then ``body`` (the ``[[jobs]]`` tables).

    ``defaults=None`` writes ``body`` as the whole file, for a test that needs its exact bytes.
    """
    home.mkdir(parents=True, exist_ok=True)
    text = body if defaults is None else f"[defaults]\n{defaults}\n{body}"
    path = home / "jobs.toml"
    tmp = home / ".jobs.toml.test-tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
