"""The soak's invariant checker: what the state database and the target's request log must say.

It reads a finished soak folder (written by ``bench/soak.py``) and knows nothing
of how the chaos was made except what ``soak-events.json`` says (the signals and
when they were sent, which jobs were edited, when the final stop began). Run it
alone on a kept folder to look at a run again:

    .venv/bin/python bench/soak_check.py bench/results/soak-<stamp>

Invariants (each violation is listed with what is needed to find it in the
database and the daemon's log):

- duplicates: one (job, scheduled_for, attempt) row at most (the database has a
  unique index, so the target's log is checked too: a command execution logs
  its (job, scheduled time, attempt); a URL is fetched at most once per attempt).
- lost fires: every instant the schedule produced between the job's first
  sight by the daemon (``jobs_seen.daemon_seen``) and the start of the final
  stop has a row: an attempt, a ``skipped`` row, or a ``missed`` row whose
  ``first_missed..last_missed`` range holds it. The schedule is enumerated with
  ``crawlsched.timing.next_fire``. Jobs edited during the soak are left out.
- orphans: no row left ``running`` after the final graceful stop, no command
  process of the soak still alive.
- overlaps: two executions of one job's command never run at the same time.
- chains: attempts of a run are numbered 1..k without a gap; a failed or
  interrupted last attempt with attempts left has a saved retry or a message
  that says why the chain ends (permanent failure, next run due, paused/removed).
- requests: every request the target saw falls inside an attempt of that job.
- leftovers: no ``.part`` file under ``data/`` after the final stop, no
  traceback or internal error in the daemon's output (``daemon-*.out``).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from bisect import bisect_right
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

UTC = timezone.utc
KEY_DIGITS = 3  # scheduled times are compared rounded to the millisecond
SLACK = 0.25  # seconds: a request logged by the target vs the attempt row's start/end (same clock)
CHAIN_END_REASONS = ("permanent failure", "next run is due", "removed or paused", "paused or removed")
#: Lines of the daemon's output that say crawlsched itself went wrong (not a crawl failing).
INTERNAL_ERROR_MARKS = ("Traceback (most recent call last)", "failed inside crawlsched", "daemon loop:",
                        "--- Logging error ---", "unexpected", "internal error")
MAX_LISTED = 1000  # violations listed per kind (the counts are always complete)


def _key(t: float) -> float:
    return round(float(t), KEY_DIGITS)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def load_jobs(jobs_toml: Path) -> dict[str, Any]:
    from crawlsched.jobfile import parse_text

    return {j.id: j for j in parse_text(jobs_toml.read_text(), machine_tz="UTC").jobs}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a kill of the harness: not the daemon's fault
    return out


class Checker:
    def __init__(self, folder: Path, margin: float = 2.0) -> None:
        self.folder = Path(folder)
        self.home = self.folder / "home"
        self.events = json.loads((self.folder / "soak-events.json").read_text())
        self.margin = margin
        self.violations: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.counts: Counter[str] = Counter()
        db = sqlite3.connect(f"file:{self.home / 'crawlsched.db'}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        self.db = db
        self.runs = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")]
        self.retries = [dict(r) for r in db.execute("SELECT * FROM retries")]
        self.seen = {r["job_id"]: dict(r) for r in db.execute("SELECT * FROM jobs_seen")}
        rows = db.execute("SELECT * FROM daemon WHERE id = 1").fetchall()
        self.daemon = dict(rows[0]) if rows else {}
        self.jobs = load_jobs(self.folder / "home" / "jobs.toml")
        self.requests = read_jsonl(self.folder / "target-requests.jsonl")
        self.churned = set(self.events.get("churned_jobs", []))

    # --- helpers -------------------------------------------------------------

    def violation(self, what: str, /, **detail: Any) -> None:
        self.counts[what] += 1
        if len(self.violations[what]) < MAX_LISTED:
            self.violations[what].append(detail)

    def windows(self, kind: str) -> list[tuple[float, float]]:
        """Spans (signal sent, daemon exited) of the given signal kind ("term" or "kill")."""
        return [(s["sent"], s.get("exited") or s["sent"]) for s in self.events.get("signals", []) if s["kind"] == kind]

    def where(self, t: float) -> str:
        """What the daemon was doing at ``t``: for a violation's detail."""
        for a, b in self.windows("term"):
            if a <= t <= b:
                return f"in a SIGTERM grace window ({_iso(a)} to {_iso(b)})"
        for s in self.events.get("signals", []):
            nxt = s.get("restarted_ready") or s.get("restarted")
            if s.get("exited") and nxt and s["exited"] <= t <= nxt:
                return f"while down after a {s['kind'].upper()} (exit {_iso(s['exited'])}, ready {_iso(nxt)})"
        return "while the daemon ran"

    def neighbours(self, job_id: str, t: float) -> dict[str, Any]:
        """The job's rows just before and just after ``t``: what the daemon did around a lost fire."""
        if not hasattr(self, "_by_job"):
            self._by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in self.runs:
                self._by_job[r["job_id"]].append(r)
            for rows in self._by_job.values():
                rows.sort(key=lambda r: (r["scheduled_for"], r["attempt"]))

        def brief(r: dict[str, Any] | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {"run_id": r["id"], "scheduled_for": _iso(r["scheduled_for"]), "attempt": r["attempt"],
                    "trigger": r["trigger"], "status": r["status"], "started": _iso(r["started_at"]),
                    "finished": _iso(r["finished_at"]), "message": (r["message"] or "")[:120]}

        rows = self._by_job.get(job_id, [])
        before = [r for r in rows if r["scheduled_for"] < t]
        after = [r for r in rows if r["scheduled_for"] > t]
        return {"row_before": brief(before[-1] if before else None), "row_after": brief(after[0] if after else None)}

    # --- invariants ----------------------------------------------------------

    def check(self) -> dict[str, Any]:
        self.check_exits()
        self.check_duplicates()
        self.check_orphans()
        self.check_lost_fires()
        self.check_chains()
        self.check_requests()
        self.check_commands()
        self.check_leftovers()
        return self.report()

    def check_exits(self) -> None:
        """A SIGTERM ends the daemon with 0 within the grace period and the cancel wait; a CLI edit works."""
        for s in [*self.events.get("signals", []), {**self.events["final_stop"], "final": True}]:
            if s["kind"] == "term" and (s.get("rc") != 0 or s.get("hung")):
                self.violation("daemon_bad_exits", pid=s["pid"], sent=_iso(s["sent"]), rc=s.get("rc"),
                               hung=bool(s.get("hung")), final=bool(s.get("final")))
            elif s["kind"] == "kill" and s.get("hung"):
                self.violation("daemon_bad_exits", pid=s["pid"], sent=_iso(s["sent"]), rc=s.get("rc"), hung=True)
        for op in self.events.get("cli_ops", []):
            if op["rc"] != 0:
                self.violation("cli_failures", argv=op["argv"], rc=op["rc"], t=_iso(op["t"]), stderr=op.get("stderr"))

    def check_duplicates(self) -> None:
        seen: Counter[tuple[str, float, int]] = Counter()
        for r in self.runs:
            if r["attempt"] > 0:
                seen[(r["job_id"], _key(r["scheduled_for"]), r["attempt"])] += 1
        for (job, sf, attempt), n in seen.items():
            if n > 1:
                self.violation("duplicate_rows", job=job, scheduled_for=_iso(sf), attempt=attempt, rows=n)

    def check_orphans(self) -> None:
        for r in self.runs:
            if r["status"] == "running":
                self.violation("orphan_rows", run_id=r["id"], job=r["job_id"], scheduled_for=_iso(r["scheduled_for"]),
                               attempt=r["attempt"], started_at=_iso(r["started_at"]), owner_pid=r["owner_pid"])
        for p in self.events.get("leftover_processes", []):
            self.violation("orphan_processes", **p)

    def covered(self) -> tuple[dict[str, Counter], dict[str, list[tuple[float, float, int, int]]]]:
        """Per job: scheduled times with a row (and how many rows), and the missed ranges."""
        points: dict[str, Counter] = defaultdict(Counter)
        ranges: dict[str, list[tuple[float, float, int, int]]] = defaultdict(list)
        for r in self.runs:
            if r["trigger"] in ("manual", "run"):
                continue
            if r["status"] == "missed":
                lo = r["first_missed"] if r["first_missed"] is not None else r["scheduled_for"]
                hi = r["last_missed"] if r["last_missed"] is not None else r["scheduled_for"]
                ranges[r["job_id"]].append((_key(lo), _key(hi), r["missed_count"] or 1, r["id"]))
            elif r["attempt"] <= 1:  # attempt 1 (a run) or 0 (skipped): one row per fire
                points[r["job_id"]][_key(r["scheduled_for"])] += 1
        return points, ranges

    def check_lost_fires(self) -> None:
        from crawlsched import timing

        final = self.events["final_stop"]["sent"]
        handled = self.daemon.get("handled_until")
        end = min(final, handled) if handled else final
        end -= self.margin
        self.lost_end = end
        points, ranges = self.covered()
        added = {a["id"]: a["t"] for a in self.events.get("added_jobs", []) if isinstance(a, dict)}
        expected_total = 0
        for job_id, job in sorted(self.jobs.items()):
            if job_id in self.churned or job.paused:
                self.counts["jobs_left_out"] += 1
                continue
            seen = self.seen.get(job_id)
            if seen is None or seen["daemon_seen"] is None:
                if added.get(job_id, 0.0) < final - 10:  # a job added just before the end may not be read yet
                    self.violation("job_never_seen", job=job_id)
                continue
            anchor = timing.from_epoch(seen["anchor"])
            after = timing.from_epoch(seen["daemon_seen"])
            until = timing.from_epoch(end)
            if until <= after:
                continue
            expected = [f.timestamp() for f in timing.fires_between(job, after, until, anchor)]
            expected_total += len(expected)
            exp_keys = {_key(t) for t in expected}
            job_ranges = ranges.get(job_id, [])
            job_points = points.get(job_id, Counter())
            # Every row must sit on the schedule; every missed row's count must match its range.
            for sf, n in job_points.items():
                if sf not in exp_keys and sf <= _key(end) and sf > _key(seen["daemon_seen"]):
                    self.violation("off_schedule_rows", job=job_id, scheduled_for=_iso(sf), rows=n)
            for lo, hi, count, run_id in job_ranges:
                inside = [t for t in expected if lo <= _key(t) <= hi]
                if hi <= _key(end) and len(inside) != count:
                    self.violation("missed_count_mismatch", job=job_id, run_id=run_id, first=_iso(lo), last=_iso(hi),
                                   missed_count=count, fires_in_range=len(inside))
            lows = sorted(job_ranges)
            for t in expected:
                k = _key(t)
                n_points = job_points.get(k, 0)
                in_ranges = sum(1 for lo, hi, _, _ in lows if lo <= k <= hi)
                n = n_points + in_ranges
                if n == 0:
                    self.violation("lost_fires", job=job_id, kind=job.kind.value, schedule=job.spec, fire=_iso(t),
                                   when=self.where(t), catch_up=job.catch_up.value, **self.neighbours(job_id, t))
                    if "SIGTERM grace" in self.where(t):
                        self.counts["lost_fires_in_grace"] += 1
                elif n > 1:
                    self.violation("fires_recorded_twice", job=job_id, fire=_iso(t), rows=n_points, missed_ranges=in_ranges,
                                   when=self.where(t))
        self.counts["expected_fires"] = expected_total

    def check_chains(self) -> None:
        chains: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
        skipped: set[tuple[str, float]] = set()
        for r in self.runs:
            key = (r["job_id"], _key(r["scheduled_for"]))
            if r["attempt"] > 0:
                chains[key].append(r)
            elif r["status"] == "skipped":
                skipped.add(key)
        pending = {(r["job_id"], _key(r["scheduled_for"])): r for r in self.retries}
        for (job_id, sf), rows in chains.items():
            if job_id in self.churned:
                continue
            rows.sort(key=lambda r: r["attempt"])
            numbers = [r["attempt"] for r in rows]
            if numbers != list(range(1, len(numbers) + 1)):
                self.violation("chain_gaps", job=job_id, scheduled_for=_iso(sf), attempts=numbers)
            last = rows[-1]
            if last["status"] not in ("failed", "interrupted") or last["attempt"] >= last["max_attempts"]:
                continue
            retry = pending.get((job_id, sf))
            if retry is not None and retry["next_attempt"] == last["attempt"] + 1:
                continue
            message = last["message"] or ""
            if any(reason in message for reason in CHAIN_END_REASONS) or (job_id, sf) in skipped:
                continue
            if job_id not in self.jobs:
                continue
            self.violation("chains_incomplete", job=job_id, scheduled_for=_iso(sf), last_attempt=last["attempt"],
                           max_attempts=last["max_attempts"], status=last["status"], message=message,
                           finished_at=_iso(last["finished_at"]), when=self.where(last["finished_at"] or sf))

    def check_requests(self) -> None:
        """URL jobs: each request inside one attempt of its job; each URL at most once per attempt."""
        by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.runs:
            if r["attempt"] > 0 and r["started_at"] is not None:
                by_job[r["job_id"]].append(r)
        for rows in by_job.values():
            rows.sort(key=lambda r: r["started_at"])
        starts = {j: [r["started_at"] for r in rows] for j, rows in by_job.items()}
        per_attempt: Counter[tuple[int, str]] = Counter()
        url_attempts: set[int] = set()
        n_requests = 0
        for req in self.requests:
            if req.get("kind") != "url":
                continue
            n_requests += 1
            job, t = req["job"], req["t"]
            rows = by_job.get(job, [])
            # The attempt row is written before the request is sent (one clock): the newest
            # attempt that started before the request is its attempt.
            job_starts = starts.get(job, [])
            i = bisect_right(job_starts, t) - 1
            row = rows[i] if i >= 0 else None
            if (row is None or row["finished_at"] is not None and t > row["finished_at"] + SLACK) \
                    and i + 1 < len(rows) and job_starts[i + 1] <= t + SLACK:
                row = rows[i + 1]
            if row is None or (row["finished_at"] is not None and t > row["finished_at"] + SLACK):
                self.violation("requests_outside_attempts", job=job, path=req["path"], t=_iso(t),
                               previous_attempt=None if row is None else
                               {"run_id": row["id"], "started": _iso(row["started_at"]), "finished": _iso(row["finished_at"]),
                                "status": row["status"]}, when=self.where(t))
                continue
            per_attempt[(row["id"], req["path"])] += 1
            url_attempts.add(row["id"])
        for (run_id, path), n in per_attempt.items():
            if n > 1:
                self.violation("duplicate_requests", run_id=run_id, path=path, requests=n)
        url_jobs = {j for j, job in self.jobs.items() if job.urls}
        attempts = [r for r in self.runs if r["attempt"] > 0 and r["job_id"] in url_jobs]
        self.counts["url_requests"] = n_requests
        self.counts["url_attempts"] = len(attempts)
        self.requests_per_attempt = round(n_requests / len(attempts), 3) if attempts else None
        # A job of two URLs asks for two per attempt; a retry only for those not yet saved.
        slots = sum(len(self.jobs[r["job_id"]].urls) for r in attempts)
        self.requests_per_url_slot = round(n_requests / slots, 3) if slots else None
        self.max_requests_per_url_attempt = max(per_attempt.values(), default=0)

    def check_commands(self) -> None:
        """Command jobs log (job, scheduled time, attempt) at start and end to the target."""
        rows = {(r["job_id"], _key(r["scheduled_for"]), r["attempt"]) for r in self.runs if r["attempt"] > 0}
        starts: Counter[tuple[str, float, int]] = Counter()
        spans: dict[str, list[tuple[float, float, float, int, int]]] = defaultdict(list)
        begun: dict[tuple[str, float, int, int], float] = {}
        for req in self.requests:
            if req.get("kind") != "cmd":
                continue
            try:
                sf = datetime.fromisoformat(req["sf"]).timestamp()
                key = (req["job"], _key(sf), int(req["attempt"]))
            except (KeyError, ValueError):
                self.violation("bad_command_events", event=req)
                continue
            if req["phase"] == "start":
                starts[key] += 1
                begun[(*key, int(req["pid"]))] = req["t"]
                if key not in rows:
                    self.violation("commands_without_row", job=key[0], scheduled_for=_iso(key[1]), attempt=key[2],
                                   t=_iso(req["t"]), when=self.where(req["t"]))
            elif req["phase"] == "end":
                t0 = begun.get((*key, int(req["pid"])))
                if t0 is not None:
                    spans[key[0]].append((t0, req["t"], key[1], key[2], int(req["pid"])))
        self.counts["command_executions"] = sum(starts.values())
        for (job, sf, attempt), n in starts.items():
            if n > 1:
                self.violation("duplicate_command_runs", job=job, scheduled_for=_iso(sf), attempt=attempt, executions=n)
        for job, items in spans.items():
            items.sort()
            for (a0, a1, asf, aat, apid), (b0, b1, bsf, bat, bpid) in zip(items, items[1:]):
                if b0 < a1 - SLACK:
                    self.violation("overlapping_commands", job=job,
                                   first={"scheduled_for": _iso(asf), "attempt": aat, "pid": apid, "start": _iso(a0), "end": _iso(a1)},
                                   second={"scheduled_for": _iso(bsf), "attempt": bat, "pid": bpid, "start": _iso(b0), "end": _iso(b1)},
                                   when=self.where(b0))

    def check_leftovers(self) -> None:
        """No ``.part`` file under data/ after the final stop; no internal error in the daemon's output."""
        data = self.home / "data"
        if data.exists():
            for part in sorted(data.rglob("*.part")):
                self.violation("stale_part_files", path=str(part.relative_to(self.home)), size=part.stat().st_size)
        for out in sorted(self.folder.glob("daemon-*.out")):
            for n, line in enumerate(out.read_text(errors="replace").splitlines(), 1):
                if any(m in line for m in INTERNAL_ERROR_MARKS):
                    self.violation("daemon_internal_errors", file=out.name, line=n, text=line[:300])

    # --- the figures -----------------------------------------------------------

    def report(self) -> dict[str, Any]:
        ev = self.events
        status = Counter(r["status"] for r in self.runs)
        attempts = sum(1 for r in self.runs if r["attempt"] > 0)
        missed_fires = sum((r["missed_count"] or 0) for r in self.runs if r["status"] == "missed")
        signals = ev.get("signals", [])
        figures = {
            "minutes": round((ev["final_stop"]["sent"] - ev["started"]) / 60, 2),
            "seed": ev.get("seed"),
            "jobs": len(self.jobs),
            "jobs_checked_for_lost_fires": len(self.jobs) - self.counts["jobs_left_out"],
            "kills": sum(1 for s in signals if s["kind"] == "kill"),
            "terms": sum(1 for s in signals if s["kind"] == "term"),
            "cli_edits": len(ev.get("cli_ops", [])),
            "cli_errors": self.counts["cli_failures"],
            "attempts": attempts,
            "rows_by_status": dict(sorted(status.items())),
            "missed_fires": missed_fires,
            "expected_fires": self.counts["expected_fires"],
            "duplicates": self.counts["duplicate_rows"] + self.counts["duplicate_command_runs"] + self.counts["duplicate_requests"],
            "lost_fires": self.counts["lost_fires"],
            "lost_fires_in_grace": self.counts["lost_fires_in_grace"],
            "orphans": self.counts["orphan_rows"] + self.counts["orphan_processes"],
            "overlapping_commands": self.counts["overlapping_commands"],
            "chains_incomplete": self.counts["chains_incomplete"] + self.counts["chain_gaps"],
            "requests_per_attempt": self.requests_per_attempt,
            "requests_per_url_of_an_attempt": self.requests_per_url_slot,
            "max_requests_per_url_per_attempt": self.max_requests_per_url_attempt,
            "url_requests": self.counts["url_requests"],
            "url_attempts": self.counts["url_attempts"],
            "command_executions": self.counts["command_executions"],
            "requests_outside_attempts": self.counts["requests_outside_attempts"],
            "commands_without_row": self.counts["commands_without_row"],
            "off_schedule_rows": self.counts["off_schedule_rows"],
            "fires_recorded_twice": self.counts["fires_recorded_twice"],
            "missed_count_mismatch": self.counts["missed_count_mismatch"],
            "daemon_bad_exits": self.counts["daemon_bad_exits"],
            "stale_part_files": self.counts["stale_part_files"],
            "daemon_internal_errors": self.counts["daemon_internal_errors"],
            "lost_fire_check_ends": _iso(self.lost_end),
        }
        kinds = sorted(self.counts)
        return {
            "figures": figures,
            "violation_counts": {k: self.counts[k] for k in kinds if k in self.violations},
            "violations": {k: v for k, v in sorted(self.violations.items())},
            "ok": not self.violations,
        }


def check(folder: Path, margin: float = 2.0) -> dict[str, Any]:
    return Checker(folder, margin).check()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--margin", type=float, default=2.0, help="seconds before the final stop not checked for lost fires")
    args = ap.parse_args(argv)
    result = check(args.folder, args.margin)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
