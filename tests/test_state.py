"""The SQLite state file: its write paths when the file is replaced under a running daemon, its migrations."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from crawlsched.errors import ChainBusy
from crawlsched.procs import identity
from crawlsched.state import CLAIM_RUN, MIGRATIONS, AttemptKey, Owner, State, statements


def _scribble(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        f = Path(str(path) + suffix)
        if f.exists():
            with open(f, "r+b") as fh:
                fh.write(os.urandom(max(4096, f.stat().st_size)))


def test_an_attempt_closed_after_the_file_was_replaced_gets_its_own_row_not_another_jobs(tmp_path):
    state = State(tmp_path / "crawlsched.db").open(recover_corrupt=True)
    state.daemon_started(os.getpid(), "host", "1", 100.0)
    run_id = state.start_attempt("slow", 100.0, 1, 3, trigger="schedule", started_at=100.0, pid=os.getpid())
    key = AttemptKey("slow", 100.0, 1, 3, "schedule", 100.0, os.getpid())
    _scribble(tmp_path / "crawlsched.db")
    other = state.start_attempt("tick", 101.0, 1, 3, trigger="schedule", started_at=101.0, pid=os.getpid())
    assert list(tmp_path.glob("crawlsched.db.corrupt-*"))  # replaced: numbering starts again
    assert other == run_id
    state.finish_attempt(key, status="success", finished_at=105.0, message="slow done")
    got = {(r.job_id, r.attempt): (r.status, r.message) for r in state.runs()}
    assert got == {("tick", 1): ("running", None), ("slow", 1): ("success", "slow done")}
    assert state.daemon().pid == os.getpid()  # the daemon row is back with the fresh file
    state.close()


def test_a_claim_from_before_leases_still_holds_while_its_process_lives(tmp_path):
    path = tmp_path / "crawlsched.db"
    old = sqlite3.connect(path)
    for number, (name, script) in enumerate(MIGRATIONS):
        if name.startswith("006"):
            break
        for statement in statements(script):
            old.execute(statement)
        old.execute(f"PRAGMA user_version = {number + 1}")
    old.execute("INSERT INTO chain_claims(job_id, owner, owner_pid, owner_ident, claimed_at) VALUES ('j', 'run', ?, ?, 1.0)",
                (os.getpid(), identity(os.getpid())))
    old.commit()
    old.close()
    state = State(path).open()
    assert state.claim("j").owner_pid == os.getpid(), "alive: still held, though its time is long past"
    with pytest.raises(ChainBusy):
        state.claim_chain("j", Owner("daemon", 1, None), 100.0)
    state.release_chains(["j"], Owner(CLAIM_RUN, os.getpid(), identity(os.getpid())))
    assert state.claim("j") is None


def test_marking_jobs_seen_keeps_each_first_sight_and_anchor_once_set(tmp_path):
    state = State(tmp_path / "crawlsched.db").open()
    state.remember_id("added", 10.0)  # by the CLI: seen, not yet by a daemon
    state.mark_seen_many([("added", 20.0, None), ("every", 20.0, 25.0), ("cron", 20.0, None)], hold=False)
    state.mark_seen_many([("added", 30.0, 35.0), ("every", 30.0, 36.0), ("cron", 30.0, None)], hold=False)
    seen = {job_id: (s.first_seen, s.daemon_seen, s.anchor) for job_id, s in state.seen().items()}
    assert seen == {"added": (10.0, 20.0, 35.0), "every": (20.0, 20.0, 25.0), "cron": (20.0, 20.0, None)}
    state.close()
