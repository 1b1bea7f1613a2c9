"""``GET /metrics`` (SPEC §8): the contract's names, parsed by prometheus_client's own parser,
and a scrape that reads O(jobs) rows, never the history, and never waits for the loop's lock.

The daemon is started but its loop is not run: ``daemon.turn()`` is driven with a fake clock
and an inline executor, as in test_web.py.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crawlsched import __version__
from crawlsched.daemon import Daemon, DaemonView, InlineExecutor
from crawlsched.state import METRIC_COUNTER_COLUMNS, MIGRATIONS, State
from crawlsched.state.migrations import statements as _statements
from crawlsched.store import JobStore
from crawlsched.web import create_app
from helpers.clock import FakeClock

START = datetime(2025, 11, 8, 8, 0, tzinfo=timezone.utc)
JOBS = ('[defaults]\ntimezone = "UTC"\n\n'
        '[[jobs]]\nid = "ok"\nat = "08:01"\ncommand = "true"\nstart_date = 2025-01-01\n\n'
        '[[jobs]]\nid = "bad"\nat = "08:01"\ncommand = "false"\nmax_retries = 0\nstart_date = 2025-01-01\n\n'
        '[[jobs]]\nid = "off"\ncron = "*/15 * * * *"\ncommand = "true"\npaused = true\n')


class Env:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.clock = FakeClock(START)
        self.daemon = Daemon(JobStore(home / "jobs.toml", cache_dir=home / ".cache"), State(home / "crawlsched.db"), home,
                             logging.getLogger("crawlsched.test"), clock=self.clock.time, monotonic=self.clock.monotonic,
                             executor=InlineExecutor(), notify=lambda _m: False, duties=False)
        self.app = create_app(self.daemon.store, self.daemon.state, DaemonView(self.daemon), home=self.daemon.home, log=self.daemon.log, token=None, bind_host="127.0.0.1", bind_port=5000)
        self.exporter = self.app.view_functions["metrics"].__self__.exporter
        self.exporter.REUSE_FOR = 0  # every scrape renders afresh (the reuse has a test of its own)
        self.client = self.app.test_client()

    def turn(self) -> None:
        self.daemon.turn()
        self.daemon.collect()

    def scrape(self) -> dict[str, dict[tuple, float]]:
        """name -> {sorted labels: value}, for every sample, through prometheus_client's parser."""
        response = self.client.get("/metrics", base_url="http://127.0.0.1:5000")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        samples: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(response.get_data(as_text=True)):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return samples


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv("TZ", "UTC")
    (tmp_path / "jobs.toml").write_text(JOBS)
    e = Env(tmp_path)
    e.daemon.start()
    yield e
    e.daemon.shutdown()


def job(name: str) -> tuple:
    return (("job", name),)


def test_exposition_carries_every_name_of_the_contract(env):
    env.clock.advance(61.5)  # both 08:01 jobs fire 1.5 s late (the turn comes then)
    env.turn()
    m = env.scrape()
    now = env.clock.time()
    assert m["crawlsched_up"] == {(): 1}
    assert m["crawlsched_heartbeat_timestamp_seconds"][()] == START.timestamp()
    assert m["crawlsched_build_info"] == {(("version", __version__),): 1}
    attempts = m["crawlsched_attempts_total"]
    assert attempts[(("job", "ok"), ("outcome", "success"))] == 1
    assert attempts[(("job", "ok"), ("outcome", "failed"))] == 0
    assert attempts[(("job", "bad"), ("outcome", "failed"))] == 1
    assert attempts[(("job", "off"), ("outcome", "success"))] == 0  # a series for every current job
    for name in ("crawlsched_fires_skipped_total", "crawlsched_fires_missed_total"):
        assert m[name] == {job("ok"): 0, job("bad"): 0, job("off"): 0}
    assert m["crawlsched_job_last_success_timestamp_seconds"] == {job("ok"): now, job("bad"): 0, job("off"): 0}
    assert m["crawlsched_job_last_failure_timestamp_seconds"] == {job("ok"): 0, job("bad"): now, job("off"): 0}
    next_fire = m["crawlsched_job_next_fire_timestamp_seconds"]
    assert next_fire[job("ok")] == datetime(2025, 11, 9, 8, 1, tzinfo=timezone.utc).timestamp()
    assert next_fire[job("off")] == 0  # paused: nothing planned
    assert m["crawlsched_job_interval_seconds"] == {job("ok"): 86400, job("bad"): 86400, job("off"): 900}
    assert m["crawlsched_retries_pending"] == {(): 0}
    assert m["crawlsched_attempts_running"] == {(): 0}
    assert m["crawlsched_pool_size"] == {(): 8}
    late = m["crawlsched_fire_lateness_seconds_bucket"]
    assert late[(("le", "1.0"),)] == 0 and late[(("le", "2.5"),)] == 2 and late[(("le", "+Inf"),)] == 2
    assert m["crawlsched_fire_lateness_seconds_sum"] == {(): 3.0}
    assert m["crawlsched_attempt_duration_seconds_count"] == {(): 2}
    assert not any("job" in dict(labels) for name in m if name.startswith(("crawlsched_fire_lateness", "crawlsched_attempt_duration"))
                   for labels in m[name])
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
            "process_open_fds"} <= set(m)


