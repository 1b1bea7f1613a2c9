"""Retention (SPEC §6): history rows past ``keep_history`` and log files past ``keep_logs`` are removed
off the hot path, in small batches, never while a fire is due."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawlsched import logs, retention
from crawlsched.daemon import Daemon, InlineExecutor
from crawlsched.errors import InvalidValue
from crawlsched.model import Defaults, KeepHistory
from crawlsched.validate import build_defaults
from crawlsched.state import State
from crawlsched.store import JobStore
from helpers.clock import FakeClock

DAY = 86400.0
START = datetime(2025, 11, 8, 8, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("value, expected", [
    (365, KeepHistory(days=365)), ("90d", KeepHistory(days=90)), ("30 days", KeepHistory(days=30)),
    ("10000 runs", KeepHistory(runs=10000)), ("1 run", KeepHistory(runs=1)), ("forever", KeepHistory()),
], ids=str)
def test_keep_history_takes_days_runs_or_forever(value, expected):
    assert build_defaults({"keep_history": value}).keep_history == expected


@pytest.mark.parametrize("value", [0, -1, 3654, "5 weeks", "runs", True, 1.5, "0 runs"], ids=str)
def test_keep_history_refuses_what_it_cannot_mean(value):
    with pytest.raises(InvalidValue) as error:
        build_defaults({"keep_history": value})
    assert "defaults.keep_history" in str(error.value)


def test_defaults_keep_a_year_of_history_and_thirty_days_of_logs():
    assert Defaults().keep_history == KeepHistory(days=365) and Defaults().keep_logs == 30
    assert build_defaults({"keep_logs": "7d"}).keep_logs == 7
    with pytest.raises(InvalidValue, match="defaults.keep_logs"):
        build_defaults({"keep_logs": 0})


def fill(state: State, job_id: str, times: list[float]) -> list[int]:
    ids = []
    for t in times:
        run_id = state.start_attempt(job_id, t, 1, 1, trigger="schedule", started_at=t, pid=1)
        state.finish_attempt(run_id, status="success", finished_at=t + 1, message=None)
        ids.append(run_id)
    return ids


def remaining(state: State) -> list[int]:
    return sorted(r.id for r in state.runs(limit=2**62))


def test_rows_older_than_the_cutoff_go_but_a_running_one_and_each_jobs_newest_stay(tmp_path):
    state = State(tmp_path / "crawlsched.db").open()
    old = fill(state, "a", [1.0, 2.0, 3.0])
    running = state.start_attempt("b", 4.0, 1, 1, trigger="schedule", started_at=4.0, pid=1)
    newer = fill(state, "a", [500.0, 600.0])
    lone = fill(state, "c", [5.0])  # c's newest attempt, old as it is: `list` and `show` read it
    assert state.prune_history(0, older_than=100.0) == (3, None)
    assert remaining(state) == [running, *newer, *lone]
    assert old  # deleted


def test_keep_rows_keeps_the_newest_rows_over_all_jobs(tmp_path):
    state = State(tmp_path / "crawlsched.db").open()
    ids = fill(state, "a", [float(t) for t in range(10)]) + fill(state, "b", [20.0, 21.0])
    assert state.prune_history(0, keep_rows=5) == (7, None)
    assert remaining(state) == ids[-5:]


def test_one_prune_call_deletes_one_batch_and_says_where_to_go_on(tmp_path):
    state = State(tmp_path / "crawlsched.db").open()
    ids = fill(state, "a", [float(t) for t in range(25)])
    deleted, after = state.prune_history(0, older_than=1000.0, batch=10)
    assert (deleted, after) == (10, ids[9])
    assert state.prune_history(after, older_than=1000.0, batch=10) == (10, ids[19])
    assert state.prune_history(ids[19], older_than=1000.0, batch=10) == (4, None)  # the newest one stays
    assert remaining(state) == [ids[-1]]


class Env:
    def __init__(self, home: Path, jobs: str) -> None:
        (home / "jobs.toml").write_text(jobs)
        self.clock = FakeClock(START)
        self.daemon = Daemon(JobStore(home / "jobs.toml", cache_dir=home / ".cache"), State(home / "crawlsched.db"), home,
                             logging.getLogger("crawlsched.test"), clock=self.clock.time, monotonic=self.clock.monotonic,
                             executor=InlineExecutor(), notify=lambda _m: False, duties=False)
        self.daemon.start()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    e = Env(tmp_path, '[defaults]\ntimezone = "UTC"\nkeep_history = "30d"\nkeep_logs = 10\n\n'
                      '[[jobs]]\nid = "news"\nat = "08:01"\ncommand = "true"\nstart_date = 2025-01-01\n')
    yield e
    e.daemon.shutdown()


def test_the_duty_prunes_nothing_while_a_fire_is_due_soon(env):
    state = env.daemon.state
    now = env.clock.time()
    ids = fill(state, "old", [now - 40 * DAY, now - 39 * DAY, now - 1])
    env.clock.advance(60 - retention.GUARD + 1)  # 08:01 is due in less than GUARD seconds
    env.daemon.duties.retention()
    assert remaining(state) == ids
    env.clock.advance(retention.GUARD)  # it fired
    env.daemon.turn()
    env.daemon.collect()
    env.daemon.duties.retention()  # the next fire is a day away
    assert ids[0] not in remaining(state) and ids[1] not in remaining(state) and ids[2] in remaining(state)


def test_the_duty_works_a_backlog_down_in_batches_within_its_budget(env, monkeypatch):
    state = env.daemon.state
    now = env.clock.time()
    fill(state, "old", [now - 100 * DAY + i for i in range(30)])
    monkeypatch.setattr(retention, "BATCH", 10)
    calls = []
    real = state.prune_history
    monkeypatch.setattr(state, "prune_history", lambda *a, **k: calls.append(k["batch"]) or real(*a, **k))
    env.daemon.duties.retention()
    assert calls and set(calls) == {10}
    assert len(remaining(state)) == 1  # "old"'s newest attempt


def test_the_duty_removes_log_files_older_than_keep_logs(env):
    folder = env.daemon.home / "logs"
    folder.mkdir(exist_ok=True)
    (folder / "crawler_20251001.log").write_text("old\n")
    (folder / "crawler_20251030.log").write_text("recent\n")
    env.daemon.duties.retention()
    assert not (folder / "crawler_20251001.log").exists()
    assert (folder / "crawler_20251030.log").exists() and logs.log_file(env.daemon.home, env.clock.time()).name.startswith("crawler_")
