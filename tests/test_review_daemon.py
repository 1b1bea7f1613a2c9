"""Review fixes of the daemon loop: each test failed before its fix.

Fake clock and inline (or hand-driven) executors, as in test_daemon_loop.py: no sleeping.
"""

from __future__ import annotations

import inspect
import sqlite3
import threading
import time
from concurrent.futures import Future
from datetime import datetime
from types import SimpleNamespace

import pytest

import crawlsched.daemon as daemon_mod
from crawlsched import watch
from crawlsched.daemon import Daemon
from crawlsched.state import State
from tests.test_daemon_loop import UTC, FakeClock, make_daemon, rows, run_until, write_jobs


@pytest.fixture
def home(tmp_path):
    return tmp_path


class HandExecutor:
    """Queues attempts; the test runs them (``run``) and completes their futures (``resolve``) when it wants."""

    def __init__(self, running: bool = False) -> None:
        self.queued: list[tuple[Future, object, tuple]] = []
        self.running = running
        self.shutdowns: list[dict] = []

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        if self.running:
            future.set_running_or_notify_cancel()
        self.queued.append((future, fn, args))
        return future

    def run(self) -> None:
        for future, fn, args in self.queued:
            future.result_value = fn(*args)  # type: ignore[attr-defined]

    def resolve(self) -> None:
        for future, _fn, _args in self.queued:
            if not future.done():
                future.set_result(getattr(future, "result_value", None))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shutdowns.append({"wait": wait, "cancel_futures": cancel_futures})
        if cancel_futures:
            for future, _fn, _args in self.queued:
                future.cancel()  # only the ones not begun


def hand_daemon(home, clock, executor, grace=None) -> Daemon:
    d = make_daemon(home, clock)
    d._executor = executor
    d.grace = grace
    return d


def messages(home) -> list[str]:
    con = sqlite3.connect(home / "crawlsched.db")
    try:
        return [r[0] or "" for r in con.execute("SELECT message FROM runs ORDER BY id")]
    finally:
        con.close()


# --- A: a saved retry never swallows the next regular run --------------------------------------