def test_up_is_zero_when_the_loop_heartbeat_is_stale(env):
    env.clock.advance(91)  # the heartbeat (every 30 s) is three beats late: the loop is stuck
    m = env.scrape()
    assert m["crawlsched_up"] == {(): 0}
    assert m["crawlsched_heartbeat_timestamp_seconds"][()] == START.timestamp()


def test_skipped_and_missed_fires_are_counted_by_job(env):
    env.daemon.state.record_not_run("ok", 1.0, "skipped", "skipped: overlap", now=2.0)
    env.daemon.state.record_not_run("ok", 3.0, "missed", "missed 5 fires", now=4.0, missed_count=5, first_missed=1.0,
                                    last_missed=3.0)
    m = env.scrape()
    assert m["crawlsched_fires_skipped_total"][job("ok")] == 1
    assert m["crawlsched_fires_missed_total"][job("ok")] == 5  # fires, not rows


def test_pending_retry_and_running_attempt_are_gauges(env):
    state = env.daemon.state
    state.start_attempt("ok", 10.0, 1, 2, trigger="schedule", started_at=11.0, pid=1)
    run_id = state.start_attempt("bad", 10.0, 1, 2, trigger="schedule", started_at=11.0, pid=1)
    from crawlsched.state import Retry
    state.finish_attempt(run_id, status="failed", finished_at=12.0, message="x", retry=Retry("bad", 10.0, 2, 2, 99.0, "schedule"))
    m = env.scrape()
    assert m["crawlsched_retries_pending"] == {(): 1}
    assert m["crawlsched_attempts_running"] == {(): 1}


