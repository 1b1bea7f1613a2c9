"""The cluster fault test's checks (tests/helpers/cluster_checks.py) on made-up rows: each one finds
what it is there to find, and nothing in a clean history."""

from __future__ import annotations

from helpers.cluster_checks import count_requests, due_times, duplicate_attempts, incomplete_chains, lost_fires

T0 = 1_900_000_000.0


def row(job="a", at=T0, attempt=1, status="success", *, max_attempts=2, started=None, finished=None,
        trigger="schedule", first=None, last=None, count=None, message=None):
    if started is None and attempt > 0:
        started = at + 0.01
    if finished is None and started is not None and status != "running":
        finished = started + 0.1
    return {"job_id": job, "scheduled_for": at, "attempt": attempt, "max_attempts": max_attempts,
            "trigger": trigger, "status": status, "started_at": started, "finished_at": finished,
            "missed_count": count, "first_missed": first, "last_missed": last, "message": message}


def clean_history():
    """Job a every 1 s from T0 for 6 s: runs, a retried chain, a skipped fire, two missed fires."""
    return [row(at=T0), row(at=T0 + 1, status="failed"), row(at=T0 + 1, attempt=2),
            row(at=T0 + 2, attempt=0, status="skipped"),
            row(at=T0 + 4, attempt=0, status="missed", first=T0 + 3, last=T0 + 4, count=2),
            row(at=T0 + 5, trigger="catch_up"), row(at=T0 + 6, status="interrupted", max_attempts=1)]


def test_a_clean_history_has_no_findings():
    rows = clean_history()
    assert duplicate_attempts(rows) == []
    assert lost_fires(rows, {"a": 1.0}, T0, T0 + 6) == []
    assert incomplete_chains(rows) == []


def test_two_rows_for_one_attempt_are_a_duplicate():
    rows = clean_history() + [row(at=T0 + 1, attempt=2, status="failed")]
    found = duplicate_attempts(rows)
    assert len(found) == 1 and "attempt 2: 2 rows" in found[0]


def test_a_fire_both_run_and_skipped_is_handled_twice():
    rows = clean_history() + [row(at=T0, attempt=0, status="skipped")]
    found = duplicate_attempts(rows)
    assert len(found) == 1 and "handled 2 times" in found[0]


def test_a_due_time_without_a_row_is_a_lost_fire():
    rows = [r for r in clean_history() if r["scheduled_for"] != T0 + 2]  # the skipped row is gone
    found = lost_fires(rows, {"a": 1.0}, T0, T0 + 6)
    assert found == [f"a: 1 due time(s) without a row: {T0 + 2:.3f}"]


def test_a_due_time_outside_a_missed_range_is_lost_and_one_inside_is_not():
    rows = clean_history()
    rows[4] = row(at=T0 + 4, attempt=0, status="missed", first=T0 + 4, last=T0 + 4, count=1)
    assert lost_fires(rows, {"a": 1.0}, T0, T0 + 6) == [f"a: 1 due time(s) without a row: {T0 + 3:.3f}"]


def test_a_job_with_no_row_at_all_has_lost_every_fire():
    assert lost_fires(clean_history(), {"a": 1.0, "b": 2.0}, T0, T0 + 6) == ["b: no row at all"]


def test_a_row_off_the_jobs_grid_is_a_finding():
    rows = clean_history() + [row(at=T0 + 2.5)]
    found = lost_fires(rows, {"a": 1.0}, T0, T0 + 6)
    assert len(found) == 1 and "not due" in found[0] and f"{T0 + 2.5:.3f}" in found[0]


def test_the_window_bounds_which_fires_are_owed():
    rows = [row(at=T0 + 2), row(at=T0 + 3)]
    assert lost_fires(rows, {"a": 1.0}, T0 + 2, T0 + 3, anchors={"a": T0}) == []
    assert lost_fires(rows, {"a": 1.0}, T0 + 1, T0 + 3, anchors={"a": T0}) == [
        f"a: 1 due time(s) without a row: {T0 + 1:.3f}"]
    assert due_times(T0, 1.5, T0 + 1, T0 + 4.5) == [T0 + 1.5, T0 + 3.0, T0 + 4.5]


def test_a_failed_attempt_with_no_next_attempt_and_no_saved_retry_is_an_incomplete_chain():
    rows = [row(status="failed", max_attempts=3)]
    assert incomplete_chains(rows) == [f"a @ {T0:.3f}: attempt 1/3 failed and no attempt 2 (row or saved retry)"]
    assert incomplete_chains(rows, pending=[("a", T0, 2)]) == []  # it continues
    assert incomplete_chains([row(status="failed", max_attempts=1)]) == []  # its last attempt


def test_a_chain_that_ended_early_saying_why_is_complete():
    due = row(status="failed", max_attempts=3, message="HTTP 500 from http://h/x (next run is due)")
    permanent = row(status="failed", max_attempts=3, message="HTTP 404 from http://h/x (permanent failure, not retried)")
    silent = row(status="failed", max_attempts=3, message="HTTP 500 from http://h/x")
    assert incomplete_chains([due]) == [] and incomplete_chains([permanent]) == []
    assert len(incomplete_chains([silent])) == 1


def test_a_gap_a_retry_after_success_and_a_row_left_running_are_incomplete_chains():
    gap = [row(status="failed", max_attempts=3), row(attempt=3, max_attempts=3)]
    after_success = [row(max_attempts=3), row(attempt=2, max_attempts=3)]
    running = [row(status="running")]
    assert "not 1..3" in incomplete_chains(gap)[0]
    assert "is success but attempt 2 followed" in incomplete_chains(after_success)[0]
    assert incomplete_chains(running) == [f"a @ {T0:.3f}: attempt 1/2 left running"]


def test_requests_are_counted_against_the_attempt_running_then():
    rows = [row(at=T0, started=T0, finished=T0 + 1), row(at=T0 + 2, started=T0 + 2, finished=T0 + 3)]
    ok = count_requests(rows, [(T0 + 0.5, "a"), (T0 + 0.6, "a"), (T0 + 2.5, "a")], {"a": 2})
    assert (ok.excess, ok.findings()) == (0, [])
    over = count_requests(rows, [(T0 + 0.5, "a"), (T0 + 0.6, "a"), (T0 + 2.5, "a")], {"a": 1})
    assert over.excess == 1 and "2 requests for 1 URL(s)" in over.over[0]
    assert over.excess_at == [T0 + 0.6]  # the one beyond the URLs: the later
    assert over.findings(allowed=1) == []  # one fenced zombie may make one more
    assert len(over.findings(allowed=0)) == 2


def test_a_request_goes_to_the_attempt_running_then_not_to_the_next_one_starting_within_the_slack():
    rows = [row(at=T0, started=T0, finished=T0 + 0.10), row(at=T0 + 1, started=T0 + 0.20, finished=T0 + 0.30)]
    res = count_requests(rows, [(T0 + 0.05, "a"), (T0 + 0.25, "a")], {"a": 1})
    assert (res.excess, res.over) == (0, [])


def test_a_request_while_no_attempt_of_its_job_ran_is_stray():
    rows = [row(at=T0, started=T0, finished=T0 + 1)]
    res = count_requests(rows, [(T0 + 1.8, "a"), (T0 + 0.5, "other")], {"a": 1})
    assert res.excess_at == [T0 + 1.8]
    assert res.excess == 1 and res.stray == [f"a: a request at {T0 + 1.8:.3f} while no attempt of it ran"]
