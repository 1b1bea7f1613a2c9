"""What follows an attempt's result: the retry rule, and the loop's chains (``crawlsched.chains``).

The rule and ``Chains.follow`` are checked on their own; the rest through a daemon driven
turn by turn with a fake clock and an inline (or hand-driven) executor: no sleeping.
"""

from __future__ import annotations

import logging
from datetime import datetime
from types import SimpleNamespace


from crawlsched.chains import Chains, Next, next_retry
from crawlsched.executor import AttemptOutcome, ChainKey, OutcomeKind
from crawlsched.model import RunStatus
from crawlsched.state import CLAIM_DAEMON, Owner, Retry, State
from crawlsched.store import JobStore
from helpers.clock import FakeClock
from helpers.history import rows
from helpers.jobs import write_jobs
from helpers.loop import make_daemon, run_until
from test_daemon_loop import FAILING, UTC, HandExecutor, failing_job_waiting_for_its_retry, hand_daemon

KEEP = '[[jobs]]\nid = "k"\nname = "k"\nat = "10:00"\ncommand = "true"\nstart_date = 2025-01-01\n'


def job_of(home, body: str):
    write_jobs(home, body)
    return JobStore(home / "jobs.toml", cache_dir=home / ".cache").load().jobs[0]


def crawl(permanent: bool = False, retry_after: float | None = None) -> SimpleNamespace:
    return SimpleNamespace(permanent=permanent, retry_after=retry_after)


# --- the retry rule ------------------------------------------------------------------------------

def test_the_next_attempt_waits_the_backoff_and_a_longer_retry_after_up_to_the_cap(home):
    job = job_of(home, '[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "false"\nmax_retries = 3\n'
                       'retry_delay = 60\nretry_backoff = 2\nretry_max_delay = 600\n')
    now = datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()
    assert next_retry(job, now, 1, crawl(), now) == (now + 60, None)
    assert next_retry(job, now, 2, crawl(), now) == (now + 120, None)
    assert next_retry(job, now, 1, crawl(retry_after=300), now) == (now + 300, None)  # the server asked for more
    assert next_retry(job, now, 1, crawl(retry_after=9999), now) == (now + 600, None)  # up to the cap
    assert next_retry(job, now, 4, crawl(), now) == (None, None)  # the last attempt
    assert next_retry(job, now, 1, crawl(permanent=True), now) == (None, "permanent failure, not retried")


def test_no_retry_is_due_at_or_after_the_next_regular_fire(home):
    job = job_of(home, '[[jobs]]\nid = "e"\nname = "e"\nevery = "5m"\ncommand = "false"\nretry_delay = 300\n')
    now = datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()
    assert next_retry(job, now, 1, crawl(), now, anchor=now) == (None, "next run is due")


# --- Chains.follow: an outcome against the chain it belongs to ----------------------------------------

def chains_in(home) -> Chains:
    return Chains(State(home / "crawlsched.db").open(), home, logging.getLogger("crawlsched.test"), Owner(CLAIM_DAEMON, 1, None))


def outcome(attempt: int = 1, retry_due: float | None = None, kind: OutcomeKind = OutcomeKind.RAN,
            scheduled_for: float = 100.0) -> AttemptOutcome:
    status = None if kind is OutcomeKind.CRASHED else RunStatus.FAILED
    return AttemptOutcome("f", scheduled_for, attempt, kind, status, "x", retry_due=retry_due)


def test_a_saved_retry_re_arms_the_chain_with_its_next_attempt(home):
    chains = chains_in(home)
    chains.begin("f", 100.0, "schedule").handed = True
    decision, chain = chains.follow(outcome(retry_due=160.0), lambda _j, _a: True)
    assert decision is Next.RETRY and (chain.attempt, chain.retry_due, chain.handed) == (2, 160.0, False)
    assert "f" in chains and "f" in chains.saved_retry


def test_a_final_outcome_ends_the_chain_and_its_claim_is_released_later(home):
    chains = chains_in(home)
    chains.begin("f", 100.0, "schedule").handed = True
    assert chains.follow(outcome(), lambda _j, _a: True)[0] is Next.END
    assert "f" not in chains and chains.ended == {"f"}


def test_an_outcome_of_another_run_of_the_job_is_stale(home):
    chains = chains_in(home)
    chains.begin("f", 200.0, "schedule").handed = True
    assert chains.follow(outcome(scheduled_for=100.0), lambda _j, _a: True) == (Next.STALE, None)
    assert chains.follow(outcome(attempt=2, scheduled_for=200.0), lambda _j, _a: True) == (Next.STALE, None)
    assert chains["f"].handed  # still waiting for its own


