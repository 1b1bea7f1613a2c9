"""What a cluster run must leave behind, checked from its history rows and the target's request log.

Pure functions over plain data, so each can be shown to fail on made-up rows
(tests/reliability/test_fault_checks.py) before it is trusted on a real run
(tests/reliability/test_cluster_faults.py). A row is anything answering ``row["name"]`` for the
history's columns (``crawlsched.state.Run`` or a dict): ``job_id, scheduled_for, attempt,
max_attempts, trigger, status, started_at, finished_at, missed_count, first_missed,
last_missed``. Times are epoch seconds.

Each function returns its findings (an empty list: nothing wrong), never raises, so a test can
report every kind of finding at once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

TICK = 0.001  # two instants this close are the same due time (every job's times are sums of floats)
CLOSED = ("success", "failed", "interrupted")
RETRIED = ("failed", "interrupted")
NOT_DUE = ("manual", "run")  # triggers whose scheduled time is a request's instant, not a due time
#: a chain that ended before its max attempts says why in its last attempt's message (SPEC §4: a
#: retry never goes past the next fire; a permanent failure is not retried)
ENDED_EARLY = ("(next run is due)", "not retried)")


def _t(value: float) -> int:
    return round(value / TICK)


def duplicate_attempts(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Each (job, scheduled time, attempt) has at most one attempt row, and each due time is handled
    once: one attempt-1 chain or one skipped row, never both, never two."""
    attempts: Counter = Counter()
    handled: dict[tuple[str, int], list[str]] = defaultdict(list)
    for r in rows:
        key = (r["job_id"], _t(r["scheduled_for"]))
        if r["attempt"] > 0:
            attempts[(*key, r["attempt"])] += 1
            if r["attempt"] == 1:
                handled[key].append(f"attempt 1 ({r['status']})")
        elif r["status"] == "skipped":
            handled[key].append("skipped")
    found = [f"{job} @ {t * TICK:.3f} attempt {a}: {n} rows" for (job, t, a), n in sorted(attempts.items()) if n > 1]
    found += [f"{job} @ {t * TICK:.3f} handled {len(how)} times: {', '.join(how)}"
              for (job, t), how in sorted(handled.items()) if len(how) > 1 and not all(h.startswith("attempt") for h in how)]
    return found


