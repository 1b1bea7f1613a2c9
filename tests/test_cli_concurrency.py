"""Many shells adding at once (SPEC §7): every job survives, in one valid file, with unique ids."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

CRAWLSCHED = Path(sys.executable).parent / "crawlsched"
N = 24


def test_24_concurrent_adds_all_survive(tmp_home):
    env = {**os.environ, "CRAWLSCHED_JOBS": str(tmp_home.jobs_file), "CRAWLSCHED_HOME": str(tmp_home.path), "TZ": "UTC"}
    # Half the names give the same id ("news", "news-2", …): the lock must serialize the id choice too.
    names = [f"News {'!' * i}" if i % 2 else f"Job {i}" for i in range(N)]
    procs = [
        subprocess.Popen([str(CRAWLSCHED), "add", name, "--every", "1h", "--url", "https://example.com/"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for name in names
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
    printed = sorted(out.strip() for out, _ in outs)

    data = tomllib.loads(tmp_home.jobs_file.read_text())
    ids = sorted(t["id"] for t in data["jobs"])
    assert len(ids) == N and len(set(ids)) == N
    assert ids == printed
    assert sorted(t["name"] for t in data["jobs"]) == sorted(n.strip() for n in names)

    from typer.testing import CliRunner

    from crawlsched.cli import app

    result = CliRunner().invoke(app, ["validate", "--json"])
    assert result.exit_code == 0 and '"job_count": 24' in result.stdout
    # Every id is remembered by the history, so none is ever handed out again.
    from crawlsched.state import State

    state = State(tmp_home.db).open()
    try:
        assert all(state.known_id(i) for i in ids)
    finally:
        state.close()

