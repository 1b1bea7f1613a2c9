"""One attempt from its spec to its outcome (``crawlsched.runner``): recorded, logged, its retry saved.

Real SQLite file, real commands; the other process that holds a job is this test's own
claim, made under another owner kind.
"""

from __future__ import annotations

import logging
import os

import pytest

from crawlsched import procs
from crawlsched.executor import AttemptSpec, OutcomeKind
from crawlsched.model import RunStatus
from crawlsched.foreground import run_foreground
from crawlsched.runner import AttemptRunner
from crawlsched.state import CLAIM_DAEMON, CLAIM_RUN, Owner, State
from test_executor import command_job, jobs_of, statuses

LOG = logging.getLogger("crawlsched.test")


@pytest.fixture
def runner(tmp_path):
    state = State(tmp_path / "crawlsched.db").open()
    yield AttemptRunner(state, tmp_path, LOG, claim=CLAIM_DAEMON)
    state.close()


def test_a_spec_runs_its_command_and_comes_back_as_a_ran_outcome(tmp_path, runner):
    job = jobs_of(tmp_path, command_job("a", "true"))["a"]
    got = runner.run(AttemptSpec.of(job, 1000.0, 1, "schedule"), started_at=999.5)
    assert (got.kind, got.status, got.final, got.label) == (OutcomeKind.RAN, RunStatus.SUCCESS, True, "success")
    from helpers.history import runs

    assert [r["started_at"] for r in runs(tmp_path)] == [999.5]  # the worker's start, taken before I/O


def test_a_job_whose_chain_another_process_holds_is_recorded_skipped_as_a_busy_outcome(tmp_path, runner):
    job = jobs_of(tmp_path, command_job("a", "true"))["a"]
    # A live `crawlsched run` of it (this very process, as another owner kind) holds its chain.
    runner.state.claim_chain("a", Owner(CLAIM_RUN, os.getpid(), procs.identity(os.getpid())), 1000.0)
    got = runner.run(AttemptSpec.of(job, 1000.0, 1, "schedule"))
    assert (got.kind, got.status) == (OutcomeKind.BUSY, RunStatus.SKIPPED)
    assert statuses(runner) == [("a", 0, "skipped")]


def test_a_failure_inside_crawlsched_is_a_crashed_outcome_not_an_exception(tmp_path, runner, monkeypatch, caplog):
    job = jobs_of(tmp_path, command_job("a", "true"))["a"]

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(runner.state, "start_attempt", broken)
    with caplog.at_level("ERROR", logger="crawlsched.test"):
        got = runner.run(AttemptSpec.of(job, 1000.0, 1, "schedule"))
    assert (got.kind, got.status, got.message) == (OutcomeKind.CRASHED, None, "internal error: RuntimeError")
    assert any("failed inside crawlsched" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_run_in_the_foreground_reports_its_outcome_by_its_label(tmp_path):
    job = jobs_of(tmp_path, command_job("f", "false", "max_retries = 1\nretry_delay = 1"))["f"]
    state = State(tmp_path / "crawlsched.db").open()
    lines: list[str] = []
    try:
        got = run_foreground(job, state, tmp_path, LOG, progress=lines.append, wait=lambda _s: False)
    finally:
        state.close()
    assert got.status is RunStatus.FAILED and got.attempt == 2
    assert lines == [f"failed after 2 attempts: {got.message}"]


def test_a_start_refused_because_this_daemon_no_longer_leads_is_logged_as_such(tmp_path, runner, caplog):
    job = jobs_of(tmp_path, command_job("a", "true"))["a"]
    runner.state.leader_epoch = 7  # the fires of a leader whose lease is gone (no leader row says 7)
    with caplog.at_level("WARNING", logger="crawlsched.test"):
        got = runner.run(AttemptSpec.of(job, 1000.0, 1, "schedule"))
    assert got.kind is OutcomeKind.DUPLICATE and statuses(runner) == []
    said = [r.getMessage() for r in caplog.records]
    assert any("refused: this daemon no longer leads" in m for m in said), said
    assert not any("exists already" in m for m in said), said


def test_an_attempt_given_back_before_its_instant_runs_nothing_and_its_retry_is_due_at_once(tmp_path, runner):
    marker = tmp_path / "ran"
    job = jobs_of(tmp_path, command_job("a", f"touch {marker}", "max_retries = 2"))["a"]
    spec = AttemptSpec.of(job, 1000.0, 1, "schedule")
    run_id = runner.state.start_attempt("a", 1000.0, 1, job.max_attempts, trigger="schedule", started_at=1000.0,
                                        owner=runner.owner, claim=True)
    got = runner.give_back(spec, run_id.key, "interrupted: its worker stopped before its instant")
    assert (got.kind, got.status) == (OutcomeKind.RAN, RunStatus.INTERRUPTED) and not marker.exists()
    assert statuses(runner) == [("a", 1, "interrupted")]
    [retry] = runner.state.retries()
    assert (retry.job_id, retry.next_attempt, retry.scheduled_for) == ("a", 2, 1000.0)