def test_a_retry_saved_for_a_job_no_longer_wanted_is_void(home):
    chains = chains_in(home)
    chains.begin("f", 100.0, "schedule").handed = True
    assert chains.follow(outcome(retry_due=160.0), lambda _j, _a: False)[0] is Next.VOID
    assert "f" not in chains and "f" not in chains.saved_retry


def test_a_crash_inside_crawlsched_ends_the_chain_and_remembers_a_retry_may_be_saved(home):
    chains = chains_in(home)
    chains.begin("f", 100.0, "schedule").handed = True
    assert chains.follow(outcome(kind=OutcomeKind.CRASHED), lambda _j, _a: True)[0] is Next.END
    assert "f" in chains.saved_retry and "f" not in chains


def test_stopping_keeps_a_saved_retry_for_the_next_start(home):
    chains = chains_in(home)
    chains.begin("f", 100.0, "schedule").handed = True
    assert chains.follow(outcome(retry_due=160.0), lambda _j, _a: True, rearm=False)[0] is Next.KEEP


def test_a_fire_still_waiting_for_a_worker_holds_handled_until_back(home):
    chains = chains_in(home)
    chains.begin("a", 100.0, "schedule").handed = True
    chains.begin("b", 50.0, "schedule").handed = True  # begun: it has its row
    assert chains.handled_until(500.0, [ChainKey("a", 100.0)]) == 100.0
    assert chains.handled_until(500.0, []) == 500.0


# --- no stale retry rows --------------------------------------------------------------------------------

def test_a_job_removed_while_its_attempt_runs_leaves_no_retry_row(home):
    write_jobs(home, FAILING + "\n" + KEEP)
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    ex = HandExecutor()
    d = hand_daemon(home, clock, ex)
    d.start()
    clock.advance(1)
    d.turn()
    ex.run_queued()  # the attempt fails and saves its retry, still wanted
    assert len(State(home / "crawlsched.db").retries()) == 1
    write_jobs(home, KEEP)
    d.reload(force=True)  # removed while its outcome is not collected yet
    ex.resolve()
    d.collect()
    assert "f" not in d.chains
    assert State(home / "crawlsched.db").retries() == []


def test_a_job_removed_while_its_attempt_runs_is_cancelled_so_it_saves_no_retry(home):
    write_jobs(home, FAILING + "\n" + KEEP)
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    ex = HandExecutor()
    d = hand_daemon(home, clock, ex)
    d.start()
    clock.advance(1)
    d.turn()
    fire = datetime(2025, 11, 8, 9, 5, tzinfo=UTC).timestamp()
    write_jobs(home, KEEP)
    d.reload(force=True)  # removed while its attempt is with the executor
    assert ex.cancelled == {ChainKey("f", fire)}
    ex.run_queued()
    assert State(home / "crawlsched.db").retries() == []  # the attempt ran and saved none
    ex.resolve()
    d.collect()
    assert "f" not in d.chains and [(r[0], r[3]) for r in rows(home)] == [("f", "failed")]


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

    def crashes(spec, **kw):  # saved its retry, then failed inside crawlsched
        d.state.save_retry(Retry(spec.job_id, spec.scheduled_for, spec.attempt + 1, spec.max_attempts,
                                 spec.scheduled_for + 60, "schedule"))
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


# --- lowering max_retries cancels retries beyond it -------------------------------------------------------

def test_lowering_max_retries_cancels_a_queued_retry_beyond_it(home):
    d, clock = failing_job_waiting_for_its_retry(home)
    assert d.chains["f"].attempt == 2
    write_jobs(home, FAILING.replace("max_retries = 2", "max_retries = 0"))
    d.reload(force=True)
    assert "f" not in d.chains
    assert State(home / "crawlsched.db").retries() == []
    run_until(d, clock, datetime(2025, 11, 8, 9, 30, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed")]


def test_lowering_max_retries_voids_a_retry_saved_by_an_attempt_that_ran_under_the_old_limit(home):
    write_jobs(home, FAILING)
    clock = FakeClock(datetime(2025, 11, 8, 9, 4, 59, tzinfo=UTC))
    ex = HandExecutor()
    d = hand_daemon(home, clock, ex)
    d.start()
    clock.advance(1)
    d.turn()
    ex.run_queued()  # failed under max_retries = 2: attempt 2 is saved
    write_jobs(home, FAILING.replace("max_retries = 2", "max_retries = 0"))
    d.reload(force=True)
    ex.resolve()
    d.collect()
    assert "f" not in d.chains and State(home / "crawlsched.db").retries() == []


def test_lowering_max_retries_keeps_a_retry_still_within_it(home):
    d, clock = failing_job_waiting_for_its_retry(home)
    write_jobs(home, FAILING.replace("max_retries = 2", "max_retries = 1"))
    d.reload(force=True)
    run_until(d, clock, datetime(2025, 11, 8, 9, 30, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed"), (2, "failed")]
