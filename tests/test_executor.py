"""The executor contract: a spec (plain data) in, exactly one outcome (plain data) out through
``results()``, ``cancel``, ``shutdown(grace)``, the burst gate and resizing.

Real parts: the real ``AttemptRunner`` over a real SQLite file, real commands (``true``,
``false``, ``sleep``), the daemon's real ``LocalExecutor`` threads. Only the attempt that
ignores a cancel is a stand-in (no real crawl does).
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from pathlib import Path

import pytest

from crawlsched.executor import AttemptOutcome, AttemptSpec, ChainKey, InlineExecutor, OutcomeKind
from crawlsched.local_executor import LocalExecutor
from crawlsched.model import RunStatus
from crawlsched.runner import AttemptRunner
from crawlsched.state import CLAIM_DAEMON, State
from crawlsched.store import JobStore
from helpers.process import wait_for

LOG = logging.getLogger("crawlsched.test")


def jobs_of(home: Path, body: str) -> dict:
    (home / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\n\n' + body)
    return {j.id: j for j in JobStore(home / "jobs.toml", cache_dir=home / ".cache").load().jobs}


def command_job(job_id: str, command: str, extra: str = "") -> str:
    return f'[[jobs]]\nid = "{job_id}"\nname = "{job_id}"\nevery = "1h"\ncommand = "{command}"\n{extra}\n'


@pytest.fixture
def runner(tmp_path):
    state = State(tmp_path / "crawlsched.db").open()
    yield AttemptRunner(state, tmp_path, LOG, claim=CLAIM_DAEMON)
    state.close()


class Woken:
    """The loop's side of the wake-up: counts the calls, and can be waited on."""

    def __init__(self) -> None:
        self.calls = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()


def drain(executor, count: int, timeout: float = 20.0) -> list[AttemptOutcome]:
    """Collect ``count`` outcomes as the loop does: results() whenever woken."""
    got: list[AttemptOutcome] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(executor.results())
        time.sleep(0.01)
    return got


def statuses(runner: AttemptRunner) -> list[tuple[str, int, str]]:
    from helpers.history import runs

    return [(r["job_id"], r["attempt"], r["status"]) for r in runs(runner.home)]


def test_a_spec_is_plain_data_that_survives_pickling(tmp_path):
    job = jobs_of(tmp_path, command_job("a", "true", 'headers = { X = "${TOKEN}" }'))["a"]
    spec = AttemptSpec.of(job, 1762592700.0, 2, "schedule", anchor=1762590000.0)
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and again.job.headers == {"X": "${TOKEN}"}  # ${VAR} resolved where it runs
    assert (again.job_id, again.max_attempts, again.key) == ("a", job.max_attempts, ChainKey("a", 1762592700.0))
    outcome = AttemptOutcome("a", 1.0, 1, OutcomeKind.RAN, RunStatus.FAILED, "exit 1", retry_due=61.0)
    assert pickle.loads(pickle.dumps(outcome)) == outcome and not outcome.final


def test_a_spec_in_gives_exactly_one_outcome_out_through_results(tmp_path, runner):
    job = jobs_of(tmp_path, command_job("a", "true"))["a"]
    woken = Woken()
    executor = LocalExecutor(2)
    executor.start(runner, woken)
    try:
        executor.submit(AttemptSpec.of(job, 1000.0, 1, "schedule"))
        assert woken.event.wait(20), "the loop is woken when the outcome is ready"
        got = drain(executor, 1)
        assert [(o.job_id, o.attempt, o.kind, o.status) for o in got] == [("a", 1, OutcomeKind.RAN, RunStatus.SUCCESS)]
        assert executor.results() == [] and not executor.has_results()  # drained once
        assert statuses(runner) == [("a", 1, "success")]
    finally:
        executor.shutdown(1, 1)


