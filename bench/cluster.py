"""The harness for queue-based systems: a scheduler that hands fires to N worker processes.

Stdlib only, so that it runs in any venv: bench/celery_peer.py drives Celery with it (in
bench/.venv-peers), and the crawlsched cluster (daemon + `crawlsched worker` on PostgreSQL)
plugs into the same driver as another `System`. Same burst, same lateness definition, same
output rows; see bench/README.md ("Queue-based systems").

A `System` implements two measurements; the driver picks the instants, runs the HTTP target,
and turns what the system returns into rows:

- `burst(workers, jobs, burst, at, workdir) -> BurstResult`: start the scheduler with `jobs`
  entries, entries 0..burst-1 due at `at` (a whole UTC minute, since both Celery's crontab and
  crawlsched's cron are minute-grained), the rest at daily minutes 1 h to 23 h away, and
  `workers` worker processes; return, for each burst entry that started, (entry id, start ns):
  `time.time_ns()` taken first thing when the task body / attempt starts in a worker. Lateness
  is start - at.
- `throughput(workers, kind, n, url, workdir) -> list[Record]`: `n` tasks of `kind` ("noop",
  or "http": one GET of `url` + `/<id>` to the target, which answers after 50 ms), queued
  before the workers take them; return (id, start ns, end ns) of each task that ran. Rate is
  n / (last end - first start): the time the workers were busy with them, without start-up.

`System.name` names the rows; `System.versions` is reported with them.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Protocol

from common import lateness_summary, next_minute, sleep_until


@dataclass
class Record:
    id: int
    start_ns: int
    end_ns: int


@dataclass
class BurstResult:
    starts: list[tuple[int, int]]  # (entry id, start ns) of every started burst entry
    scheduler_ready_s: float | None = None  # scheduler process start -> ready
    extra: dict = field(default_factory=dict)  # system-specific figures (e.g. the scheduler's CPU)
    at: int | None = None  # the instant used, when the system had to move to a later one


class System(Protocol):
    name: str
    versions: dict

    def burst_lead(self, jobs: int, workers: int) -> float: ...  # s needed before the instant
    def burst(self, workers: int, jobs: int, burst: int, at: int, workdir: Path) -> BurstResult: ...
    def throughput(self, workers: int, kind: str, n: int, url: str, workdir: Path) -> list[Record]: ...


@dataclass
class Row:
    """One output row: the same keys for every system, so tables line up."""
    system: str
    measure: str  # "burst" | "noop" | "http"
    workers: int
    n: int  # tasks (or burst entries) expected
    started: int  # distinct ones that started
    duplicates: int  # starts beyond the first of one id
    p50_ms: float | None = None  # burst: lateness
    p99_ms: float | None = None
    max_ms: float | None = None
    per_s: float | None = None  # noop / http: tasks per second
    window_s: float | None = None  # noop / http: first start -> last end
    requests: int | None = None  # http: requests the target saw
    extra: dict = field(default_factory=dict)


class SlowTarget(ThreadingHTTPServer):
    """127.0.0.1 target answering every GET after `delay` s, counting requests (like bench's others)."""
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, delay: float = 0.05) -> None:
        self.requests = 0
        self.lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(h):  # noqa: N805
                time.sleep(delay)
                with target.lock:
                    target.requests += 1
                body = b"ok\n"
                h.send_response(200)
                h.send_header("Content-Type", "text/plain")
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body)

            def log_message(h, *a):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def start(self) -> str:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
        return f"http://127.0.0.1:{self.server_address[1]}"


def burst_row(system: str, workers: int, burst: int, at: int, res: BurstResult) -> Row:
    seen: dict[int, int] = {}
    dup = 0
    for i, t in res.starts:
        if i in seen:
            dup += 1
            seen[i] = min(seen[i], t)
        else:
            seen[i] = t
    lat = sorted((t / 1e9 - at) * 1000.0 for i, t in seen.items() if 0 <= i < burst)
    s = lateness_summary(lat)
    extra = dict(res.extra, lateness_ms=lat, at=at)
    if res.scheduler_ready_s is not None:
        extra["scheduler_ready_s"] = res.scheduler_ready_s
    return Row(system, "burst", workers, burst, len(lat), dup, s["p50_ms"], s["p99_ms"], s["max_ms"],
               extra=extra)


def throughput_row(system: str, workers: int, kind: str, n: int, recs: list[Record],
                   requests: int | None = None) -> Row:
    ids = [r.id for r in recs]
    started = len(set(ids))
    window = ((max(r.end_ns for r in recs) - min(r.start_ns for r in recs)) / 1e9) if recs else None
    per_s = started / window if window else None
    durs = sorted((r.end_ns - r.start_ns) / 1e6 for r in recs)
    extra = {"task_ms_p50": statistics.median(durs) if durs else None}
    return Row(system, kind, workers, n, started, len(ids) - started, per_s=per_s, window_s=window,
               requests=requests, extra=extra)


