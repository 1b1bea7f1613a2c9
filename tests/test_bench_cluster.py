"""bench/cluster.py: the queue-systems harness computes lateness, rates and tables the same way
for every system (Celery now, crawlsched's cluster next)."""
from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def cluster(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import cluster as mod

    return mod


def test_burst_lateness_counts_each_burst_entry_once_and_ignores_other_entries(cluster):
    at = 1_800_000_000
    ns = lambda s: int((at + s) * 1e9)  # noqa: E731
    res = cluster.BurstResult(starts=[(0, ns(0.010)), (1, ns(0.030)), (1, ns(0.500)), (7, ns(0.001))])
    row = cluster.burst_row("sys", 2, 3, at, res)
    assert (row.n, row.started, row.duplicates) == (3, 2, 1)  # entry 2 never started; 7 is no burst entry
    assert row.p50_ms == pytest.approx(20.0, abs=0.01)
    assert row.max_ms == pytest.approx(30.0, abs=0.01)  # the first start of entry 1 counts


def test_throughput_is_distinct_tasks_over_first_start_to_last_end(cluster):
    recs = [cluster.Record(0, 1_000_000_000, 1_100_000_000), cluster.Record(1, 1_500_000_000, 3_000_000_000),
            cluster.Record(1, 2_000_000_000, 2_100_000_000)]
    row = cluster.throughput_row("sys", 1, "noop", 3, recs)
    assert (row.started, row.duplicates) == (2, 1)
    assert row.window_s == pytest.approx(2.0)
    assert row.per_s == pytest.approx(1.0)


class _InstantSystem:
    """Starts every burst entry 5 ms after the instant and runs tasks at once, for real over HTTP."""
    name = "instant"
    versions: dict = {}

    def burst_lead(self, jobs, workers):
        return 0.0

    def burst(self, workers, jobs, burst, at, workdir):
        return sys.modules["cluster"].BurstResult([(i, int((at + 0.005) * 1e9)) for i in range(burst)])

    def throughput(self, workers, kind, n, url, workdir):
        out = []
        for i in range(n):
            t = time.time_ns()
            if kind == "http":
                urllib.request.urlopen(f"{url}/{i}", timeout=5).read()
            out.append(sys.modules["cluster"].Record(i, t, time.time_ns()))
        return out


def test_measure_gives_each_worker_count_the_same_three_rows(cluster, tmp_path):
    rows = cluster.measure(_InstantSystem(), tmp_path, workers=(1, 2), jobs=50, burst=10, noop_tasks=5,
                           http_tasks_per_worker=2, http_delay=0.01, log=lambda m: None)
    assert [(r.measure, r.workers) for r in rows] == [("noop", 1), ("http", 1), ("burst", 1),
                                                       ("noop", 2), ("http", 2), ("burst", 2)]
    http = [r for r in rows if r.measure == "http"]
    assert [r.requests for r in http] == [2, 4]  # the target counted every request
    assert all(r.p50_ms == pytest.approx(5.0, abs=0.01) for r in rows if r.measure == "burst")
    title, cols, table = cluster.table(cluster.rows_json(rows), "t")
    assert cols == ["system", "figure", "1 worker", "2 workers"]
    assert ["instant", "burst lateness p99 (ms)", "5.00", "5.00"] in table
    assert not any("NOT STARTED" in r[1] for r in table)