def test_a_failed_attempt_comes_back_with_the_retry_it_saved(tmp_path, runner):
    job = jobs_of(tmp_path, command_job("f", "false", "max_retries = 2\nretry_delay = 60"))["f"]
    executor = InlineExecutor()
    executor.start(runner, lambda: None)
    executor.submit(AttemptSpec.of(job, 1000.0, 1, "schedule"))
    [outcome] = executor.results()
    assert (outcome.kind, outcome.status, outcome.final) == (OutcomeKind.RAN, RunStatus.FAILED, False)
    assert [(r.next_attempt, r.due_at - outcome.retry_due) for r in runner.state.retries()] == [(2, 0.0)]


def test_an_attempt_that_exists_already_is_a_duplicate_outcome_not_a_status(tmp_path, runner):
    job = jobs_of(tmp_path, command_job("a", "true"))["a"]
    executor = InlineExecutor()
    executor.start(runner, lambda: None)
    spec = AttemptSpec.of(job, 1000.0, 1, "schedule")
    executor.submit(spec)
    executor.submit(spec)
    first, second = executor.results()
    assert first.kind is OutcomeKind.RAN and first.status is RunStatus.SUCCESS
    assert (second.kind, second.status, second.label) == (OutcomeKind.DUPLICATE, None, "duplicate")
    assert statuses(runner) == [("a", 1, "success")]  # not run twice


def test_a_cancelled_chain_runs_its_attempt_but_saves_no_retry(tmp_path, runner):
    jobs = jobs_of(tmp_path, command_job("kept", "sleep 0.3; false", "max_retries = 2")
                   + command_job("gone", "sleep 0.3; false", "max_retries = 2"))
    executor = LocalExecutor(2)
    executor.start(runner, lambda: None)
    try:
        kept, gone = AttemptSpec.of(jobs["kept"], 1000.0, 1, "schedule"), AttemptSpec.of(jobs["gone"], 1000.0, 1, "schedule")
        executor.submit(kept)
        executor.submit(gone)
        executor.cancel(gone.key)  # from the loop: the job was removed while its attempt runs
        got = {o.job_id: o for o in drain(executor, 2)}
        assert got["kept"].retry_due is not None and got["gone"].retry_due is None
        assert got["gone"].status is RunStatus.FAILED  # it ran, and was recorded
        assert [r.job_id for r in runner.state.retries()] == ["kept"]
    finally:
        executor.shutdown(1, 1)


def test_shutdown_drops_attempts_not_begun_and_names_them_unstarted(tmp_path, runner):
    jobs = jobs_of(tmp_path, command_job("busy", "sleep 0.3") + command_job("q1", "true") + command_job("q2", "true"))
    executor = LocalExecutor(1)
    executor.start(runner, lambda: None)
    executor.submit(AttemptSpec.of(jobs["busy"], 1000.0, 1, "schedule"))
    deadline = time.monotonic() + 10
    while not statuses(runner) and time.monotonic() < deadline:  # the one worker has begun it
        time.sleep(0.01)
    executor.submit(AttemptSpec.of(jobs["q1"], 1000.0, 1, "schedule"))
    executor.submit(AttemptSpec.of(jobs["q2"], 1000.0, 1, "schedule"))
    t0 = time.monotonic()
    executor.shutdown(5, 1)
    assert time.monotonic() - t0 < 3  # the running one ended; no grace was waited for the queued ones
    assert sorted(executor.unstarted()) == [ChainKey("q1", 1000.0), ChainKey("q2", 1000.0)]
    assert statuses(runner) == [("busy", 1, "success")]  # neither queued attempt started


