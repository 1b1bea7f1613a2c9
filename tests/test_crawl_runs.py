"""crawl/runs.py: run stamps (UTC, sortable, file-safe), run folders, and keep_runs pruning."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from crawlsched.crawl.runs import prune_runs, run_stamp


def test_run_stamp_is_utc_and_sortable():
    wib = timezone(timedelta(hours=7))
    assert run_stamp(datetime(2025, 11, 8, 9, 5, tzinfo=wib)) == "20251108T020500Z"
    with pytest.raises(ValueError):
        run_stamp(datetime(2025, 11, 8, 9, 5))


def test_prune_runs_keeps_the_newest_and_nothing_else_is_touched(tmp_path):
    for stamp in ["20251101T000000Z", "20251102T000000Z", "20251103T000000Z"]:
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / "00-x.body").write_text("x")
    (tmp_path / "20251104T000000Z.log").write_text("log")
    (tmp_path / "notes.txt").write_text("mine")
    assert prune_runs(tmp_path, 2) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20251103T000000Z", "20251104T000000Z.log", "notes.txt"]
    assert prune_runs(tmp_path, 2) == 0
    assert prune_runs(tmp_path / "missing", 1) == 0



def test_prune_runs_counts_each_runs_attempt_logs_as_one_run(tmp_path):
    stamps = ["20251101T010000Z", "20251102T010000Z", "20251103T010000_250Z-manual"]
    for stamp in stamps:
        for n in (1, 2, 3):
            (tmp_path / f"{stamp}-a{n}.log").write_text("x")
        (tmp_path / f"{stamp}-a3-on_failure.log").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    assert prune_runs(tmp_path, 2) == 4
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in left if n.startswith(stamps[0])]
    assert len([n for n in left if n.startswith((stamps[1], stamps[2]))]) == 8
    assert "notes.txt" in left


# --- no two runs share a folder ---------------------------------------------------------------


def test_a_fractional_second_gets_milliseconds_and_still_sorts_after_the_whole_second():
    whole = datetime(2025, 11, 8, 2, 5, tzinfo=timezone.utc)
    frac = datetime(2025, 11, 8, 2, 5, 0, 123456, tzinfo=timezone.utc)
    later = datetime(2025, 11, 8, 2, 5, 1, tzinfo=timezone.utc)
    assert run_stamp(whole) == "20251108T020500Z"
    assert run_stamp(frac) == "20251108T020500_123Z"
    names = [run_stamp(whole), run_stamp(frac), run_stamp(later)]
    assert sorted(names) == names


def test_manual_run_never_shares_a_scheduled_runs_folder(tmp_path):
    from crawlsched.model import Job
    from crawlsched.crawl.runs import run_dir, run_log

    job = Job.__new__(Job)
    object.__setattr__(job, "id", "j")
    t = 1762567500.0  # a whole second, as a scheduled fire
    scheduled, manual = run_dir(tmp_path, job, t), run_dir(tmp_path, job, t, "manual")
    assert scheduled != manual and manual.name == f"{scheduled.name}-manual"
    assert run_dir(tmp_path, job, t, "catch_up") == scheduled
    assert run_log(tmp_path, job, t, 2, "run").name == f"{scheduled.name}-run-a2.log"
    assert sorted([manual.name, scheduled.name]) == [scheduled.name, manual.name]
