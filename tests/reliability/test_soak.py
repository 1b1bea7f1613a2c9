"""The chaos soak harness itself (bench/soak.py), in its quick mode: it runs, it checks, it cleans up.

The long soak (≥ 10 minutes, docs/RELIABILITY.md) is run by hand; this keeps
the harness working: a short run with one SIGKILL and one SIGTERM of the real
daemon, the checker's figures and violation lists in ``soak-result.json``, no
duplicated attempt, and no process of the run left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"

FIGURES = (
    "minutes", "jobs", "kills", "terms", "attempts", "expected_fires", "missed_fires", "duplicates", "lost_fires",
    "lost_fires_in_grace", "orphans", "overlapping_commands", "chains_incomplete", "requests_per_attempt",
    "requests_per_url_of_an_attempt", "max_requests_per_url_per_attempt", "requests_outside_attempts",
    "commands_without_row", "off_schedule_rows", "fires_recorded_twice", "missed_count_mismatch",
    "daemon_bad_exits", "rows_by_status",
)  # fmt: skip


def _our_processes(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_quick_soak_reports_every_figure_and_duplicates_no_attempt(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "0.3", "--seed", "3", "--jobs", "16", "--min-wait", "2",
         "--max-wait", "4", "--grace", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=80, env=dict(os.environ),
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 2 would be the harness failing
    result = json.loads((out / "soak-result.json").read_text())
    figures = result["figures"]
    assert set(FIGURES) <= set(figures)
    assert figures["kills"] >= 1 and figures["terms"] >= 1  # both kinds of signal, even in a short run
    assert figures["attempts"] > 0 and figures["expected_fires"] > 0
    assert figures["duplicates"] == 0
    assert figures["orphans"] == 0
    assert figures["max_requests_per_url_per_attempt"] <= 1
    assert set(result["violation_counts"]) <= set(result["violations"])
    for kind, listed in result["violations"].items():
        assert listed and all(isinstance(v, dict) for v in listed), kind
    assert result["ok"] == (not result["violation_counts"])
    assert "lost fires" in proc.stdout and "duplicated attempts" in proc.stdout  # the summary table
    events = json.loads((out / "soak-events.json").read_text())
    assert _our_processes(events["marker"]) == []  # nothing it started is left running


def _write_run(folder: Path, t0: float, fires: list[float], running: float | None,
               requests: list[dict], signals: list[dict]) -> None:
    """A soak folder by hand: one `every = "2s"` URL job, the given attempt rows, a request log."""
    from crawlsched.state import State

    home = folder / "home"
    home.mkdir(parents=True)
    (home / "jobs.toml").write_text(
        '[[jobs]]\nid = "tick"\nname = "tick"\nevery = "2s"\nstart_date = 2020-01-01\ntimezone = "UTC"\n'
        'url = "http://127.0.0.1:9/job/tick/0"\nmax_retries = 0\n'
    )
    state = State(home / "crawlsched.db").open()
    state.daemon_started(1, "host", "test", t0 - 1)
    state.mark_seen("tick", t0 - 0.5, anchor=t0)
    for fire in fires:
        run_id = state.start_attempt("tick", fire, 1, 1, trigger="schedule", started_at=fire + 0.01, pid=1)
        if fire != running:
            state.finish_attempt(run_id, status="success", finished_at=fire + 0.5, message="HTTP 200")
    state.heartbeat(t0 - 1, handled_until=t0 + 10)
    state.close()
    with open(folder / "target-requests.jsonl", "w") as f:
        for req in requests:
            f.write(json.dumps(req) + "\n")
    events = {"seed": 0, "marker": "none", "started": t0 - 1, "signals": signals, "cli_ops": [], "churned_jobs": [],
              "final_stop": {"kind": "term", "pid": 1, "sent": t0 + 10, "exited": t0 + 11, "rc": 0}, "leftover_processes": []}
    (folder / "soak-events.json").write_text(json.dumps(events))


def test_the_checker_names_a_lost_fire_an_orphan_row_and_a_twice_fetched_url(tmp_path: Path) -> None:
    sys.path.insert(0, str(SOAK.parent))
    import soak_check

    t0 = 1_800_000_000.0
    signals = [{"kind": "term", "pid": 1, "sent": t0 + 3.5, "exited": t0 + 4.5, "rc": 0}]
    requests = [{"t": t0 + 0.1, "kind": "url", "job": "tick", "path": "/job/tick/0"},
                {"t": t0 + 2.1, "kind": "url", "job": "tick", "path": "/job/tick/0"},
                {"t": t0 + 2.2, "kind": "url", "job": "tick", "path": "/job/tick/0"},  # twice in one attempt
                {"t": t0 + 5.0, "kind": "url", "job": "tick", "path": "/job/tick/0"}]  # in no attempt
    _write_run(tmp_path, t0, [t0, t0 + 2, t0 + 6, t0 + 8], running=t0 + 6, requests=requests, signals=signals)
    result = soak_check.check(tmp_path, margin=2.0)
    assert not result["ok"]
    lost = result["violations"]["lost_fires"]
    assert [v["fire"] for v in lost] == ["2027-01-15T08:00:04.000+00:00"]  # t0 + 4; t0 + 8 is the last one checked
    assert "SIGTERM grace" in lost[0]["when"]
    assert result["figures"]["lost_fires_in_grace"] == 1
    assert [v["run_id"] for v in result["violations"]["orphan_rows"]] == [3]
    assert result["violations"]["duplicate_requests"] == [{"run_id": 2, "path": "/job/tick/0", "requests": 2}]
    assert len(result["violations"]["requests_outside_attempts"]) == 1
    assert result["figures"]["expected_fires"] == 5
    assert result["figures"]["duplicates"] == 1
