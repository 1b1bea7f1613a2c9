"""Commands held for their instant and let go together (crawlsched.goaheads), with real processes."""

from __future__ import annotations

import os
import threading
import time

from crawlsched.crawl import command
from crawlsched.goaheads import ARRIVE_WAIT, Ahead, GoAheads


def _prepare(go_aheads: GoAheads, instant: float, path) -> command.Prepared:
    held = command.prepare_command(f"touch {path}", path.with_suffix(".log"), env=dict(os.environ),
                                   gate=go_aheads.gate(instant))
    assert isinstance(held, command.Prepared)
    return held


def test_the_commands_due_at_one_instant_share_a_gate_and_go_together_at_it(tmp_path):
    go_aheads = GoAheads()
    instant = time.time() + 0.4
    held = [_prepare(go_aheads, instant, tmp_path / f"ran{i}") for i in range(10)]
    assert len({id(h.shared) for h in held}) == 1
    began: list[float | None] = [None] * 10

    def wait(i: int) -> None:
        began[i] = Ahead(instant, held[i], go_aheads).begin()

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(set(began)) == 1 and began[0] >= instant  # one write, at the instant, never before
    assert all(h.run(timeout=10).ok for h in held) and len([p for p in tmp_path.glob("ran*") if not p.suffix]) == 10


def test_a_command_spawned_at_the_gate_but_never_held_is_evicted_and_the_others_go(tmp_path):
    go_aheads = GoAheads()
    instant = time.time() + 0.2
    held = _prepare(go_aheads, instant, tmp_path / "held")
    stray = _prepare(go_aheads, instant, tmp_path / "stray")  # its thread never comes to release()
    assert Ahead(instant, held, go_aheads).begin() >= instant + 0  # after waiting ARRIVE_WAIT for the stray one
    assert held.went_at - instant >= ARRIVE_WAIT - 0.005
    assert stray.evicted and stray.proc.poll() is not None  # killed at its gate, where nothing ran
    assert held.run(timeout=10).ok and (tmp_path / "held").exists() and not (tmp_path / "stray").exists()
    ahead = Ahead(instant, stray, go_aheads)
    assert ahead.begin() is not None and ahead.child is None  # its attempt spawns it the usual way


def test_a_stop_before_the_instant_lets_nothing_go(tmp_path):
    go_aheads = GoAheads()
    instant = time.time() + 30
    held = _prepare(go_aheads, instant, tmp_path / "ran")
    answer: list[float | None] = []
    t = threading.Thread(target=lambda: answer.append(Ahead(instant, held, go_aheads).begin()))
    t.start()
    time.sleep(0.2)
    go_aheads.stop()
    t.join(10)
    assert answer == [None] and held.proc.wait(timeout=5) != 0 and not (tmp_path / "ran").exists()
    assert go_aheads.gate(instant) is None
