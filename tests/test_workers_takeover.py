"""A worker's take-overs grouped (crawlsched.workers.takeover): the attempts that ask together share
one write, each gets its own answer, a failed write fails each of them, one row per job per write."""

from __future__ import annotations

import threading
import time

import pytest

from crawlsched.workers.takeover import GIVEN_BACK, GoAheads, StartsFirst, TakeOvers, wait_until


class SlowWrites:
    """``take_many`` as a write that takes a while (as one waiting for the state's lock would)."""

    def __init__(self, refused: set[int] = frozenset(), fail: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.refused, self.fail = refused, fail
        self.children: dict[int, tuple] = {}  # every write's held commands
        self.lock = threading.Lock()

    def __call__(self, ids: list[int], children: dict | None = None) -> dict[int, str]:
        with self.lock:
            self.calls.append(list(ids))
            self.children.update(children or {})
        time.sleep(0.05)
        if self.fail:
            raise ConnectionError("the state database went away")
        return {i: f"key-{i}" for i in ids if i not in self.refused}


def take_all(takeovers: TakeOvers, requests: list[tuple[int, str]]) -> dict[int, object]:
    got: dict[int, object] = {}
    start = threading.Barrier(len(requests))

    def one(run_id: int, job_id: str) -> None:
        start.wait()
        try:
            got[run_id] = takeovers.take(run_id, job_id)
        except Exception as exc:  # noqa: BLE001 - what the test looks at
            got[run_id] = exc

    threads = [threading.Thread(target=one, args=r) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return got


def test_attempts_asking_together_share_a_write_and_each_gets_its_own_answer():
    writes = SlowWrites(refused={3})
    got = take_all(TakeOvers(writes), [(i, f"job-{i}") for i in range(20)])
    assert got == {i: (None if i == 3 else f"key-{i}") for i in range(20)}  # 3: settled meanwhile, dropped
    assert sorted(i for call in writes.calls for i in call) == list(range(20))  # each row asked for once
    assert len(writes.calls) <= 3  # the first, and whoever came while it ran


def test_a_failed_write_fails_each_attempt_it_carried():
    got = take_all(TakeOvers(SlowWrites(fail=True)), [(i, f"job-{i}") for i in range(5)])
    assert all(isinstance(v, ConnectionError) for v in got.values()) and len(got) == 5


def test_two_rows_of_one_job_never_share_a_write():
    writes = SlowWrites()
    got = take_all(TakeOvers(writes), [(1, "same"), (2, "same"), (3, "other")])
    assert got == {1: "key-1", 2: "key-2", 3: "key-3"}
    for call in writes.calls:
        assert not {1, 2} <= set(call)


def test_waiting_for_an_instant_ends_at_it_or_when_stopped():
    ticks = iter([10.998, 10.999, 11.0])  # 2 ms left: slept, then looked at again
    assert wait_until(11.0, threading.Event(), clock=lambda: next(ticks)) is True
    stop = threading.Event()
    stop.set()
    assert wait_until(time.time() + 60, stop) is False
    assert wait_until(time.time() - 1) is True


@pytest.mark.parametrize("n", [1, 2])
def test_a_lone_attempt_is_one_write(n):
    writes = SlowWrites()
    takeovers = TakeOvers(writes)
    for i in range(n):
        assert takeovers.take(i, f"j{i}") == f"key-{i}"
    assert writes.calls == [[i] for i in range(n)] and takeovers.batches == n


def test_attempts_due_at_one_instant_are_taken_over_in_one_write_at_that_instant():
    writes = SlowWrites()
    takeovers = TakeOvers(writes)
    instant = time.time() + 0.3
    got: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: got.update({i: (takeovers.take(i, f"j{i}", instant), time.time())}))
               for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [sorted(c) for c in writes.calls] == [list(range(10))]  # one write, all of them
    assert all(key == f"key-{i}" and at >= instant for i, (key, at) in got.items()) and len(got) == 10


def test_an_attempt_waiting_for_its_instant_is_given_back_when_the_worker_stops_now():
    writes = SlowWrites()
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    assert TakeOvers(writes).take(1, "j", time.time() + 60, stop) is GIVEN_BACK
    assert writes.calls == []


def test_a_close_waits_until_the_attempts_taken_over_with_it_have_begun():
    starts = StartsFirst(patience=5.0)
    starts.taken(["a", "b", "c"])
    starts.begun("a")
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (starts.wait_for_starts(), closed.set()))
    closer.start()
    starts.begun("b")
    assert not closed.wait(0.2)  # "c" has not begun
    starts.begun("c")
    assert closed.wait(5)
    closer.join(5)


