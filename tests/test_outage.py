"""A lost state's downtime (crawlsched.outage): once the state answers again, every job owed fires
in the stretch gets its downtime handling, a job whose attempt is still in flight included."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from helpers.clock import FakeClock
from helpers.history import runs
from helpers.jobs import write_jobs
from helpers.loop import make_daemon, run_until
from test_daemon_loop import HandExecutor

UTC = timezone.utc


def test_a_job_whose_attempt_is_in_flight_still_owes_the_fires_due_while_the_state_was_lost(home, caplog):
    write_jobs(home, '[[jobs]]\nid = "f"\nname = "f"\nevery = "1m"\ncommand = "true"\nstart_date = 2025-01-01\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    executor = HandExecutor()
    d = make_daemon(home, clock, executor=executor)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 0, 30, tzinfo=UTC))
    assert "f" in d.chains and executor.queued  # its first attempt handed out, not finished
    d.outage_since = clock.time()  # the state is lost from here; the loop holds every fire meanwhile
    clock.advance(5 * 60)
    with caplog.at_level(logging.INFO, logger="crawlsched.test"):
        d._after_outage(clock.time())
    assert any("the fires of 1 job(s) due in the 300 s" in r.getMessage() for r in caplog.records)
    missed = [r for r in runs(home) if r["status"] == "missed"]
    assert len(missed) == 1 and missed[0]["job_id"] == "f"
