"""The planner at fixed instants: applying job files, what is due, backlogs and clock jumps.

No database, no threads, no daemon: ``now`` is an argument, chains are plain objects.
Transition instants used below:
- Europe/Berlin 2025-03-30 01:00 UTC: 02:00 CET -> 03:00 CEST (02:00-02:59 does not exist)
- America/New_York 2025-11-02 06:00 UTC: 02:00 EDT -> 01:00 EST (01:00-01:59 happens twice)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timezone

from crawlsched.catchup import CatchUpPlan, Seen
from crawlsched.model import Defaults, Trigger
from crawlsched.plan import Change, Entry, EntryKind, Planner
from crawlsched.validate import build_job

UTC = timezone.utc
NO_CHAINS: dict = {}


def job(job_id: str = "j", **kw):
    raw = {"id": job_id, "name": job_id, "command": "true", "timezone": "UTC", **kw}
    return build_job(raw, Defaults())


def at(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def local(ts: float, tz: str) -> str:
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat()


@dataclass
class Chain:
    token: int
    retry_due: float | None = None


def apply(planner: Planner, jobs, now: float, seen=None, paused: bool = False) -> Change:
    """What the loop does with a job file: apply, then plan each changed job that may fire."""
    change = planner.apply(jobs, paused, seen or {}, now)
    for j in change.changed:
        if planner.may_fire(j):
            planner.plan(j, now)
    return change


def take_due(planner: Planner, now: float, chains=NO_CHAINS) -> list[tuple[str, float]]:
    """What ``fire_due`` does with the planner: pop what is due, fire it, plan the next fires."""
    due = planner.pop_due(now, chains)
    for entry in due:
        if entry.kind is EntryKind.FIRE:
            planner.take(entry.job_id)
            planner.fired(entry.job_id, entry.due)
    for entry in due:
        if entry.kind is EntryKind.FIRE:
            planner.plan(planner.jobs[entry.job_id], now)
    return [(e.job_id, e.due) for e in due]


DAILY_A = job("a", at="09:05", start_date="2025-01-01")
DAILY_B = job("b", at="09:06", start_date="2025-01-01")


def test_a_heap_entry_has_named_fields_and_orders_as_a_tuple_by_due_then_sequence():
    early, tie = Entry(10.0, 2, EntryKind.RETRY, "b", 7), Entry(10.0, 1, EntryKind.FIRE, "c", 1)
    late = Entry(11.0, 0, EntryKind.FIRE, "a", 1)
    assert sorted([late, early, tie]) == [tie, early, late]
    due, seq, kind, job_id, token = early
    assert (early.due, early.kind, early.job_id, early.token) == (due, kind, job_id, token) == (10.0, EntryKind.RETRY, "b", 7)
    assert EntryKind.RETRY == "retry" and EntryKind.FIRE.value == "fire"


def test_applying_a_first_file_plans_every_job_and_reports_its_first_sight():
    planner = Planner()
    now = at(2025, 11, 8, 9, 0, 0)
    every = job("e", every="15m")
    change = apply(planner, [DAILY_A, every], now)
    assert [j.id for j in change.changed] == ["a", "e"] and change.removed == [] and not change.switched
    assert change.unseen == [("a", now, None), ("e", now, now)]  # an every job is anchored where first seen
    assert planner.planned == {"a": at(2025, 11, 8, 9, 5), "e": now}  # the anchor itself fires
    assert sorted(e.job_id for e in planner.heap) == ["a", "e"]


def test_an_every_job_first_seen_mid_second_is_anchored_on_the_next_whole_second():
    planner = Planner()
    apply(planner, [job("e", every="15m")], at(2025, 11, 8, 9, 0, 0) + 0.5)
    assert planner.anchors["e"] == planner.planned["e"] == at(2025, 11, 8, 9, 0, 1)


def test_reapplying_the_same_file_changes_nothing():
    planner = Planner()
    apply(planner, [DAILY_A, DAILY_B], at(2025, 11, 8, 9, 0))
    heap, gen = list(planner.heap), dict(planner.gen)
    seen = {"a": Seen(at(2025, 11, 8, 9, 0)), "b": Seen(at(2025, 11, 8, 9, 0))}
    change = apply(planner, [DAILY_A, DAILY_B], at(2025, 11, 8, 9, 1), seen)
    assert change == Change()
    assert planner.heap == heap and planner.gen == gen


def test_a_changed_job_is_replanned_and_its_old_entry_goes_stale():
    planner = Planner()
    apply(planner, [DAILY_A, DAILY_B], at(2025, 11, 8, 9, 0))
    seen = {"a": Seen(at(2025, 11, 8, 9, 0)), "b": Seen(at(2025, 11, 8, 9, 0))}
    moved = job("a", at="09:10", start_date="2025-01-01")
    change = apply(planner, [moved, DAILY_B], at(2025, 11, 8, 9, 1), seen)
    assert [j.id for j in change.changed] == ["a"] and change.unseen == []
    assert planner.planned["a"] == at(2025, 11, 8, 9, 10)
    assert take_due(planner, at(2025, 11, 8, 9, 6)) == [("b", at(2025, 11, 8, 9, 6))]  # not a at 09:05
    assert take_due(planner, at(2025, 11, 8, 9, 10)) == [("a", at(2025, 11, 8, 9, 10))]


def test_a_removed_job_never_fires_and_loses_its_anchor_and_backlog():
    planner = Planner()
    every = job("e", every="15m")
    apply(planner, [DAILY_A, every], at(2025, 11, 8, 9, 0))
    planner.caught_up("e", CatchUpPlan(at(2025, 11, 8, 8, 45), [at(2025, 11, 8, 8, 30), at(2025, 11, 8, 8, 45)], None))
    change = apply(planner, [DAILY_A], at(2025, 11, 8, 9, 1), {"a": Seen(1.0), "e": Seen(1.0, at(2025, 11, 8, 9, 0))})
    assert change.removed == ["e"] and change.changed == []
    assert "e" not in planner.anchors and "e" not in planner.backlog and "e" not in planner.jobs
    assert take_due(planner, at(2025, 11, 8, 9, 30)) == [("a", at(2025, 11, 8, 9, 5))]


def test_the_store_s_anchor_and_last_fire_are_kept():
    planner = Planner()
    anchor = at(2025, 11, 1, 0, 0, 7)
    seen = {"e": Seen(at(2025, 11, 1), anchor, at(2025, 11, 8, 9, 0, 7))}
    change = apply(planner, [job("e", every="15m")], at(2025, 11, 8, 9, 0, 7), seen)
    assert change.unseen == []
    assert planner.anchors["e"] == anchor
    assert planner.planned["e"] == at(2025, 11, 8, 9, 15, 7)  # not its last fire a second time


def test_an_every_job_seen_without_an_anchor_gets_one_and_the_store_is_told():
    planner = Planner()
    now = at(2025, 11, 8, 9, 0)
    change = apply(planner, [job("e", every="15m")], now, {"e": Seen(at(2025, 11, 1))})
    assert change.unseen == [("e", now, now)] and planner.anchors["e"] == now


def test_jobs_are_due_in_order_and_not_before():
    planner = Planner()
    apply(planner, [DAILY_B, DAILY_A], at(2025, 11, 8, 9, 0))
    assert take_due(planner, at(2025, 11, 8, 9, 4, 59)) == []
    assert planner.top(NO_CHAINS).job_id == "a"
    assert take_due(planner, at(2025, 11, 8, 9, 7)) == [("a", at(2025, 11, 8, 9, 5)), ("b", at(2025, 11, 8, 9, 6))]
    assert planner.planned == {"a": at(2025, 11, 9, 9, 5), "b": at(2025, 11, 9, 9, 6)}  # the next day's


def test_jobs_due_in_the_same_second_come_out_in_the_order_they_were_planned():
    planner = Planner()
    jobs = [job(f"j{i}", at="09:05", start_date="2025-01-01") for i in (3, 1, 2)]
    apply(planner, jobs, at(2025, 11, 8, 9, 0))
    assert [j for j, _ in take_due(planner, at(2025, 11, 8, 9, 5))] == ["j3", "j1", "j2"]


def test_pausing_the_scheduler_switches_every_job_and_none_may_fire():
    planner = Planner()
    apply(planner, [DAILY_A, DAILY_B], at(2025, 11, 8, 9, 0))
    seen = {"a": Seen(1.0), "b": Seen(1.0)}
    change = apply(planner, [DAILY_A, DAILY_B], at(2025, 11, 8, 9, 1), seen, paused=True)
    assert change.switched and [j.id for j in change.changed] == ["a", "b"]
    assert not planner.may_fire(DAILY_A)
    assert take_due(planner, at(2025, 11, 8, 10, 0)) == []
    change = apply(planner, [DAILY_A, DAILY_B], at(2025, 11, 8, 10, 0), seen, paused=False)
    assert change.switched and planner.planned["a"] == at(2025, 11, 9, 9, 5)


def test_a_paused_job_is_not_planned():
    planner = Planner()
    change = apply(planner, [job("p", at="09:05", paused=True)], at(2025, 11, 8, 9, 0))
    assert [j.id for j in change.changed] == ["p"] and planner.planned == {} and planner.top(NO_CHAINS) is None


def test_a_job_past_its_end_date_is_not_planned():
    planner = Planner()
    apply(planner, [job("f", at="09:05", start_date="2025-01-01", end_date="2025-01-31")], at(2025, 11, 8, 9, 0))
    assert planner.planned == {} and planner.heap == []


def test_a_retry_entry_is_due_only_while_its_chain_waits_for_it():
    planner = Planner()
    chains = {"a": Chain(token=4, retry_due=at(2025, 11, 8, 9, 10))}
    planner.push_retry("a", 4, at(2025, 11, 8, 9, 10))
    assert [(e.kind, e.job_id) for e in planner.pop_due(at(2025, 11, 8, 9, 10), chains)] == [(EntryKind.RETRY, "a")]
    planner.push_retry("a", 4, at(2025, 11, 8, 9, 20))
    chains["a"] = Chain(token=5, retry_due=at(2025, 11, 8, 9, 20))  # a new chain: the old entry is stale
    assert planner.pop_due(at(2025, 11, 8, 9, 20), chains) == []


def test_a_fire_is_never_planned_at_the_instant_it_last_fired():
    planner = Planner()
    every = job("e", every="15m")
    now = at(2025, 11, 8, 9, 0)
    apply(planner, [every], now)
    assert take_due(planner, now) == [("e", now)]
    assert planner.planned["e"] == now + 900
    changed = job("e", every="15m", max_retries=1)
    apply(planner, [changed], now, {"e": Seen(now, now, now)})  # re-planned at the same instant
    assert planner.planned["e"] == now + 900


def test_berlin_spring_forward_0230_is_planned_once_just_after_the_jump():
    planner = Planner()
    j = job("b", at="02:30", timezone="Europe/Berlin", start_date="2025-01-01")
    apply(planner, [j], at(2025, 3, 29, 12, 0))
    fired = []
    for now in (at(2025, 3, 30, 1, 0), at(2025, 3, 31, 0, 30)):
        fired += [local(t, "Europe/Berlin") for _, t in take_due(planner, now)]
    assert fired == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]


def test_new_york_fall_back_0130_is_planned_once():
    planner = Planner()
    j = job("n", at="01:30", timezone="America/New_York", start_date="2025-01-01")
    apply(planner, [j], at(2025, 11, 1, 12, 0))
    fired = [t for _, t in take_due(planner, at(2025, 11, 2, 5, 30))]
    assert [local(t, "America/New_York") for t in fired] == ["2025-11-02T01:30:00-04:00"]
    assert local(planner.planned["n"], "America/New_York") == "2025-11-03T01:30:00-05:00"  # not 01:30 EST


def test_the_catch_up_backlog_is_handed_out_oldest_first_and_then_the_next_fire_follows_it():
    planner = Planner()
    every = job("e", every="1h")
    anchor = at(2025, 11, 1, 0, 0)
    now = at(2025, 11, 8, 3, 30)
    change = planner.apply([every], False, {"e": Seen(anchor, anchor, anchor)}, now)
    runs = [at(2025, 11, 8, 1, 0), at(2025, 11, 8, 2, 0), at(2025, 11, 8, 3, 0)]
    assert planner.caught_up("e", CatchUpPlan(runs[-1], runs, None)) is True
    planner.plan(change.changed[0], now)
    assert planner.backlog_times() == runs
    out = [planner.next_from_backlog("e") for _ in range(4)]
    assert [(o[1], o[2]) for o in out[:3]] == [(t, Trigger.CATCH_UP.value) for t in runs] and out[3] is None
    assert planner.planned["e"] == at(2025, 11, 8, 4, 0)  # after the newest owed fire, not again at 03:00


def test_a_catch_up_with_no_runs_leaves_no_backlog_but_moves_the_last_fire():
    planner = Planner()
    planner.apply([job("e", every="1h")], False, {}, 0.0)
    assert planner.caught_up("e", CatchUpPlan(7200.0, [], None)) is False
    assert planner.backlog == {} and planner.last_fire["e"] == 7200.0


def test_a_paused_scheduler_drops_the_backlog_instead_of_handing_it_out():
    planner = Planner()
    every = job("e", every="1h")
    planner.apply([every], False, {}, 0.0)
    planner.caught_up("e", CatchUpPlan(7200.0, [3600.0, 7200.0], None))
    planner.apply([every], True, {"e": Seen(0.0, 0.0)}, 7300.0)
    assert planner.next_from_backlog("e") is None and planner.backlog == {}


def test_a_clock_jump_back_replans_interval_jobs_and_retries_by_their_real_remaining_time():
    planner = Planner()
    every, daily = job("e", every="10m"), DAILY_A
    start = at(2025, 11, 8, 9, 0)
    apply(planner, [every, daily], start)
    take_due(planner, start)  # e fired at 09:00; next at 09:10; a at 09:05
    chains = {"r": Chain(token=1, retry_due=start + 400)}
    planner.push_retry("r", 1, start + 400)
    now = start + 300 - 86400  # five minutes later the wall clock went back one day
    jumped = planner.clock_jumped(-86400.0, now, chains)
    assert jumped.anchors == [("e", start + 600 - 86400)]
    assert jumped.retries == [("r", start + 400 - 86400)]
    assert planner.planned["e"] == planner.anchors["e"] == start + 600 - 86400
    assert planner.planned["a"] == at(2025, 11, 8, 9, 5)  # a fixed time waits for its next fire: no duplicate
    chains["r"].retry_due = jumped.retries[0][1]  # what the loop does with it
    assert take_due(planner, now + 99, chains) == []
    assert take_due(planner, now + 100, chains) == [("r", start + 400 - 86400)]  # 100 s left, as before the jump
    assert take_due(planner, now + 300, chains) == [("e", start + 600 - 86400)]  # 300 s left, as before the jump


def test_a_clock_jump_back_never_plans_a_fire_before_now():
    planner = Planner()
    start = at(2025, 11, 8, 9, 0)
    apply(planner, [job("e", every="10m")], start)
    take_due(planner, start)  # next at 09:10, overdue when the clock, at 09:15, goes back a minute
    chains = {"r": Chain(token=1, retry_due=start + 800)}
    jumped = planner.clock_jumped(-60.0, start + 840, chains)
    assert jumped.anchors == [("e", start + 840)] and jumped.retries == [("r", start + 840)]


def test_a_clock_jump_forward_leaves_the_plan_to_the_late_wake():
    planner = Planner()
    apply(planner, [job("e", every="10m"), DAILY_A], at(2025, 11, 8, 8, 0))
    heap = list(planner.heap)
    chains = {"r": Chain(token=1, retry_due=at(2025, 11, 8, 8, 5))}
    jumped = planner.clock_jumped(7200.0, at(2025, 11, 8, 10, 0), chains)
    assert jumped.anchors == [] and jumped.retries == [] and planner.heap == heap


def test_stale_entries_are_dropped_from_the_top_only():
    planner = Planner()
    apply(planner, [DAILY_A, DAILY_B], at(2025, 11, 8, 9, 0))
    planner.unplan("a")
    planner.clean_top(NO_CHAINS)
    assert [e.job_id for e in planner.heap] == ["b"]
    assert heapq.nsmallest(1, planner.heap)[0].kind is EntryKind.FIRE



def test_jobs_alike_planned_at_one_instant_share_one_answer_and_each_gets_its_own(monkeypatch):
    from crawlsched import timing

    calls = []
    real = timing.next_fire
    monkeypatch.setattr(timing, "next_fire", lambda *a: calls.append(a) or real(*a))
    kinds = [{"at": "09:05"}, {"cron": "*/7 * * * *"}, {"every": "15m"}]
    jobs = [job(f"j{i}", **kinds[i % 3], start_date="2025-01-01") for i in range(300)]
    jobs += [job("other-zone", at="09:05", timezone="Asia/Tokyo"), job("ended", at="09:05", end_date="2025-01-01"),
             job("later", at="09:05", start_date="2025-07-01")]
    planner, now = Planner(), at(2025, 6, 1, 12, 0, 30)
    apply(planner, jobs, now, seen={"j1": Seen(daemon_seen=at(2025, 5, 1), last_fire=at(2025, 6, 1, 12, 3))})
    assert len(calls) <= 3 + 3 + 1  # the three schedules, the three other jobs, j1's own last fire
    for j in jobs:  # each job's plan is what it would be alone
        alone = Planner()
        apply(alone, [j], now, seen={"j1": Seen(daemon_seen=at(2025, 5, 1), last_fire=at(2025, 6, 1, 12, 3))} if j.id == "j1" else None)
        assert planner.planned.get(j.id) == alone.planned.get(j.id), j.id


def test_with_a_lead_a_fire_is_handed_out_that_long_before_its_instant_and_a_retry_is_not():
    planner = Planner()
    now = at(2025, 11, 8, 9, 0)
    apply(planner, [job("a", at="09:05", start_date="2025-01-01")], now)
    five = at(2025, 11, 8, 9, 5)
    chains = {"r": Chain(token=1, retry_due=five)}
    planner.push_retry("r", 1, five)
    assert planner.next_handout(NO_CHAINS, 2.0) == five - 2.0  # the retry's entry or the fire's: both at 09:05
    assert planner.pop_due(five - 2.5, chains, 2.0) == []
    due = planner.pop_due(five - 2.0, chains, 2.0)
    assert [(e.kind, e.job_id, e.due) for e in due] == [(EntryKind.FIRE, "a", five)]
    assert [(e.kind, e.job_id) for e in planner.heap] == [(EntryKind.RETRY, "r")]  # a retry waits for its due time
    assert planner.next_handout(chains, 2.0) == five
    assert [e.job_id for e in planner.pop_due(five, chains, 2.0)] == ["r"]


def test_with_a_lead_a_fire_of_a_job_still_running_waits_for_its_instant():
    planner = Planner()
    now = at(2025, 11, 8, 9, 0)
    apply(planner, [job("a", at="09:05", start_date="2025-01-01")], now)
    five = at(2025, 11, 8, 9, 5)
    running = {"a": Chain(token=0)}  # its previous run: this fire is skipped (or not) at its instant, not before
    assert planner.next_handout(running, 2.0) == five
    assert planner.pop_due(five - 1.0, running, 2.0) == []
    assert [(e.job_id, e.due) for e in planner.heap] == [("a", five)]
    assert [(e.job_id, e.due) for e in planner.pop_due(five, running, 2.0)] == [("a", five)]
