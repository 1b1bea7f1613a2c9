"""Scenario 14: 10,000 jobs. Start, reload after one edit and ``list`` work; a turn of the loop
does work that does not grow with the number of jobs.

Measured by counting (calls of ``timing.next_fire``, state writes, heap entries touched), not by
wall-clock targets. Anchor: the ``schedule`` library scans every job on each tick (SPEC §3 measured
2 ms per tick at 10,000 jobs); cron daemons wake once per minute and scan every entry.
tests/test_daemon_loop.py has the 500-job idle-turn version.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawlsched import timing
from crawlsched.store import JobStore
from helpers.clock import FakeClock
from helpers.loop import make_daemon
from helpers.process import cli

pytestmark = pytest.mark.slow
UTC = timezone.utc


def _write(home: Path, n: int) -> None:
    tables = "".join(
        f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nat = "{10 + i % 12:02d}:{i // 12 % 60:02d}"\ncommand = "true"\nstart_date = 2025-01-01\n\n'
        for i in range(n))
    (home / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\n\n' + tables)


class Counter:
    def __init__(self) -> None:
        self.next_fire = 0
        self.writes = 0


@contextmanager
def counting(d, monkeypatch):
    c = Counter()
    real_next, real_write = timing.next_fire, d.state.db.write  # the SQLite store's transactions

    def next_fire(*a, **kw):
        c.next_fire += 1
        return real_next(*a, **kw)

    def write(*a, **kw):
        c.writes += 1
        return real_write(*a, **kw)

    monkeypatch.setattr(timing, "next_fire", next_fire)
    monkeypatch.setattr(d.state.db, "write", write)
    yield c
    monkeypatch.setattr(timing, "next_fire", real_next)
    monkeypatch.setattr(d.state.db, "write", real_write)


def _work_of_one_fire(home: Path, n: int, monkeypatch) -> tuple[int, int, int, int]:
    _write(home, n)
    clock = FakeClock(datetime(2025, 11, 8, 9, 59, 59, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    assert len(d.heap) == n  # every job planned once
    with counting(d, monkeypatch) as idle:
        heap_before = list(d.heap)
        d.turn()
        assert d.heap == heap_before  # an idle turn touches no job
    clock.advance(1)  # 10:00: exactly the jobs with i % 720 == 0 are due
    due = sum(1 for i in range(n) if i % 720 == 0)
    with counting(d, monkeypatch) as fire:
        d.turn()
        d.collect()
    return idle.next_fire + idle.writes, fire.next_fire // due, fire.writes // due, len(d.heap)


def test_work_per_fire_is_the_same_for_60_and_10000_jobs(tmp_path, monkeypatch):
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small = _work_of_one_fire(tmp_path / "small", 60, monkeypatch)
    large = _work_of_one_fire(tmp_path / "large", 10_000, monkeypatch)
    assert small[0] == large[0] == 0  # idle: no fire computed, nothing written
    assert small[2] == large[2]  # per fire: the same number of writes
    # and no more next_fire calls: jobs due together that share a schedule share one (Planner.plan),
    # so the 14 jobs due at 10:00 of the large file cost one call in all, the small file's one job one
    assert large[1] <= small[1] <= 3


def test_10000_jobs_start_reload_one_edit_and_list(home, monkeypatch):
    _write(home, 10_000)
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    assert len(d.jobs) == 10_000
    JobStore(home / "jobs.toml", machine_tz="UTC").edit("j7", {"at": "23:59"}, now=datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    gens = dict(d.gen)
    with counting(d, monkeypatch) as c:
        assert d.reload(force=True) is True
    assert [k for k in d.gen if d.gen[k] != gens.get(k)] == ["j7"]  # only the edited job is re-planned
    assert c.next_fire <= 2
    assert timing.format_local(timing.from_epoch(d.planned["j7"]), "UTC") == "2025-11-08 23:59:00"
    listed = cli(home, "list", "--json", env={"TZ": "UTC"}, check=True)
    jobs = json.loads(listed.stdout)["jobs"]
    assert len(jobs) == 10_000 and jobs[7]["schedule"] == "23:59"
