"""bench/gatewake.py: the floor under a burst of held commands, let go by a loop of writes or by
one write to a pipe every gate reads (as crawl.command.SharedGate does)."""
from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def gw(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gatewake as mod

    return mod


@pytest.mark.parametrize("shared", [False, True])
def test_every_held_command_runs_once_let_go_and_reports_its_own_clock(gw, shared):
    late = gw.one_burst(4, shared=shared)
    assert len(late) == 4
    assert all(0 <= ms < 5000 for ms in late)  # each ran after the go-ahead, not at its spawn a second before
    assert late == sorted(late)


def test_its_gate_is_crawlscheds_own(gw):
    from crawlsched.crawl.command import GATE  # noqa: PLC0415

    assert gw.GATE == GATE


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_burst_or_reps_below_one_is_refused_with_the_value_named(gw, value, capsys):
    with pytest.raises(SystemExit) as exc:
        gw.main(["--burst", value])
    assert exc.value.code == 2
    assert f"--burst: {value!r} is not a whole number of at least 1" in capsys.readouterr().err
