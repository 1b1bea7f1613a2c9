"""The scheduler without its loop (``crawlsched.scheduler``): no lock, no signals, no waits.

What is due is handed out when ``fire_due`` is called, what comes back is taken by ``collect``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from crawlsched.executor import InlineExecutor
from crawlsched.scheduler import Scheduler
from crawlsched.state import State
from crawlsched.store import JobStore
from helpers.clock import FakeClock
from helpers.history import rows
from helpers.jobs import write_jobs
from test_daemon_loop import UTC


def test_a_scheduler_without_a_loop_fires_what_is_due_when_asked_and_retries_after_collect(tmp_path):
    write_jobs(tmp_path, '[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "false"\nmax_retries = 1\n'
                         'retry_delay = 60\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    store = JobStore(tmp_path / "jobs.toml", cache_dir=tmp_path / ".cache")
    woken: list[bool] = []
    scheduler = Scheduler(store, State(tmp_path / "crawlsched.db").open(), tmp_path, logging.getLogger("crawlsched.test"),
                          clock=clock.time, monotonic=clock.monotonic, executor=InlineExecutor(), environ=None,
                          wake=lambda: woken.append(True))
    scheduler._apply(store.load(), clock.time())
    assert scheduler.fire_due(clock.time()) == 0  # not before its time
    clock.advance(1)
    assert scheduler.fire_due(clock.time()) == 1 and woken == [True]  # the outcome is ready: the loop is woken
    scheduler.collect()
    assert scheduler.chains["f"].retry_due == clock.time() + 60
    clock.advance(60)
    assert scheduler.fire_due(clock.time()) == 1
    scheduler.collect()
    assert "f" not in scheduler.chains  # the last attempt failed: the chain ended
    assert [(r[2], r[3]) for r in rows(tmp_path)] == [(1, "failed"), (2, "failed")]


def test_a_lone_fire_is_gated_like_a_burst_so_its_next_fire_is_planned_after_it_started(tmp_path, monkeypatch):
    """The loop waits (``end_burst``) for the worker to take its start time before it plans the
    job's next fire: otherwise that worker waits for the GIL while the loop plans."""
    write_jobs(tmp_path, '[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    store = JobStore(tmp_path / "jobs.toml", cache_dir=tmp_path / ".cache")
    calls: list[str] = []

    class Recording(InlineExecutor):
        def submit(self, spec):
            calls.append("submit")
            super().submit(spec)

        def begin_burst(self):
            calls.append("begin_burst")

        def end_burst(self):
            calls.append("end_burst")

    scheduler = Scheduler(store, State(tmp_path / "crawlsched.db").open(), tmp_path, logging.getLogger("crawlsched.test"),
                          clock=clock.time, monotonic=clock.monotonic, executor=Recording(), environ=None,
                          wake=lambda: None)
    scheduler._apply(store.load(), clock.time())
    plan = scheduler.planner.plan
    monkeypatch.setattr(scheduler.planner, "plan", lambda job, now: (calls.append("plan"), plan(job, now))[1])
    clock.advance(1)
    assert scheduler.fire_due(clock.time()) == 1
    assert calls == ["begin_burst", "submit", "end_burst", "plan"]