def due_times(anchor: float, period: float, start: float, end: float) -> list[float]:
    """An ``every`` job's due times in [start, end]: anchor + k × period."""
    if end < start:
        return []
    k = max(0, int((start - anchor) // period))
    out = []
    while True:
        t = anchor + k * period
        if t > end + TICK / 2:
            return out
        if t >= start - TICK / 2:
            out.append(t)
        k += 1


def lost_fires(rows: Iterable[Mapping[str, Any]], periods: Mapping[str, float], start: float, end: float,
               anchors: Mapping[str, float] | None = None) -> list[str]:
    """Every due time of every job in [start, end] has a row: an attempt (of any number: a chain
    from that time), a skipped row, or a missed row whose range holds it. ``periods`` gives each
    ``every`` job's period; its anchor is ``anchors[job]`` (the state's), else its earliest row's
    time. A row at a time that is not due (off the job's grid) is a finding too."""
    by_job: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["trigger"] not in NOT_DUE:
            by_job[r["job_id"]].append(r)
    found: list[str] = []
    for job, period in sorted(periods.items()):
        mine = by_job.get(job, [])
        times = {_t(r["scheduled_for"]) for r in mine if r["status"] != "missed"}
        ranges = [(_t(r["first_missed"]), _t(r["last_missed"])) for r in mine
                  if r["status"] == "missed" and r["first_missed"] is not None]
        anchor = (anchors or {}).get(job)
        if anchor is None:
            firsts = [r["scheduled_for"] for r in mine] + [r["first_missed"] for r in mine if r["first_missed"] is not None]
            if not firsts:
                found.append(f"{job}: no row at all")
                continue
            anchor = min(firsts)
        lost = [t for t in due_times(anchor, period, start, end)
                if _t(t) not in times and not any(lo <= _t(t) <= hi for lo, hi in ranges)]
        if lost:
            found.append(f"{job}: {len(lost)} due time(s) without a row: "
                         + ", ".join(f"{t:.3f}" for t in lost[:5]) + (" …" if len(lost) > 5 else ""))
        off = sorted(t for t in times if abs(((t * TICK - anchor) / period) - round((t * TICK - anchor) / period)) * period > 2 * TICK)
        if off:
            found.append(f"{job}: {len(off)} row(s) at times that are not due: "
                         + ", ".join(f"{t * TICK:.3f}" for t in off[:5]))
    return found


def incomplete_chains(rows: Iterable[Mapping[str, Any]], pending: Iterable[tuple[str, float, int]] = ()) -> list[str]:
    """Every chain (the attempts of one job and scheduled time) is complete: numbered 1..n without a
    gap, each attempt before the last failed or interrupted, and the last one succeeded, or failed
    or was interrupted at its max attempts or ended early saying why (:data:`ENDED_EARLY`), or
    continues: ``pending`` holds (job, scheduled time,
    next attempt) of each saved retry. A chain still ``running`` is a finding (the caller lets the
    run settle first)."""
    chains: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["attempt"] > 0:
            chains[(r["job_id"], _t(r["scheduled_for"]))].append(r)
    waiting = {(job, _t(t), n) for job, t, n in pending}
    found: list[str] = []
    for (job, t), chain in sorted(chains.items()):
        chain.sort(key=lambda r: r["attempt"])
        where = f"{job} @ {t * TICK:.3f}"
        numbers = [r["attempt"] for r in chain]
        if sorted(set(numbers)) != list(range(1, max(numbers) + 1)):
            found.append(f"{where}: attempts {numbers} (not 1..{max(numbers)})")
            continue
        for r in chain[:-1]:
            if r["status"] not in RETRIED:
                found.append(f"{where}: attempt {r['attempt']} is {r['status']} but attempt {r['attempt'] + 1} followed")
        last = chain[-1]
        n, status = last["attempt"], last["status"]
        if status == "success":
            continue
        if status in RETRIED and (n >= last["max_attempts"] or any(why in (last["message"] or "") for why in ENDED_EARLY)):
            continue
        if status in RETRIED and (job, t, n + 1) in waiting:
            continue
        if status in RETRIED:
            found.append(f"{where}: attempt {n}/{last['max_attempts']} {status} and no attempt {n + 1} (row or saved retry)")
        else:
            found.append(f"{where}: attempt {n}/{last['max_attempts']} left {status}")
    return found


@dataclass
class RequestCount:
    """The target's requests set against the attempts that made them."""

    over: list[str] = field(default_factory=list)  #: attempts that made more requests than the job has URLs
    stray: list[str] = field(default_factory=list)  #: requests no attempt of their job was running for
    excess: int = 0  #: requests beyond the URLs of their attempts, strays included
    excess_at: list[float] = field(default_factory=list)  #: when each of those requests arrived

    def findings(self, allowed: int = 0) -> list[str]:
        """Nothing, when the excess is within ``allowed`` (one per fenced zombie)."""
        if self.excess <= allowed:
            return []
        return [f"{self.excess} request(s) beyond the attempts' URLs ({allowed} allowed for fenced zombies)",
                *self.over, *self.stray]


def count_requests(rows: Iterable[Mapping[str, Any]], hits: Iterable[tuple[float, str]], urls: Mapping[str, int],
                   slack: float = 0.25) -> RequestCount:
    """Each request (server time, job id) belongs to the attempt of its job that was running then:
    started at or before it (``slack`` s for clock reading order) and not finished before it. A job
    never overlaps itself, so there is one such attempt; a request with none, or beyond its
    attempt's ``urls[job]``, is excess: only a fenced zombie (a frozen worker that woke after its
    attempt was settled and went on to a next URL) may make one."""
    attempts: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["attempt"] > 0 and r["started_at"] is not None and r["job_id"] in urls:
            attempts[r["job_id"]].append(r)
    for chain in attempts.values():
        chain.sort(key=lambda r: r["started_at"])
    per: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    out = RequestCount()
    for when, job in sorted(hits):
        if job not in urls:
            continue
        owner = None
        for pad in (0.0, slack):  # the attempt running then; only failing that, one within the slack
            for r in attempts.get(job, []):
                if r["started_at"] - pad <= when and (r["finished_at"] is None or when <= r["finished_at"] + pad):
                    owner = r  # the latest one that covers it: a retry started right as the last ended
            if owner is not None:
                break
        if owner is None:
            out.stray.append(f"{job}: a request at {when:.3f} while no attempt of it ran")
            out.excess += 1
            out.excess_at.append(when)
            continue
        per[(job, _t(owner["scheduled_for"]), owner["attempt"])].append(when)
    for (job, t, a), times in sorted(per.items()):
        if len(times) > urls[job]:
            out.over.append(f"{job} @ {t * TICK:.3f} attempt {a}: {len(times)} requests for {urls[job]} URL(s)")
            out.excess += len(times) - urls[job]
            out.excess_at += times[urls[job]:]
    return out
