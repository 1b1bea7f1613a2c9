"""Attempts queued ahead of their instant (crawlsched.workers.executor.QUEUE_AHEAD): the daemon,
in-process with an injected clock, over a real PostgreSQL state. A fire is queued ``lead``
seconds before its instant; when its job is paused or removed before the instant, its row is
closed ``skipped`` and a worker that holds its job drops it, never crawled. A job changed in
those seconds runs as it was queued: the edit applies from its next fire."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import pytest

from crawlsched.daemon import Daemon
from crawlsched.store import JobStore
from crawlsched.workers.executor import RECALLED, WorkersExecutor
from crawlsched.workers.worker import Worker
from helpers.clock import FakeClock
from helpers.jobs import write_jobs

# The fire is minutes ahead of the real clock (the database's, which says what is not yet due),
# worked out when each test starts: one computed at import would be past for a test that runs
# three minutes after the collection (as in a full run).
def job_at(instant: int, command: str = "touch crawled", extra: str = "") -> str:
    cron = time.strftime("%M %H * * *", time.gmtime(instant))
    return f'[[jobs]]\nid = "soon"\nname = "soon"\ncron = "{cron}"\ncommand = "{command}"\n{extra}'


def edited(edit: str, instant: int) -> str:
    if edit == "paused":
        return job_at(instant, extra="paused = true\n")
    return '[[jobs]]\nid = "other"\nname = "other"\nevery = "1d"\nstart_date = "2099-01-01"\ncommand = "true"\n'


@pytest.fixture
def setup(tmp_path, pg_dsn):
    from crawlsched.state.postgres import PostgresStore

    instant = (int(time.time()) // 60 + 3) * 60
    clock = FakeClock(datetime.fromtimestamp(instant - 10, timezone.utc))
    home = tmp_path / "home"
    write_jobs(home, job_at(instant))
    store = PostgresStore(pg_dsn)
    log = logging.getLogger("crawlsched.test")
    d = Daemon(JobStore(home / "jobs.toml", cache_dir=home / ".cache"), store, home, log, clock=clock.time,
               monotonic=clock.monotonic, executor=WorkersExecutor(store, log, lead=2.0), notify=lambda _m: False,
               duties=False)
    d.start()
    d.instant = instant  # for the tests' edits
    yield d, clock, store, home
    d.stopping = True
    d.shutdown()


def queued_job(store) -> tuple[int, dict]:
    [(args,)] = store.db.read_tuples("SELECT args FROM procrastinate_jobs")
    return args["run_id"], args


def test_a_fire_is_queued_its_lead_before_its_instant_and_not_sooner(setup):
    d, clock, store, _ = setup
    clock.advance(7.5)  # 2.5 s before
    # the next wake is no later than the fire's hand-out, 2 s before its instant (sooner when another
    # duty is due: a loaded machine's lease renewal, say)
    assert d.turn() <= 0.5 + 1e-6
    assert store.runs("soon") == []
    clock.advance(0.5)
    d.turn()
    [row] = store.runs("soon")
    assert (row.scheduled_for, row.status, row.owner_pid) == (d.instant, "running", None)  # the queue's, not started


@pytest.mark.parametrize("edit", ["paused", "removed"])
def test_a_job_paused_or_removed_before_its_instant_is_not_crawled(setup, tmp_path, edit):
    d, clock, store, home = setup
    clock.advance(8.5)
    d.turn()
    run_id, args = queued_job(store)
    write_jobs(home, edited(edit, d.instant))
    assert d.reload(force=True)
    [row] = store.runs("soon")
    assert (row.id, row.status, row.message) == (run_id, "skipped", RECALLED)
    for _ in range(3):
        d.turn()
        d.collect()
    assert "soon" not in d.chains  # its chain ended with the skipped row
    worker_home = tmp_path / "worker"
    worker = Worker(store, store.db.dsn, worker_home, logging.getLogger("crawlsched.test"))
    began = time.monotonic()
    worker.attempt(run_id, args["spec"], args["grace"])  # the job a worker fetched before the edit
    assert time.monotonic() - began < 5  # dropped at once: it does not hold a slot until the instant
    assert worker.takeovers.batches == 0 and store.runs("soon")[0].status == "skipped"
    assert not (worker_home / "crawled").exists() and not list(worker_home.rglob("crawled*"))


def test_a_job_changed_before_its_instant_keeps_the_fire_queued_as_it_was(setup):
    d, clock, store, home = setup
    clock.advance(8.5)
    d.turn()
    run_id, args = queued_job(store)
    write_jobs(home, job_at(d.instant, command="touch crawled-too"))
    assert d.reload(force=True)
    [row] = store.runs("soon")
    assert (row.id, row.status, row.owner_pid) == (run_id, "running", None)  # still queued: it runs at its instant
    assert "soon" in d.chains and args["spec"]["job"]["command"] == "touch crawled"