@pytest.mark.slow
def test_shutdown_gives_running_attempts_one_grace_then_interrupts_them(tmp_path, runner):
    jobs = jobs_of(tmp_path, "".join(command_job(f"s{i}", "sleep 30", "max_retries = 1") for i in range(3)))
    executor = LocalExecutor(3)
    executor.start(runner, lambda: None)
    for job in jobs.values():
        executor.submit(AttemptSpec.of(job, 1000.0, 1, "schedule"))
    deadline = time.monotonic() + 10
    while len(statuses(runner)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    executor.shutdown(0.3, 5)
    took = time.monotonic() - t0
    assert 0.3 <= took < 3  # one shared grace of 0.3 s, then the process groups were stopped
    assert sorted(statuses(runner)) == [(f"s{i}", 1, "interrupted") for i in range(3)]
    got = executor.results()
    assert {o.status for o in got} == {RunStatus.INTERRUPTED} and len(got) == 3
    assert all(o.retry_due is not None for o in got)  # a stop resumes the chain at the next start


def test_shutdown_hands_each_ended_attempts_outcome_over_while_it_waits_for_the_others(tmp_path, runner):
    """A stopping daemon gives the lead away first; a chain whose attempt ends during the grace must
    be recorded, and its claim released, then (``on_wait``), not when the slowest attempt ends."""
    jobs = jobs_of(tmp_path, command_job("quick", "sleep 0.2") + command_job("slow", "sleep 30"))
    executor = LocalExecutor(2)
    executor.start(runner, lambda: None)
    for job in jobs.values():
        executor.submit(AttemptSpec.of(job, 1000.0, 1, "schedule"))
    deadline = time.monotonic() + 10
    while len(statuses(runner)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def on_wait() -> None:
        seen.extend((time.monotonic() - t0, o.job_id) for o in executor.results())

    executor.shutdown(3.0, 5, on_wait=on_wait)
    seen.extend((time.monotonic() - t0, o.job_id) for o in executor.results())
    assert [job_id for _, job_id in seen] == ["quick", "slow"]
    assert seen[0][0] < 1.5  # taken while "slow" still ran its grace
    assert seen[1][0] >= 3.0  # interrupted once the grace was over


class StuckRunner:
    """An attempt that ignores the cancel (no real crawl does): it ends only when released."""

    def __init__(self) -> None:
        self.clock = time.time
        self.log = LOG
        self.release = threading.Event()

    def run(self, spec, *, started_at=None, cancel=None, still_wanted=None):
        self.release.wait(30)
        return AttemptOutcome(spec.job_id, spec.scheduled_for, spec.attempt, OutcomeKind.RAN, RunStatus.SUCCESS, "ok")


def test_shutdown_waits_one_grace_and_a_bounded_cancel_wait_in_all(tmp_path):
    job = jobs_of(tmp_path, command_job("a", "true"))["a"]
    stuck = StuckRunner()
    executor = LocalExecutor(3)
    executor.start(stuck, lambda: None)
    for t in (1.0, 2.0, 3.0):
        executor.submit(AttemptSpec.of(job, t, 1, "schedule"))
    time.sleep(0.05)
    t0 = time.monotonic()
    try:
        executor.shutdown(0.3, 0.3)
        assert time.monotonic() - t0 < 1.5  # grace 0.3 once + cancel wait 0.3 in all, not per attempt
    finally:
        stuck.release.set()


def test_the_attempts_of_a_burst_wait_until_the_burst_is_handed_out(tmp_path, runner):
    jobs = jobs_of(tmp_path, "".join(command_job(f"b{i}", "true") for i in range(3)))
    executor = LocalExecutor(3)
    executor.start(runner, lambda: None)
    try:
        executor.begin_burst()
        for job in jobs.values():
            executor.submit(AttemptSpec.of(job, 1000.0, 1, "schedule"))
        time.sleep(0.1)  # the loop is still handing out (the gate holds a worker at most 0.2 s)
        assert statuses(runner) == []  # each worker took its start time and waits at the gate
        handed_out = time.time()
        executor.end_burst()
        drain(executor, 3)
        from helpers.history import runs

        started = [r["started_at"] for r in runs(runner.home)]
        assert len(started) == 3 and all(t < handed_out for t in started)  # lateness: taken before the gate
    finally:
        executor.shutdown(1, 1)


def test_without_a_burst_an_attempt_starts_at_once(tmp_path, runner):
    job = jobs_of(tmp_path, command_job("a", "true"))["a"]
    executor = LocalExecutor(1)
    executor.start(runner, lambda: None)
    try:
        executor.submit(AttemptSpec.of(job, 1000.0, 1, "schedule"))
        assert len(drain(executor, 1, timeout=0.19)) == 1  # sooner than a gate's 0.2 s timeout
    finally:
        executor.shutdown(1, 1)


def test_resize_starts_or_retires_workers_and_capacity_follows(tmp_path, runner):
    mine: set[threading.Thread] = set()

    def workers(expected: int) -> int:
        """This executor's live worker threads, once they settled at ``expected`` (or 5 s passed)."""
        deadline = time.monotonic() + 5
        while True:
            mine.update(t for t in threading.enumerate() if t.name.startswith("crawl_") and t not in before)
            alive = sum(1 for t in mine if t.is_alive())
            if alive == expected or time.monotonic() > deadline:
                return alive
            time.sleep(0.01)

    before = set(threading.enumerate())
    executor = LocalExecutor(2)
    assert sum(1 for t in threading.enumerate() if t not in before and t.name.startswith("crawl_")) == 2  # warm at once
    executor.start(runner, lambda: None)
    assert executor.capacity == 2 and workers(2) == 2
    executor.resize(5)
    assert executor.capacity == 5 and workers(5) == 5
    executor.resize(1)
    assert executor.capacity == 1 and workers(1) == 1
    executor.shutdown(1, 1)
    assert workers(0) == 0


def test_the_inline_executor_runs_at_once_and_hands_outcomes_over_once(tmp_path, runner):
    job = jobs_of(tmp_path, command_job("a", "true"))["a"]
    woken = Woken()
    executor = InlineExecutor()
    executor.start(runner, woken)
    executor.submit(AttemptSpec.of(job, 1000.0, 1, "schedule"))
    assert woken.calls == 1 and executor.has_results()
    assert [o.status for o in executor.results()] == [RunStatus.SUCCESS]
    assert executor.results() == [] and list(executor.unstarted()) == []


def test_idle_workers_never_keep_the_process_from_exiting():
    import subprocess
    import sys

    code = "from crawlsched.local_executor import LocalExecutor; LocalExecutor(2); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "ok" and out.returncode == 0


def test_a_spec_and_an_outcome_cross_a_json_queue_unchanged(tmp_path):
    import json

    from crawlsched.executor import outcome_from_json, outcome_to_json, spec_from_json, spec_to_json

    job = jobs_of(tmp_path, '[[jobs]]\nid = "u"\nname = "u"\nat = "09:05"\nurl = ["https://a.example/x", "https://b.example/"]\n'
                            'headers = { Authorization = "Bearer ${TOKEN}" }\nstart_date = 2025-01-01\n'
                            'end_date = 2026-12-31\ncatch_up = "all"\nverify = false\nmax_bytes = 1024\n')["u"]
    spec = AttemptSpec.of(job, 1762592700.0, 3, "manual", anchor=None)
    again = spec_from_json(json.loads(json.dumps(spec_to_json(spec))))
    assert again == spec and again.job.explicit == job.explicit and again.job.line == job.line
    assert "${TOKEN}" in json.dumps(spec_to_json(spec))  # the reference travels, never its value
    for outcome in (AttemptOutcome("u", 1.0, 1, OutcomeKind.RAN, RunStatus.FAILED, "HTTP 503", retry_due=61.5),
                    AttemptOutcome("u", 1.0, 1, OutcomeKind.DUPLICATE, None, "attempt exists already")):
        assert outcome_from_json(json.loads(json.dumps(outcome_to_json(outcome)))) == outcome


# --- handed out before its instant (LocalExecutor.lead) -------------------------------------------


def _row(runner: AttemptRunner, job_id: str) -> dict:
    from helpers.history import runs

    [row] = [r for r in runs(runner.home) if r["job_id"] == job_id]
    return row


def test_a_command_handed_out_ahead_has_its_row_first_and_begins_at_its_instant(tmp_path, runner):
    stamp = tmp_path / "began"
    job = jobs_of(tmp_path, command_job("a", f"sh -c 'date +%s.%N > {stamp}'"))["a"]
    executor = LocalExecutor(2)
    executor.start(runner, lambda: None)
    try:
        instant = time.time() + 0.6
        executor.submit(AttemptSpec.of(job, instant, 1, "schedule"))
        wait_for(lambda: statuses(runner) == [("a", 1, "running")] and _row(runner, "a")["child_pgid"], 0.5,
                 "its row written ahead, its held command's group in it")
        assert not stamp.exists(), "held at its gate: nothing of the command ran before its instant"
        [outcome] = drain(executor, 1)
        assert outcome.status is RunStatus.SUCCESS
        began = float(stamp.read_text())
        row = _row(runner, "a")
        assert instant <= row["started_at"] <= began, "the row says when it was let go: at its instant or after"
    finally:
        executor.shutdown(1, 1)


def test_commands_handed_out_ahead_together_are_let_go_at_their_instant_never_before(tmp_path, runner):
    jobs = jobs_of(tmp_path, "".join(command_job(f"j{n}", f"sh -c 'date +%s.%N > {tmp_path}/s{n}'") for n in range(20)))
    executor = LocalExecutor(20)
    executor.start(runner, lambda: None)
    try:
        instant = time.time() + 0.8
        executor.begin_burst()
        for job in jobs.values():
            executor.submit(AttemptSpec.of(job, instant, 1, "schedule"))
        executor.end_burst()
        got = drain(executor, 20)
        assert sorted(o.status for o in got) == [RunStatus.SUCCESS] * 20
        for n in range(20):
            row = _row(runner, f"j{n}")
            assert instant <= row["started_at"] <= float((tmp_path / f"s{n}").read_text())
    finally:
        executor.shutdown(1, 1)


def test_a_command_held_for_its_instant_never_runs_when_the_stop_cancels_it(tmp_path, runner):
    marker = tmp_path / "ran"
    jobs = jobs_of(tmp_path, command_job("busy", "sleep 30") + command_job("held", f"touch {marker}", "max_retries = 1"))
    executor = LocalExecutor(2)
    executor.start(runner, lambda: None)
    try:
        executor.submit(AttemptSpec.of(jobs["busy"], time.time(), 1, "schedule"))  # keeps the grace waiting
        executor.submit(AttemptSpec.of(jobs["held"], time.time() + 60, 1, "schedule"))
        wait_for(lambda: _row_status(runner, "held") == "running", 10, "the held attempt's row")
        executor.shutdown(0.2, 5)  # the grace ends long before the held one's instant
        assert not marker.exists(), "its gate exited: the command never ran"
        row = _row(runner, "held")
        assert (row["status"], row["message"]) == ("interrupted", "interrupted: the daemon stopped before its instant")
        assert [r.next_attempt for r in runner.state.retries() if r.job_id == "held"] == [2]  # nothing is lost
    finally:
        executor.shutdown(0, 0)


def _row_status(runner: AttemptRunner, job_id: str) -> str | None:
    from helpers.history import runs

    found = [r["status"] for r in runs(runner.home) if r["job_id"] == job_id]
    return found[0] if found else None


@pytest.fixture
def target():
    from helpers.servers import Target

    t = Target()
    yield t
    t.close()


def test_a_url_attempt_handed_out_ahead_requests_nothing_before_its_instant(tmp_path, runner, target):
    job = jobs_of(tmp_path, f'[[jobs]]\nid = "u"\nname = "u"\nevery = "1h"\nurl = "{target.url("/ok")}"\n')["u"]
    executor = LocalExecutor(1)
    executor.start(runner, lambda: None)
    try:
        instant = time.time() + 0.5
        executor.submit(AttemptSpec.of(job, instant, 1, "schedule"))
        [outcome] = drain(executor, 1)
        assert outcome.status is RunStatus.SUCCESS
        [arrived] = [at for at, path in target.hits if path == "/ok"]
        assert arrived >= instant and _row(runner, "u")["started_at"] >= instant
    finally:
        executor.shutdown(1, 1)