def measure(system: System, workdir: Path, *, workers=(1, 2, 4), jobs: int = 10000, burst: int = 200,
            noop_tasks: int = 2000, http_tasks_per_worker: int = 100, http_delay: float = 0.05,
            log: Callable[[str], None] = print) -> list[Row]:
    """Per worker count: noop throughput, HTTP throughput, then the burst at the next free minute."""
    workdir = Path(workdir)
    target = SlowTarget(http_delay)
    url = target.start()
    rows: list[Row] = []
    try:
        for n in workers:
            wd = workdir / f"w{n}"
            wd.mkdir(parents=True, exist_ok=True)
            log(f"{system.name}: {n} worker(s): {noop_tasks} no-op tasks")
            recs = system.throughput(n, "noop", noop_tasks, url, wd)
            rows.append(throughput_row(system.name, n, "noop", noop_tasks, recs))
            log(f"  {_brief(rows[-1])}")
            k = http_tasks_per_worker * n
            log(f"{system.name}: {n} worker(s): {k} HTTP tasks ({http_delay * 1000:.0f} ms answers)")
            before = target.requests
            recs = system.throughput(n, "http", k, url, wd)
            rows.append(throughput_row(system.name, n, "http", k, recs, requests=target.requests - before))
            log(f"  {_brief(rows[-1])}")
            at = next_minute(time.time() + system.burst_lead(jobs, n))
            log(f"{system.name}: {n} worker(s): burst of {burst} among {jobs:,} entries at "
                f"{time.strftime('%H:%M:%S', time.gmtime(at))}Z")
            res = system.burst(n, jobs, burst, at, wd)
            rows.append(burst_row(system.name, n, burst, res.at or at, res))
            log(f"  {_brief(rows[-1])}")
    finally:
        target.shutdown()
        target.server_close()
    return rows


def _brief(r: Row) -> str:
    miss = r.n - r.started
    tail = (f", {miss} MISSING" if miss else "") + (f", {r.duplicates} DUPLICATED" if r.duplicates else "")
    if r.measure == "burst":
        return f"lateness p50 {r.p50_ms:.1f} / p99 {r.p99_ms:.1f} / max {r.max_ms:.1f} ms{tail}" \
            if r.p50_ms is not None else f"nothing started{tail}"
    return (f"{r.per_s:.1f} tasks/s over {r.window_s:.2f} s{tail}" if r.per_s else f"no rate{tail}")


def rows_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


TABLE_FIGURES = [  # (label, measure, key)
    ("burst lateness p50 (ms)", "burst", "p50_ms"),
    ("burst lateness p99 (ms)", "burst", "p99_ms"),
    ("burst lateness max (ms)", "burst", "max_ms"),
    ("no-op tasks per s", "noop", "per_s"),
    ("HTTP tasks per s (50 ms answers)", "http", "per_s"),
]


def table(rows: list[dict], title: str) -> tuple[str, list[str], list[list[str]]]:
    """One table for every system's rows (dicts as rows_json makes them): a line per system and
    figure, a column per worker count; missing or duplicated starts are a line of their own."""
    workers = sorted({r["workers"] for r in rows})
    systems = list(dict.fromkeys(r["system"] for r in rows))
    cols = ["system", "figure"] + [f"{w} worker{'s' if w > 1 else ''}" for w in workers]
    out = []
    for sysname in systems:
        mine = [r for r in rows if r["system"] == sysname]
        for label, measure, key in TABLE_FIGURES:
            cells = []
            for w in workers:
                r = next((r for r in mine if r["measure"] == measure and r["workers"] == w), None)
                cells.append("—" if r is None or r.get(key) is None else _fmt(r[key]))
            if any(c != "—" for c in cells):
                out.append([sysname, label] + cells)
        bad = [r for r in mine if r["started"] != r["n"] or r["duplicates"]]
        if bad:
            cells = []
            for w in workers:
                rs = [r for r in bad if r["workers"] == w]
                cells.append(", ".join(f"{r['measure']}: {r['n'] - r['started']} missing, {r['duplicates']} dup"
                                       for r in rs) or "—")
            out.append([sysname, "NOT STARTED / DUPLICATED"] + cells)
    return title, cols, out


def _fmt(v: float) -> str:
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}"


__all__ = ["BurstResult", "Record", "Row", "SlowTarget", "System", "burst_row", "measure", "next_minute",
           "rows_json", "sleep_until", "table", "throughput_row"]