def test_a_close_waits_no_longer_than_its_patience():
    starts = StartsFirst(patience=0.05)
    starts.taken(["never"])
    began = time.monotonic()
    assert starts.wait_for_starts() is False and time.monotonic() - began < 2
    began = time.monotonic()
    assert starts.wait_for_starts() is True and time.monotonic() - began < 0.04  # forgotten: it holds nothing up again


def test_the_keys_of_each_write_are_counted_before_any_attempt_goes_on():
    seen: list[list[str]] = []
    takeovers = TakeOvers(SlowWrites(refused={2}), on_taken=seen.append)
    take_all(takeovers, [(1, "a"), (2, "b")])
    assert seen == [["key-1"]]


class HeldCommand:
    def __init__(self, pgid: int) -> None:
        self.pgid, self.ident = pgid, f"boot/{pgid}"


def test_a_held_commands_group_is_given_to_the_write_that_takes_its_row_over():
    writes = SlowWrites(refused={2})
    children = {1: HeldCommand(501), 2: HeldCommand(502)}
    takeovers = TakeOvers(writes)
    got: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, takeovers.take(i, f"job-{i}", child=children[i])))
               for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got == {1: "key-1", 2: None}
    assert writes.children == {1: (501, "boot/501"), 2: (502, "boot/502")}  # each asked with its group


def test_with_a_lead_the_rows_due_together_are_taken_over_that_long_before_their_instant_in_one_write():
    writes = SlowWrites()
    takeovers = TakeOvers(writes, lead=0.4)
    instant = time.time() + 0.6
    got: dict[int, float] = {}
    threads = [threading.Thread(target=lambda i=i: (takeovers.take(i, f"j{i}", instant), got.update({i: time.time()})))
               for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [sorted(c) for c in writes.calls] == [list(range(10))]
    assert all(instant - 0.4 <= at < instant for at in got.values()) and len(got) == 10  # the write's 50 ms included


class Gate:
    def __init__(self) -> None:
        self.released, self.at = False, None

    def go(self) -> None:
        self.released, self.at = True, time.time()


def release_all(go_aheads: GoAheads, held: list[tuple[float, Gate]]) -> None:
    threads = [threading.Thread(target=go_aheads.release, args=h) for h in held]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_held_commands_are_let_go_at_their_instant_and_not_before():
    instant = time.time() + 0.3
    later = instant + 0.3
    gates = [Gate() for _ in range(30)]
    release_all(GoAheads(), [(later if i % 10 == 0 else instant, g) for i, g in enumerate(gates)])
    assert all(g.released for g in gates)
    for i, g in enumerate(gates):
        due = later if i % 10 == 0 else instant
        assert due <= g.at < due + 0.1


def test_a_command_held_after_the_timer_started_with_an_earlier_instant_is_let_go_at_its_own():
    go_aheads, late, early = GoAheads(), Gate(), Gate()
    instant = time.time()
    first = threading.Thread(target=go_aheads.release, args=(instant + 1.0, late))
    first.start()
    time.sleep(0.1)  # the first thread times its instant, a second away
    release_all(go_aheads, [(instant + 0.3, early)])
    back = time.time()  # its thread went on while the timer still waits for its own instant
    assert early.released and instant + 0.3 <= early.at < instant + 0.4 and back < instant + 0.5
    assert not late.released
    first.join(5)
    assert late.released and late.at >= instant + 1.0


def test_commands_held_when_the_worker_stops_now_are_never_let_go():
    go_aheads, timed, waiting = GoAheads(), Gate(), Gate()
    answers: dict[str, bool] = {}
    threads = [threading.Thread(target=lambda n=n, g=g: answers.__setitem__(n, go_aheads.release(time.time() + 30, g)))
               for n, g in (("timer", timed), ("other", waiting))]
    for t in threads:
        t.start()
    time.sleep(0.1)
    go_aheads.stop()
    for t in threads:
        t.join(5)
    assert answers == {"timer": False, "other": False} and not timed.released and not waiting.released
    assert go_aheads.release(time.time(), Gate()) is False  # stopped: nothing more is let go


def test_a_workers_collector_is_paused_while_a_release_is_timed_and_back_after_it():
    import gc

    go_aheads, gate = GoAheads(pause_collector=True), Gate()
    timed = threading.Thread(target=go_aheads.release, args=(time.time() + 0.3, gate))
    assert gc.isenabled()
    timed.start()
    time.sleep(0.1)
    try:
        assert not gc.isenabled()  # no collection can delay the go-aheads
    finally:
        timed.join(5)
    assert gate.released and gc.isenabled()