def test_a_saved_retry_overtaken_by_the_next_fire_is_dropped_and_the_fire_is_caught_up(home):
    write_jobs(home, '[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "false"\nstart_date = 2025-01-01\n'
                     'max_retries = 2\nretry_delay = 300\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 6, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed")]
    assert len(State(home / "crawlsched.db").retries()) == 1  # due 09:10
    d.shutdown()
    clock.advance((datetime(2025, 11, 9, 10, 6, tzinfo=UTC) - datetime(2025, 11, 8, 9, 6, tzinfo=UTC)).total_seconds())
    d2 = make_daemon(home, clock)
    d2.start()
    for _ in range(5):
        d2.turn()
        d2.collect()
    got = rows(home)
    day1 = datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()
    day2 = datetime(2025, 11, 9, 9, 5, tzinfo=UTC).timestamp()
    assert [(r[2], r[3]) for r in got if r[1] == day1] == [(1, "failed")]  # no attempt 2, 25 h late
    assert [(r[2], r[4]) for r in got if r[1] == day2] == [(1, "catch_up")]  # today's run is not swallowed
    assert "(next run is due)" in messages(home)[0]


# --- B: one failing step does not kill the loop ------------------------------------------------

def test_a_database_error_in_a_step_is_logged_and_the_loop_goes_on(home, monkeypatch, caplog):
    write_jobs(home, '[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()

    def broken(now):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(d.state, "take_requests", broken)
    d.requests_pending = True
    with caplog.at_level("ERROR", logger="crawlsched.test"):
        wait = d.turn()
    assert 0 < wait <= 1.0  # tried again soon, not in a tight loop
    assert any("run-now requests" in r.getMessage() and r.exc_info for r in caplog.records)
    monkeypatch.undo()
    run_until(d, clock, datetime(2025, 11, 8, 9, 6, tzinfo=UTC))
    assert [r[3] for r in rows(home)] == ["success"]


def test_a_failing_fire_is_popped_replanned_and_does_not_spin(home, monkeypatch):
    write_jobs(home, '[[jobs]]\nid = "a"\nname = "a"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n\n'
                     '[[jobs]]\nid = "b"\nname = "b"\nat = "09:05"\ncommand = "true"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    clock.advance(1)
    real = d.fire

    def fire(job, *args, **kwargs):
        if job.id == "a":
            raise sqlite3.OperationalError("database is locked")
        return real(job, *args, **kwargs)

    monkeypatch.setattr(d, "fire", fire)
    d.turn()
    d.collect()
    assert d.turn() > 1  # nothing left due: no tight loop
    assert [r[0] for r in rows(home)] == ["b"]  # the other job of the turn still ran
    assert d.planned["a"] == datetime(2025, 11, 9, 9, 5, tzinfo=UTC).timestamp()  # and "a" has its next fire
    assert "a" not in d.chains


# --- C: signal handlers take no lock ------------------------------------------------------------

def test_a_signal_landing_while_the_wait_holds_its_lock_does_not_deadlock(home):
    write_jobs(home, "")
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    done = threading.Event()

    def main_thread_in_wait():
        lock = getattr(d.wake, "_cond", None)  # threading.Event's lock, held inside wait()/clear()
        if lock is not None:
            with lock:
                d._on_usr1(10, None)  # a Python signal handler runs in the thread that holds it
        else:
            d._on_usr1(10, None)
        done.set()

    t = threading.Thread(target=main_thread_in_wait, daemon=True)
    t.start()
    t.join(2)
    assert done.is_set(), "the signal handler deadlocked"
    assert d.requests_pending
    assert d.wake.wait(0)  # the loop wakes
    d.wake.clear()
    assert not d.wake.wait(0)


# --- D: shutdown cancels queued attempts first; one deadline; bounded cancel wait -----------------

def test_shutdown_cancels_queued_attempts_before_the_grace_period(home):
    write_jobs(home, "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nat = "09:05"\ncommand = "true"\n\n' for i in range(3)))
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    ex = HandExecutor()
    d = hand_daemon(home, clock, ex, grace=5)
    d.start()
    clock.advance(1)
    d.turn()
    assert len(ex.queued) == 3
    t0 = time.monotonic()
    d.shutdown()
    assert time.monotonic() - t0 < 1.0  # not the 5 s grace: nothing had begun
    assert ex.shutdowns[0]["cancel_futures"] is True
    assert rows(home) == []  # none started; handled_until makes the next start catch them up
    assert State(home / "crawlsched.db").daemon()["handled_until"] <= datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()


def test_shutdown_waits_one_shared_deadline_and_a_bounded_cancel_wait(home, monkeypatch):
    monkeypatch.setattr(daemon_mod, "CANCEL_WAIT", 0.3)
    write_jobs(home, "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nat = "09:05"\ncommand = "true"\n\n' for i in range(3)))
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    ex = HandExecutor(running=True)  # begun, and they never end
    d = hand_daemon(home, clock, ex, grace=0.3)
    d.start()
    clock.advance(1)
    d.turn()
    t0 = time.monotonic()
    d.shutdown()
    took = time.monotonic() - t0
    assert took < 1.5  # grace 0.3 once + cancel wait 0.3 in all, not per chain
    assert all(c.cancel.is_set() for c in d.chains.values())


# --- E: no stale retry rows -----------------------------------------------------------------------

FAILING = ('[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "false"\nstart_date = 2025-01-01\n'
           'max_retries = 2\nretry_delay = 60\n')


def failing_job_waiting_for_its_retry(home) -> tuple[Daemon, FakeClock]:
    """Job ``f`` failed its 09:05 attempt 1 and waits for attempt 2 (09:06); the clock is at 09:05:30."""
    write_jobs(home, FAILING)
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 5, 30, tzinfo=UTC))
    return d, clock


KEEP = '[[jobs]]\nid = "k"\nname = "k"\nat = "10:00"\ncommand = "true"\nstart_date = 2025-01-01\n'


def test_a_job_removed_while_its_attempt_runs_leaves_no_retry_row(home):
    write_jobs(home, FAILING + "\n" + KEEP)
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    ex = HandExecutor()
    d = hand_daemon(home, clock, ex)
    d.start()
    clock.advance(1)
    d.turn()
    ex.run()  # the attempt fails and saves its retry, still wanted
    assert len(State(home / "crawlsched.db").retries()) == 1
    write_jobs(home, KEEP)
    d.reload(force=True)  # removed while its future is not done yet
    ex.resolve()
    d.collect()
    assert "f" not in d.chains
    assert State(home / "crawlsched.db").retries() == []


def test_a_retry_skipped_because_the_job_runs_elsewhere_clears_its_row(home, monkeypatch):
    d, clock = failing_job_waiting_for_its_retry(home)
    assert len(State(home / "crawlsched.db").retries()) == 1
    monkeypatch.setattr(d.state, "running_elsewhere", lambda job_id, pid: SimpleNamespace(owner_pid=4242))
    run_until(d, clock, datetime(2025, 11, 8, 9, 7, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed"), (0, "skipped")]
    assert State(home / "crawlsched.db").retries() == []


def test_a_new_chain_clears_a_leftover_retry_row_of_its_job(home, monkeypatch):
    write_jobs(home, FAILING.replace('"false"', '"true"'))
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    sched = datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()

    def crashes(job, scheduled_for, attempt, **kw):  # saved its retry, then failed inside crawlsched
        with d.state.write() as c:
            c.execute("INSERT INTO retries(job_id, scheduled_for, next_attempt, max_attempts, due_at, trigger)"
                      " VALUES (?, ?, ?, ?, ?, 'schedule')", (job.id, scheduled_for, attempt + 1, job.max_attempts, scheduled_for + 60))
        raise RuntimeError("bug")

    monkeypatch.setattr(d.runner, "attempt", crashes)
    run_until(d, clock, datetime(2025, 11, 8, 9, 5, 30, tzinfo=UTC))
    assert "f" not in d.chains
    assert [r.scheduled_for for r in State(home / "crawlsched.db").retries()] == [sched]
    monkeypatch.undo()
    d.fire(d.jobs["f"], clock.time(), "manual")  # attempt 1 of a new chain, which succeeds
    d.collect()
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "success")]
    assert State(home / "crawlsched.db").retries() == []  # not `retrying` forever


# --- F: a missing job file keeps the last good jobs ---------------------------------------------

def test_a_missing_job_file_keeps_the_jobs_and_their_retries_until_it_is_back(home):
    d, clock = failing_job_waiting_for_its_retry(home)
    assert d.chains["f"].retry_due is not None
    text = (home / "jobs.toml").read_text()
    (home / "jobs.toml").unlink()
    assert d.reload(force=True) is False
    clock.advance(1)
    d.reload()
    clock.advance(1)
    d.reload()  # the poll path, after STABLE_FOR
    assert set(d.jobs) == {"f"} and "f" in d.chains
    assert d.config_error == "jobs.toml: the file is missing"
    row = State(home / "crawlsched.db").daemon()
    assert row["config_ok"] == 0 and row["config_error"] == "jobs.toml: the file is missing"
    assert len(State(home / "crawlsched.db").retries()) == 1
    (home / "jobs.toml").write_text(text)
    clock.advance(1)
    d.reload()
    clock.advance(1)
    assert d.reload() is True
    assert d.config_error is None and State(home / "crawlsched.db").daemon()["config_ok"] == 1
    assert "f" in d.chains  # the same job: its retry goes on


# --- G: an interval job fires once at its first instant -----------------------------------------

def test_an_interval_job_started_exactly_on_its_anchor_fires_once_there(home):
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "15m"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    anchor = d.anchors["e"]
    clock.advance(anchor - clock.time())
    d.turn()
    d.collect()
    assert d.planned["e"] == anchor + 900  # not the anchor a second time
    assert d.fired == 1
    write_jobs(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "15m"\ncommand = "true"\nmax_retries = 1\n')
    d.reload(force=True)  # the changed job is re-planned at the same instant
    assert d.planned["e"] == anchor + 900
    d.turn()
    d.collect()
    assert d.fired == 1
    run_until(d, clock, datetime(2025, 11, 8, 9, 10, tzinfo=UTC))
    assert [r[1] for r in rows(home)] == [anchor]


# --- H: lowering max_retries cancels retries beyond it ------------------------------------------

def test_lowering_max_retries_cancels_a_queued_retry_beyond_it(home):
    d, clock = failing_job_waiting_for_its_retry(home)
    assert d.chains["f"].attempt == 2
    write_jobs(home, FAILING.replace("max_retries = 2", "max_retries = 0"))
    d.reload(force=True)
    assert "f" not in d.chains
    assert State(home / "crawlsched.db").retries() == []
    run_until(d, clock, datetime(2025, 11, 8, 9, 30, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed")]


def test_lowering_max_retries_keeps_a_retry_still_within_it(home):
    d, clock = failing_job_waiting_for_its_retry(home)
    write_jobs(home, FAILING.replace("max_retries = 2", "max_retries = 1"))
    d.reload(force=True)
    run_until(d, clock, datetime(2025, 11, 8, 9, 30, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed"), (2, "failed")]


# --- I: network file systems are polled ---------------------------------------------------------

@pytest.mark.parametrize("magic", [0x6969, 0xFF534D42, 0x65735546])
def test_no_inotify_watch_on_a_network_file_system(tmp_path, monkeypatch, magic):
    monkeypatch.setattr(watch, "fs_type", lambda libc, folder: magic)
    assert watch.start(tmp_path / "jobs.toml", lambda: None) is None


def test_a_local_folder_is_watched_with_inotify(tmp_path):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    assert watch.network_fs(libc, bytes(tmp_path)) is None
    w = watch.start(tmp_path / "jobs.toml", lambda: None)
    assert w is not None
    w.close()


# --- J: the daemon does not import the web -------------------------------------------------------

def test_the_daemon_module_does_not_depend_on_the_web():
    from crawlsched.cli import daemon as cli_daemon

    assert "crawlsched.web" not in inspect.getsource(daemon_mod)
    assert not hasattr(daemon_mod, "run_daemon")
    assert callable(cli_daemon.run_daemon)


# --- the loop's wait: precise to the timer slack, not to select's 0.1 % -------------------------

@pytest.mark.parametrize("timeout", [0.001, 0.03, 0.05, 0.051, 0.3, 1.7, 10.0, 29.99, 60.0])
@pytest.mark.parametrize("late_fraction", [0.001, 0.005])  # Linux select: 0.1 % late, 0.5 % when niced
def test_a_long_wait_ends_with_a_short_select(timeout, late_fraction):
    """Model select as waking late by its worst case; the wait must end in a few selects, the
    last one short enough for the 50 µs slack, and no select may run past the deadline."""
    remaining, steps = timeout, []
    while remaining > 0:
        step = daemon_mod.wait_step(remaining)
        steps.append(step)
        assert 0 < step <= remaining
        late = max(step * late_fraction, 50e-6)
        if step < remaining:  # a cut step must not overshoot, even at its latest wake
            assert step + late < remaining
        remaining -= step + late
    assert steps[-1] <= daemon_mod.PRECISE_WAIT
    assert len(steps) <= 4


def test_the_waker_wakes_at_once_when_set_and_never_before_its_timeout():
    waker = daemon_mod.Waker()
    threading.Timer(0.05, waker.set).start()
    t = time.monotonic()
    assert waker.wait(30)  # set by the timer thread: far before the 30 s
    assert time.monotonic() - t < 25
    waker.clear()
    t = time.monotonic()
    assert not waker.wait(0.12)  # cut into several selects, still not a moment early
    assert time.monotonic() - t >= 0.12


def test_only_a_wait_for_a_fire_is_cut_into_precise_selects(home):
    write_jobs(home, '[[jobs]]\nid = "soon"\nname = "soon"\nat = "09:05"\ncommand = "true"\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 50, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    assert d.turn() == pytest.approx(10.0)
    assert d.wake_for_fire, "the next wake is the 09:05 fire"
    d.recheck_at = clock.monotonic() + 3  # a duty (the job file's re-check) comes first
    assert d.turn() == pytest.approx(3.0)
    assert not d.wake_for_fire
    d.recheck_at = None
    clock.advance(10)
    d.turn()  # fires 09:05; the next fire is tomorrow
    assert not d.wake_for_fire, "a 60 s re-check of the clock needs no precision"


# --- garbage collection: never in the middle of a burst, never over the long-lived jobs --------------

def test_a_burst_is_handed_out_with_the_collector_paused_and_it_is_back_after(home, monkeypatch):
    import gc

    write_jobs(home, "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nat = "09:05"\ncommand = "true"\n' for i in range(3)))
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    executor = HandExecutor()
    d = hand_daemon(home, clock, executor)
    d.start()
    seen: list[bool] = []
    real_submit = executor.submit

    def submit(fn, /, *args, **kwargs):
        seen.append(gc.isenabled())
        if len(seen) == 2:
            raise RuntimeError("a fire failing inside crawlsched")
        return real_submit(fn, *args, **kwargs)

    monkeypatch.setattr(executor, "submit", submit)
    clock.advance(1)
    assert gc.isenabled()
    assert d.fire_due(clock.time()) == 3
    assert seen == [False, False, False], "no collection while the burst is handed out"
    assert gc.isenabled(), "and the collector is back after it, a failing fire included"


def test_settling_memory_freezes_what_the_daemon_keeps(tmp_path):
    import subprocess
    import sys

    code = ("import gc; from crawlsched.daemon import settle_memory; settle_memory(); "
            "n = gc.get_freeze_count(); settle_memory(); print(n > 1000, gc.get_freeze_count() > 1000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True"]
