"""bench/crawlsched_cluster.py: crawlsched's side of the queue-systems bench writes job files the
daemon accepts and turns the state's rows into the same records and rows as Celery's."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def cc(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import crawlsched_cluster as mod

    return mod


DSN = "postgresql://crawlsched@127.0.0.1:5999/bench_1"


def _validate(tmp_path, text, monkeypatch):
    """The job file through crawlsched's own reader: what the daemon would apply (without the
    state and executor lines where this tree does not know them yet)."""
    from crawlsched.jobfile import parse_text  # noqa: PLC0415
    from crawlsched.model import DEFAULT_KEYS  # noqa: PLC0415

    if "state" not in DEFAULT_KEYS:
        text = "\n".join(line for line in text.splitlines() if not line.startswith(("state = ", "executor = ")))
    return parse_text(text)


def test_throughput_jobs_fire_once_each_on_a_postgresql_state_with_workers(cc, tmp_path, monkeypatch):
    text = cc.throughput_jobs(DSN, "http", 3, "http://127.0.0.1:1")
    jf = _validate(tmp_path, text, monkeypatch)
    assert [j.id for j in jf.jobs] == ["t00000", "t00001", "t00002"]
    assert jf.defaults.max_retries == 0
    assert [j.urls for j in jf.jobs][2] == ("http://127.0.0.1:1/http-2",)
    assert 'state = "' + DSN + '"' in text and 'executor = "workers"' in text
    noop = _validate(tmp_path, cc.throughput_jobs(DSN, "noop", 2, "x"), monkeypatch)
    assert [j.command for j in noop.jobs] == ["true", "true"]


def test_the_burst_file_gets_the_two_lines_of_the_cluster_in_its_defaults(cc, tmp_path, monkeypatch):
    import crawlsched_bench as cb

    ids = cb.write_jobs_toml(tmp_path / "burst.toml", 50, 5, 1_800_000_000 - 1_800_000_000 % 60)
    text = cc.cluster_defaults((tmp_path / "burst.toml").read_text(), DSN)
    assert text.splitlines()[:3] == ["[defaults]", f'state = "{DSN}"', 'executor = "workers"']
    jf = _validate(tmp_path, text, monkeypatch)
    assert len(jf.jobs) == 50 and ids == [f"j{i:05d}" for i in range(1, 6)]
    assert cc.cluster_defaults('[[jobs]]\nid = "a"\n', DSN).startswith(f'[defaults]\nstate = "{DSN}"\n')


def test_failover_jobs_are_a_valid_file(cc, tmp_path, monkeypatch):
    jf = _validate(tmp_path, cc.failover_jobs(DSN), monkeypatch)
    long = next(j for j in jf.jobs if j.id == "long")
    assert long.command == "sleep 120" and long.max_retries == 1 and len(jf.jobs) == 11


def test_rows_become_the_records_and_starts_of_the_harness(cc):
    at = 1_800_000_000
    recs = cc.records_of([("t00003", 10.0, 10.5), ("t00004", 11.0, None), ("j00002", 1.0, 2.0)])
    assert [(r.id, r.start_ns, r.end_ns) for r in recs] == [(3, 10_000_000_000, 10_500_000_000), (1, 1_000_000_000, 2_000_000_000)]
    starts = cc.starts_of([("j00001", at, at + 0.02), ("j00002", at + 3600, at + 3600.1), ("j00003", at, None)], at)
    assert starts == [(0, int((at + 0.02) * 1e9))]
    row = sys.modules["cluster"].burst_row("crawlsched", 1, 3, at, sys.modules["cluster"].BurstResult(starts))
    assert (row.started, row.duplicates) == (1, 0) and row.p50_ms == pytest.approx(20.0, abs=0.01)


def test_a_burst_start_is_the_commands_own_clock_read_from_its_message(cc):
    at = 1_800_000_000
    rows = [("j00001", at, f"{at + 0.031}\n"), ("j00002", at, "exit code 1"), ("j00003", at + 60, f"{at + 60.1}"),
            ("j00004", at, None)]
    assert cc.command_starts(rows, at) == [(0, int((at + 0.031) * 1e9))]
    assert cc.BURST_COMMAND == 'command = "date +%s.%N"'


def test_a_bursts_tail_is_traced_to_the_worker_process_that_let_its_commands_go(cc):
    at = 1_800_000_000
    rows = [("j00001", at, at + 0.0002, f"{at + 0.030}", 11), ("j00002", at, at + 0.0002, f"{at + 0.090}", 11),
            ("j00003", at, at + 0.080, f"{at + 0.120}", 12), ("j00004", at, at + 0.080, "exit code 1", 12)]
    by = cc.by_worker(rows, at)
    assert by["11"] == {"n": 2, "release_ms": [pytest.approx(0.2, abs=0.01)] * 3,
                        "command_ms": [pytest.approx(30.0, abs=0.5), pytest.approx(90.0, abs=0.5),
                                       pytest.approx(90.0, abs=0.5)]}
    assert by["12"]["n"] == 2 and by["12"]["release_ms"][0] == pytest.approx(80.0, abs=0.01)
    assert by["12"]["command_ms"] == [pytest.approx(120.0, abs=0.5)] * 3


def test_by_worker_gives_each_process_its_cpu_per_attempt_when_measured(cc):
    at = 1_800_000_000
    rows = [("j00001", at, at + 0.001, f"{at + 0.03}", 11), ("j00002", at, at + 0.002, f"{at + 0.04}", 11),
            ("j00003", at, at + 0.001, f"{at + 0.05}", 12)]
    by = cc.by_worker(rows, at, {11: 18.0})
    assert (by["11"]["cpu_ms"], by["11"]["cpu_ms_per_attempt"]) == (18.0, 9.0)
    assert "cpu_ms" not in by["12"]  # not measured: nothing made up


def test_run_knows_the_cluster_name_and_puts_it_in_the_queue_systems_table(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import run

    assert "cluster" in run.parse_only("cluster", False)
    assert "cluster" not in run.parse_only("all", False)  # it needs PostgreSQL: only when named
    rows = run.queue_rows({"celery": [{"ok": True, "rows": [{"system": "celery", "measure": "noop", "workers": 1}]}],
                           "cluster": [{"ok": True, "rows": [{"system": "crawlsched", "measure": "noop", "workers": 1}]}]})
    assert [r["system"] for r in rows] == ["crawlsched", "celery"]