def test_scrape_reads_no_history_table_scan(env):
    """O(jobs), never O(history): every statement a scrape runs uses an index or a small table."""
    env.clock.advance(61.5)
    env.turn()
    env.scrape()  # opens the collector's own connection
    collector = env.exporter.collector
    statements: list[str] = []
    collector._reader.db.conn.set_trace_callback(statements.append)
    env.scrape()
    collector._reader.db.conn.set_trace_callback(None)
    assert statements
    probe = sqlite3.connect(env.home / "crawlsched.db")
    for sql in statements:
        plan = " / ".join(row[-1] for row in probe.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN runs" not in plan, (sql, plan)
    probe.close()


def test_scrape_never_waits_for_the_lock_the_loop_writes_through(env):
    env.scrape()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with env.daemon.state.db.lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        started = time.monotonic()
        env.scrape()
        assert time.monotonic() - started < 2  # without its own connection it would wait the full 10 s
    finally:
        release.set()
        holder.join()


# --- counters that survive restarts and retention ---------------------------------------


def test_counters_survive_a_restart_and_the_pruning_of_history(tmp_path):
    state = State(tmp_path / "crawlsched.db").open()
    for n in range(3):
        run_id = state.start_attempt("news", 100.0 + n, 1, 1, trigger="schedule", started_at=100.5 + n, pid=1)
        state.finish_attempt(run_id, status="success" if n else "failed", finished_at=101.0 + n, message=None)
    state.close()
    state = State(tmp_path / "crawlsched.db").open()
    before, _ = state.metric_counters()
    assert {k: dict(zip(METRIC_COUNTER_COLUMNS, v)) for k, v in before.items()} == {"news": {
        "success": 2, "failed": 1, "interrupted": 0, "skipped": 0, "missed": 0, "last_success": 103.0, "last_failure": 101.0}}
    assert state.prune_history(0, older_than=1e12)[0] == 2  # the newest attempt stays (list and show read it)
    assert state.metric_counters()[0] == before
    durations = state.metric_histograms()["attempt_duration"]
    assert [(le, n) for le, n, _ in durations] == [(0.5, 3)]


def test_an_attempt_closed_twice_is_counted_once(tmp_path):
    state = State(tmp_path / "crawlsched.db").open()
    run_id = state.start_attempt("news", 100.0, 1, 1, trigger="schedule", started_at=100.5, pid=1)
    state.finish_attempt(run_id, status="success", finished_at=101.0, message=None)
    state.finish_attempt(run_id, status="success", finished_at=102.0, message=None)
    assert dict(zip(METRIC_COUNTER_COLUMNS, state.metric_counters()[0]["news"]))["success"] == 1


def test_counters_changed_since_a_scrape_are_read_alone(tmp_path):
    state = State(tmp_path / "crawlsched.db").open()
    for job_id in ("a", "b", "c"):
        state.record_not_run(job_id, 1.0, "skipped", "overlap", now=2.0)
    everything, seq = state.metric_counters()
    assert set(everything) == {"a", "b", "c"}
    state.record_not_run("b", 3.0, "skipped", "overlap", now=4.0)
    changed, newer = state.metric_counters(seq)
    assert set(changed) == {"b"} and changed["b"][3] == 2 and newer > seq
    assert state.metric_counters(newer) == ({}, newer)


def test_migration_fills_the_counters_from_the_history_there_is(tmp_path):
    path = tmp_path / "crawlsched.db"
    old = sqlite3.connect(path)
    for number, (name, script) in enumerate(MIGRATIONS):
        if name.endswith("_metrics_counters"):
            break
        for statement in _statements(script):
            old.execute(statement)
        old.execute(f"PRAGMA user_version = {number + 1}")
    rows = [("news", 1.0, 1, "success", 1.5, 3.5, None), ("news", 2.0, 1, "failed", 2.0, 2.2, None),
            ("news", 3.0, 0, "missed", None, 9.0, 4), ("news", 4.0, 0, "skipped", None, 9.0, None),
            ("other", 1.0, 1, "interrupted", 1.0, 5.0, None)]
    old.executemany("INSERT INTO runs(job_id, scheduled_for, attempt, max_attempts, status, started_at, finished_at, missed_count)"
                    " VALUES (?, ?, ?, 1, ?, ?, ?, ?)", rows)
    old.commit()
    old.close()
    state = State(path).open()
    probe = sqlite3.connect(path)
    probe.row_factory = sqlite3.Row
    counters = {r["job_id"]: {k: r[k] for k in r.keys() if k != "seq"} for r in probe.execute("SELECT * FROM job_counters")}
    probe.close()
    assert counters["news"] == {"job_id": "news", "success": 1, "failed": 1, "interrupted": 0, "skipped": 1, "missed": 4,
                                "last_success": 3.5, "last_failure": 2.2}
    assert counters["other"]["interrupted"] == 1 and counters["other"]["last_failure"] == 5.0
    hist = state.metric_histograms()
    assert sum(n for _, n, _ in hist["attempt_duration"]) == 3
    assert [(le, n) for le, n, _ in hist["fire_lateness"]] == [(0.005, 2), (0.5, 1)]  # on time twice, 0.5 s late once


def test_a_scraper_that_accepts_gzip_gets_the_same_exposition_compressed(env):
    import gzip

    plain = env.client.get("/metrics", base_url="http://127.0.0.1:5000")
    packed = env.client.get("/metrics", base_url="http://127.0.0.1:5000", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
    assert "Content-Encoding" not in plain.headers
    unpacked = gzip.decompress(packed.get_data()).decode()
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("process_")]  # noqa: E731
    assert strip(unpacked) == strip(plain.get_data(as_text=True))


def test_a_scrape_within_a_second_of_the_last_reuses_its_body(env):
    env.exporter.REUSE_FOR = 1.0
    before = env.scrape()["crawlsched_fires_skipped_total"][job("ok")]
    env.daemon.state.record_not_run("ok", 1.0, "skipped", "skipped: overlap", now=2.0)
    assert env.scrape()["crawlsched_fires_skipped_total"][job("ok")] == before
    env.clock.advance(1.0)
    assert env.scrape()["crawlsched_fires_skipped_total"][job("ok")] == before + 1


def test_a_job_whose_next_fire_moves_gets_its_new_time_at_the_next_scrape(env):
    first = env.scrape()["crawlsched_job_next_fire_timestamp_seconds"][job("ok")]
    env.clock.advance(61.5)
    env.turn()
    second = env.scrape()["crawlsched_job_next_fire_timestamp_seconds"][job("ok")]
    assert second == first + 86400


def test_readme_alert_rules_use_only_names_the_endpoint_serves(env):
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rules = readme.split("groups:\n  - name: crawlsched", 1)[1].split("```", 1)[0]
    used = set(re.findall(r"\bcrawlsched_[a-z_]+", rules))
    assert {"crawlsched_up", "crawlsched_job_last_failure_timestamp_seconds", "crawlsched_job_interval_seconds"} <= used
    assert used <= set(env.scrape())
