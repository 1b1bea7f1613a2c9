#!/usr/bin/env python3
"""crawlsched benchmark against its peers, on the same run, same jobs, same machine.

    .venv/bin/python bench/run.py [--quick] [--runs N] [--jobs N] [--idle-seconds S]
                                  [--only NAMES] [--markdown]

NAMES (comma-separated): crawlsched, apscheduler, schedule-tick, schedule-idle, floor,
peers (= the four non-crawlsched ones), single (one job due every second, every target),
cli, http, all, celery (Celery beat + workers over a redis-server the bench starts; not in
`all`: name it), cluster (crawlsched on PostgreSQL: a daemon with executor = "workers" and
`crawlsched worker` processes, bench/crawlsched_cluster.py; not in `all`: name it, with celery
for the side-by-side table: `--only cluster,celery`).
Default: all (full) / crawlsched,peers,cli (--quick).

Run with the project venv's python: crawlsched's daemon and CLI are started with it.
The peers (APScheduler 3.11, schedule 1.2) run in bench/.venv-peers, created here if missing.
Measurements run one at a time; see bench/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import crawlsched_bench as cb  # noqa: E402
from common import (Watcher, lateness_summary, machine_info, measure_idle, next_minute,  # noqa: E402
                    next_second, sleep_until, stop_process)

PEERS_VENV = BENCH / ".venv-peers"
PEERS_PY = PEERS_VENV / "bin" / "python"
PEER_REQS = ["apscheduler==3.11.*", "schedule==1.2.*"]
CELERY_REQS = ["celery[redis]==5.*", "celery-redbeat==2.*", "requests==2.*"]  # only for --only celery
RESULTS = BENCH / "results"

TARGETS = ["crawlsched", "apscheduler", "schedule-tick", "schedule-idle", "floor"]
PEERS = ["apscheduler", "schedule-tick", "schedule-idle", "floor"]
REAL_PEERS = ["apscheduler", "schedule-tick", "schedule-idle"]  # "best peer" is one of these
LABELS = {"crawlsched": "crawlsched", "apscheduler": "APScheduler", "schedule-tick": "schedule tick",
          "schedule-idle": "schedule idle", "floor": "floor"}
ALL_NAMES = TARGETS + ["single", "cli", "http", "celery", "cluster"]
IN_ALL = TARGETS + ["single", "cli", "http"]  # "celery" needs a redis-server: only when named
CELERY_SKIP_EXIT = 3  # bench/celery_peer.py: it could not start Redis
CLUSTER_SKIP_EXIT = 3  # bench/crawlsched_cluster.py: no PostgreSQL server, or no `crawlsched worker`
SINGLE = "single:"  # result group prefix of the one-job measurements

FIGURES = [  # (label, key in a run's result, shown for the floor)
    ("lateness p50 (ms)", "p50_ms", True),
    ("lateness p99 (ms)", "p99_ms", True),
    ("lateness max (ms)", "max_ms", True),
    ("idle CPU (% of a core)", "idle_cpu_pct", False),
    ("RSS (MiB)", "rss_mib", False),
    ("start to ready (s)", "ready_s", False),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- peers venv

def ensure_peers_venv() -> dict:
    check = "import importlib.metadata as m; print(m.version('APScheduler'), m.version('schedule'))"
    ok = False
    if PEERS_PY.exists():
        r = subprocess.run([str(PEERS_PY), "-c", check], capture_output=True, text=True)
        if r.returncode == 0:
            aps, sch = r.stdout.split()
            ok = aps.startswith("3.11.") and sch.startswith("1.2.")
    if not ok:
        log(f"creating {PEERS_VENV.relative_to(BENCH.parent)} and installing {' '.join(PEER_REQS)}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)
        subprocess.run([str(PEERS_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *PEER_REQS], check=True)
        r = subprocess.run([str(PEERS_PY), "-c", check], capture_output=True, text=True, check=True)
        aps, sch = r.stdout.split()
    return {"APScheduler": aps, "schedule": sch}


def ensure_celery() -> dict:
    """Celery 5 and the redis client in the same peers' venv (installed on first use)."""
    versions = ensure_peers_venv()
    check = ("import importlib.metadata as m; print(m.version('celery'), m.version('redis'), "
             "m.version('celery-redbeat'))")
    r = subprocess.run([str(PEERS_PY), "-c", check], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.startswith("5."):
        log(f"installing {' '.join(CELERY_REQS)} into {PEERS_VENV.relative_to(BENCH.parent)}")
        subprocess.run([str(PEERS_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *CELERY_REQS], check=True)
        r = subprocess.run([str(PEERS_PY), "-c", check], capture_output=True, text=True, check=True)
    celery, redis, redbeat = r.stdout.split()
    return dict(versions, celery=celery, redis=redis, redbeat=redbeat)


def run_celery(cfg, workdir: Path) -> dict:
    """bench/celery_peer.py in the peers' venv; it starts and stops its own redis-server."""
    wd = workdir / "celery"
    wd.mkdir(parents=True, exist_ok=True)
    out = wd / "result.json"
    argv = [str(PEERS_PY), str(BENCH / "celery_peer.py"), "--out", str(out), "--workers", cfg.celery_workers,
            "--beat", cfg.celery_beat, "--burst-task", cfg.celery_burst_task,
            "--jobs", str(cfg.jobs), "--burst", str(cfg.burst), "--workdir", str(wd)]
    env = dict(os.environ, TZ="UTC", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    with open(wd / "celery_peer.log", "w") as logf:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            logf.write(line)
            sys.stderr.write("  " + line)
        rc = proc.wait()
    if rc == CELERY_SKIP_EXIT:
        reason = json.loads(out.read_text())["skipped"]
        return {"skipped": reason, "warning": f"skipped: {reason}"}
    if rc != 0:
        raise RuntimeError(f"celery_peer.py exited {rc} (log: {wd / 'celery_peer.log'})")
    return json.loads(out.read_text())


def run_cluster(cfg, workdir: Path) -> dict:
    """bench/crawlsched_cluster.py with this (the project's) venv; it starts its own PostgreSQL."""
    wd = workdir / "cluster"
    wd.mkdir(parents=True, exist_ok=True)
    out = wd / "result.json"
    argv = [sys.executable, str(BENCH / "crawlsched_cluster.py"), "--out", str(out), "--workers", cfg.cluster_workers,
            "--jobs", str(cfg.jobs), "--burst", str(cfg.burst), "--workdir", str(wd),
            "--concurrency", str(cfg.cluster_concurrency)]
    env = dict(os.environ, TZ="UTC", PYTHONDONTWRITEBYTECODE="1")
    with open(wd / "crawlsched_cluster.log", "w") as logf:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            logf.write(line)
            sys.stderr.write("  " + line)
        rc = proc.wait()
    if rc == CLUSTER_SKIP_EXIT:
        reason = json.loads(out.read_text())["skipped"]
        return {"skipped": reason, "warning": f"skipped: {reason}"}
    if rc != 0:
        raise RuntimeError(f"crawlsched_cluster.py exited {rc} (log: {wd / 'crawlsched_cluster.log'})")
    return json.loads(out.read_text())


def queue_rows(results: dict[str, list[dict]]) -> list[dict]:
    """The queue systems' rows of this run, crawlsched's cluster first, for one table."""
    rows: list[dict] = []
    for group in ("cluster", "celery"):
        done = [r for r in results.get(group, []) if r.get("ok") and r.get("rows")]
        if done:
            rows += done[0]["rows"]
    return rows


# --------------------------------------------------------------------------- one peer run

def spawn_peer(argv: list[str], log_path: Path) -> tuple[subprocess.Popen, Watcher]:
    """bench/peers.py in the peers' venv (UTC, nothing of the project's PYTHONPATH), output logged."""
    env = dict(os.environ, TZ="UTC", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, Watcher(proc, log_path, "READY")


def finish_peer(what: str, proc: subprocess.Popen, watcher: Watcher, out: Path, timeout: float) -> dict:
    """Wait for a peer run to end and read its result; it is stopped if it has not ended."""
    try:
        proc.wait(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} exited {proc.returncode}:\n" + watcher.tail_text())
        return json.loads(out.read_text())
    finally:
        stop_peer(proc, watcher)


def stop_peer(proc: subprocess.Popen, watcher: Watcher) -> None:
    if proc.poll() is None:
        stop_process(proc)
    watcher.close()


def run_peer(peer: str, at: int, cfg, workdir: Path) -> dict:
    out = workdir / f"{peer}-{at}.json"
    argv = [str(PEERS_PY), str(BENCH / "peers.py"), "--peer", peer, "--jobs", str(cfg.jobs),
            "--burst", str(cfg.burst), "--at", str(at), "--out", str(out),
            "--idle-seconds", str(cfg.idle_seconds), "--floor-mode", cfg.floor_mode]
    t0 = time.perf_counter()
    proc, watcher = spawn_peer(argv, workdir / f"{peer}-{at}.log")
    res: dict = {"target": peer, "jobs": cfg.jobs, "burst": cfg.burst, "at": at}
    try:
        while not watcher.found.wait(0.1):
            if proc.poll() is not None:
                raise RuntimeError(f"{peer} exited ({proc.returncode}) before READY:\n"
                                   + watcher.tail_text())
            if time.perf_counter() - t0 > 180:
                raise RuntimeError(f"{peer}: no READY within 180 s")
        res["ready_s"] = watcher.found_at - t0
        res["ready_left_s"] = at - time.time()
        res.update(measure_idle(proc.pid, cfg.settle, cfg.idle_seconds, must_end_by=at - 1.0))
    except BaseException:
        stop_peer(proc, watcher)
        raise
    data = finish_peer(peer, proc, watcher, out, timeout=max(5.0, at + 45 - time.time()))
    res.update({k: data[k] for k in ("lateness_ms", "missing", "unexpected", "early", "setup_s",
                                     "versions", "floor_mode")})
    res.update(lateness_summary(data["lateness_ms"]))
    if data["missing"] or data["unexpected"] or data["early"]:
        res["warning"] = (f"missing {data['missing']}, unexpected {data['unexpected']}, "
                          f"early {data['early']}")
    return res


def run_peer_single(peer: str, cfg, workdir: Path) -> dict:
    """One job due every second in a peer process: the lateness of its first fires."""
    at = next_second(time.time() + 1.5 + cfg.settle)  # the process starts in well under 1.5 s
    out = workdir / f"single-{peer}-{at}.json"
    argv = [str(PEERS_PY), str(BENCH / "peers.py"), "--peer", peer, "--single", str(cfg.single_fires),
            "--at", str(at), "--out", str(out)]
    proc, watcher = spawn_peer(argv, workdir / f"single-{peer}-{at}.log")
    data = finish_peer(f"{peer} --single", proc, watcher, out, timeout=cfg.single_fires + 60)
    res = {"target": peer, "fires": cfg.single_fires, "at": at, "lateness_ms": data["lateness_ms"],
           "missing": data["missing"], "early": data["early"]}
    res.update(lateness_summary(data["lateness_ms"]))
    if data["missing"] or data["early"]:
        res["warning"] = f"missing {data['missing']} of {cfg.single_fires} fires, early {data['early']}"
    return res


# --------------------------------------------------------------------------- task planning

@dataclass
class Task:
    name: str
    kind: str  # "minute": needs a whole-minute instant; "second": whole second; "plain": no instant
    run: Callable  # (at) -> dict for timed kinds, () -> dict for plain
    lead: Callable[[], float] = lambda: 0.0  # s needed between start and the instant
    est: Callable[[], float] = lambda: 5.0  # s the whole task takes (for gap filling)
    group: str = ""
    meta: dict = field(default_factory=dict)


class Runner:
    def __init__(self, cfg, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        # start-to-ready estimates (s), refined from observations
        n = cfg.jobs / 10000
        self.startup = {"crawlsched": 4 + 8 * n, "apscheduler": 0.6 + 1.5 * n, "schedule-tick": 0.5 + 0.5 * n,
                        "schedule-idle": 0.5 + 0.5 * n, "floor": 0.5}
        self.seen: dict[str, list[float]] = {}
        self.results: dict[str, list[dict]] = {}
        self.errors: list[str] = []

    def observe_ready(self, target: str, ready_s: float | None) -> None:
        if ready_s is None:
            return
        self.seen.setdefault(target, []).append(ready_s)
        self.startup[target] = max(self.seen[target]) * 1.3 + 0.5

    def lead(self, target: str, idle: bool = True) -> float:
        base = self.startup[target] + 1.0
        return base + (self.cfg.settle + self.cfg.idle_seconds + 1.0 if idle else 1.0)

    def execute(self, task: Task, at: int | None) -> None:
        when = f" (instant {time.strftime('%H:%M:%S', time.gmtime(at))}Z)" if at else ""
        log(f"{task.name}{when}")
        t0 = time.perf_counter()
        try:
            res = task.run(at) if at is not None else task.run()
            res["ok"] = True
        except Exception as e:  # keep going; report at the end
            res = {"ok": False, "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()}
            self.errors.append(f"{task.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            log(f"  FAILED: {res['error']}")
        res["task_s"] = time.perf_counter() - t0
        res.update(task.meta)
        target = task.group
        self.results.setdefault(target, []).append(res)
        if res.get("ok"):
            if not target.startswith(SINGLE):  # a one-job daemon starts faster than the N-job one
                self.observe_ready(target if target in self.startup else "crawlsched", res.get("ready_s"))
            brief = []
            for k, fmtk in (("p50_ms", "p50 {:.2f} ms"), ("p99_ms", "p99 {:.2f} ms"),
                            ("idle_cpu_pct", "idle {:.4f} %"), ("last_arrival_ms", "last arrival {:.0f} ms"),
                            ("cold_ms", "cold {:.0f} ms"), ("median_ms", "warm median {:.0f} ms")):
                if res.get(k) is not None:
                    brief.append(fmtk.format(res[k]))
            own = res.get("command_clock") or {}
            if own.get("n"):
                brief.append(f"at the command's clock p50 {own['p50_ms']:.2f} / p99 {own['p99_ms']:.2f} ms")
            if res.get("rss_kb"):
                brief.append(f"RSS {res['rss_kb'] / 1024:.1f} MiB")
            if res.get("warning"):
                brief.append("WARNING " + res["warning"])
            log("  " + ", ".join(brief) + f" [{res['task_s']:.1f} s]")

    def plan_and_run(self, timed: list[Task], fillers: list[Task]) -> None:
        """Minute tasks in order; the waits before their instants are filled with other tasks."""
        fillers = list(fillers)
        for task in timed:
            while True:
                lead = task.lead()
                at = next_minute(time.time() + lead)
                while fillers and time.time() + fillers[0].est() + 1.0 < at - lead:
                    self._run_filler(fillers.pop(0))
                if time.time() + lead <= at:
                    break
            sleep_until(at - lead)
            self.execute(task, at)
        for f in fillers:
            self._run_filler(f)

    def _run_filler(self, task: Task) -> None:
        if task.kind == "second":
            self.execute(task, next_second(time.time() + task.lead()))
        else:
            self.execute(task, None)


# --------------------------------------------------------------------------- reporting

def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.01:
        return f"{v:.3f}"
    return f"{v:.2g}"


def agg(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def cell(a: dict | None) -> str:
    if a is None:
        return "—"
    if a["n"] == 1:
        return fmt(a["median"])
    return f"{fmt(a['median'])} ({fmt(a['min'])}–{fmt(a['max'])})"


def summarize(results: dict[str, list[dict]]) -> dict:
    summary: dict = {}
    for target in TARGETS:
        runs = [r for r in results.get(target, []) if r.get("ok")]
        for r in runs:
            r["rss_mib"] = r["rss_kb"] / 1024 if r.get("rss_kb") else None
        summary[target] = {key: agg([r.get(key) for r in runs]) for _, key, _ in FIGURES}
        summary[target]["runs_ok"] = len(runs)
        summary[target]["runs_failed"] = len(results.get(target, [])) - len(runs)
    for _, key, _ in FIGURES:
        best = None
        for p in REAL_PEERS:
            a = summary[p].get(key)
            if a and (best is None or a["median"] < best[1]):
                best = (p, a["median"])
        cs = summary["crawlsched"].get(key)
        summary.setdefault("ratio", {})[key] = (
            {"best_peer": best[0], "ratio": cs["median"] / best[1] if best[1] else None}
            if best and cs else None)
    single: dict = {}
    for target in TARGETS:
        runs = [r for r in results.get(SINGLE + target, []) if r.get("ok")]
        single[target] = {key: agg([r.get(key) for r in runs]) for key in ("p50_ms", "p99_ms", "max_ms")}
        single[target]["runs_ok"] = len(runs)
        single[target]["runs_failed"] = len(results.get(SINGLE + target, [])) - len(runs)
    summary["single"] = single
    cli = {}
    for r in results.get("cli", []):
        cli[r["name"]] = r
    summary["cli"] = cli
    http = [r for r in results.get("http", []) if r.get("ok")]
    summary["http"] = {
        "last_arrival_ms": agg([r.get("last_arrival_ms") for r in http]),
        "p50_arrival_ms": agg([r.get("p50_arrival_ms") for r in http]),
        "requests_loop_ms": agg([r.get("requests_loop_ms") for r in http]),
        "runs_ok": len(http), "runs_failed": len(results.get("http", [])) - len(http),
    }
    return summary


def tables(summary: dict, cfg) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    cols = ["figure"] + [LABELS[t] for t in TARGETS] + ["crawlsched / best peer"]
    rows = []
    for label, key, floor_too in FIGURES:
        if all(summary[t].get(key) is None for t in TARGETS):
            continue
        row = [label]
        for t in TARGETS:
            row.append(cell(summary[t].get(key)) if (t != "floor" or floor_too) else "—")
        r = summary["ratio"].get(key)
        if r and r["ratio"] is not None:
            row.append(f"{r['ratio']:.2f}× ({LABELS[r['best_peer']]})")
        elif r:
            row.append(f"n/a ({LABELS[r['best_peer']]}: 0)")
        else:
            row.append("—")
        rows.append(row)
    runs = ", ".join(f"{LABELS[t]} {summary[t]['runs_ok']}" + (f"+{summary[t]['runs_failed']} failed"
                                                                   if summary[t]["runs_failed"] else "")
                     for t in TARGETS if summary[t]["runs_ok"] or summary[t]["runs_failed"])
    if rows:
        out.append((f"{cfg.jobs:,} jobs, {cfg.burst} due in the same second; idle window "
                    f"{cfg.idle_seconds:g} s; median (min–max) over runs [{runs}]", cols, rows))
    single = summary["single"]
    if any(single[t]["runs_ok"] for t in TARGETS):
        rows = []
        for label, key in (("lateness p50 (ms)", "p50_ms"), ("lateness p99 (ms)", "p99_ms"),
                           ("lateness max (ms)", "max_ms")):
            row = [label] + [cell(single[t].get(key)) for t in TARGETS]
            peers = [(single[p][key]["median"], p) for p in REAL_PEERS if single[p].get(key)]
            cs = single["crawlsched"].get(key)
            if peers and cs and min(peers)[0]:
                row.append(f"{cs['median'] / min(peers)[0]:.2f}× ({LABELS[min(peers)[1]]})")
            else:
                row.append("—")
            rows.append(row)
        runs = ", ".join(f"{LABELS[t]} {single[t]['runs_ok']}" + (f"+{single[t]['runs_failed']} failed"
                                                                     if single[t]["runs_failed"] else "")
                         for t in TARGETS if single[t]["runs_ok"] or single[t]["runs_failed"])
        out.append((f"One job, due every second: lateness of {cfg.single_fires} fires per run; "
                    f"median (min–max) over runs [{runs}]",
                    ["figure"] + [LABELS[t] for t in TARGETS] + ["crawlsched / best peer"], rows))
    if summary["cli"]:
        floor = summary["cli"].get("python -c 'import typer, rich' (floor)")
        rows = []
        for name, r in summary["cli"].items():
            if not r.get("ok"):
                rows.append([name, "error: " + r["error"].splitlines()[0][:60], "—", "—", "—"])
                continue
            a = {"median": r["median_ms"], "min": r["min_ms"], "max": r["max_ms"], "n": len(r["ms"])}
            vs = (f"{r['median_ms'] / floor['median_ms']:.2f}×" if floor and floor.get("ok") else "—")
            cold = fmt(r["cold_ms"]) if r.get("cold_ms") is not None else "—"
            rows.append([name, cold, cell(a), vs, r.get("check") or ""])
        out.append((f"CLI: cold = the first call after the file was written (empty parse cache); "
                    f"warm = {cfg.cli_reps} runs each, ms, median (min–max)",
                    ["command", "cold ms", "warm ms", "vs import floor (warm)", "check"], rows))
    h = summary["http"]
    if h["runs_ok"] or h["runs_failed"]:
        rows = [[f"last of {cfg.burst} requests arrives after the instant (ms)", cell(h["last_arrival_ms"])],
                ["median arrival after the instant (ms)", cell(h["p50_arrival_ms"])],
                [f"{cfg.burst} bare requests.get in a loop, one process (ms)", cell(h["requests_loop_ms"])]]
        out.append((f"HTTP: {cfg.burst} url jobs due at the same minute, local server"
                    + (f" ({h['runs_failed']} runs failed)" if h["runs_failed"] else ""),
                    ["figure", "value"], rows))
    return out


def print_tables(tbls, markdown: bool) -> None:
    if not markdown:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            markdown = True
    if markdown:
        for title, cols, rows in tbls:
            print(f"\n**{title}**\n")
            print("| " + " | ".join(cols) + " |")
            print("|" + "|".join(["---"] * len(cols)) + "|")
            for r in rows:
                print("| " + " | ".join(r) + " |")
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    for title, cols, rows in tbls:
        t = Table(title=title, title_justify="left")
        for i, c in enumerate(cols):
            t.add_column(c, justify="left" if i == 0 else "right")
        for r in rows:
            t.add_row(*r)
        console.print(t)


# --------------------------------------------------------------------------- main

def parse_only(s: str | None, quick: bool) -> list[str]:
    if not s:
        s = "crawlsched,peers,cli" if quick else "all"
    names: list[str] = []
    for part in s.split(","):
        part = part.strip()
        expanded = {"all": IN_ALL, "peers": PEERS}.get(part, [part])
        for n in expanded:
            if n not in ALL_NAMES:
                raise SystemExit(f"--only: unknown name {n!r} (known: {', '.join(ALL_NAMES + ['peers', 'all'])})")
            if n not in names:
                names.append(n)
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run for CI: --jobs 1000 --idle-seconds 3 --runs 1 --cli-reps 3, "
                        "peers at whole seconds, only crawlsched,peers,cli (~1 min)")
    p.add_argument("--runs", type=int)
    p.add_argument("--jobs", type=int)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--idle-seconds", type=float)
    p.add_argument("--settle", type=float, default=2.0, help="s after ready before the idle window")
    p.add_argument("--only", help="comma-separated: " + ", ".join(ALL_NAMES + ["peers", "all"]))
    p.add_argument("--peer-instant", choices=("minute", "second"),
                   help="burst instant of the peers: a whole minute like crawlsched's (default) or "
                        "any whole second (default with --quick; lets peers fill the waits)")
    p.add_argument("--floor-mode", choices=("inline", "threads"), default="inline")
    p.add_argument("--celery-workers", default="1,2,4",
                   help="`celery`: pool processes of the worker, one measurement each (default 1,2,4)")
    p.add_argument("--celery-beat", default="default,redbeat",
                   help="`celery`: beat schedulers, one pass each: default (PersistentScheduler), redbeat")
    p.add_argument("--celery-burst-task", choices=("call", "command"), default="call",
                   help="`celery`: each burst entry runs a function (call, the default) or `date +%%s.%%N` in its "
                        "own process (command), as crawlsched's burst does")
    p.add_argument("--cluster-workers", default="1,2,4",
                   help="`cluster`: `crawlsched worker --concurrency 1` processes, one measurement each (default 1,2,4)")
    p.add_argument("--cluster-concurrency", type=int, default=1,
                   help="`cluster`: each worker's --concurrency (default 1: one attempt at a time, as a pool process)")
    p.add_argument("--single-fires", type=int,
                   help="fires of the one-job measurement (`single`) per run (default 60, 10 with --quick)")
    p.add_argument("--cli-reps", type=int)
    p.add_argument("--add-args", help="arguments of the timed `crawlsched add` (shell syntax), default: "
                                      + shlex.join(cb.CLI_ADD_ARGS))
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    p.add_argument("--keep", action="store_true", help="keep the work dir (job files, logs) even on success")
    cfg = p.parse_args(argv)
    q = cfg.quick
    cfg.runs = cfg.runs or (1 if q else 3)
    cfg.jobs = cfg.jobs or (1000 if q else 10000)
    cfg.idle_seconds = cfg.idle_seconds if cfg.idle_seconds is not None else (3.0 if q else 60.0)
    cfg.peer_instant = cfg.peer_instant or ("second" if q else "minute")
    cfg.cli_reps = cfg.cli_reps or (3 if q else 10)
    cfg.single_fires = cfg.single_fires or (10 if q else 60)
    add_args = shlex.split(cfg.add_args) if cfg.add_args else None
    names = parse_only(cfg.only, q)
    if cfg.burst > cfg.jobs:
        p.error("--burst must not exceed --jobs")

    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / f"work-{stamp}"
    workdir.mkdir()

    machine = machine_info()
    header = (f"machine: {machine['cpu_model']}, {machine['cores']} cores"
              f"{'' if machine.get('affinity') in (None, machine['cores']) else ' (' + str(machine['affinity']) + ' usable)'}"
              f", {machine['ram_gib']} GiB RAM, Python {machine['python']}, kernel {machine['kernel']}")
    print(header, flush=True)
    print(f"config: jobs {cfg.jobs:,}, burst {cfg.burst}, idle {cfg.idle_seconds:g} s, runs {cfg.runs}, "
          f"peers' instant: whole {cfg.peer_instant}, floor {cfg.floor_mode}, only {','.join(names)}",
          flush=True)

    versions = {}
    if any(n in PEERS or n == "single" for n in names):
        versions = ensure_peers_venv()
        print(f"peers: APScheduler {versions['APScheduler']}, schedule {versions['schedule']} "
              f"({PEERS_VENV.relative_to(BENCH.parent)})", flush=True)

    if "celery" in names:
        versions.update(ensure_celery())
        print(f"celery peer: Celery {versions['celery']}, celery-redbeat {versions['redbeat']}, "
              f"redis-py {versions['redis']} "
              f"({PEERS_VENV.relative_to(BENCH.parent)})", flush=True)

    runner = Runner(cfg, workdir)
    if "crawlsched" in names or "http" in names or "single" in names:
        # fail fast instead of waiting for a minute boundary to find out the daemon can't start
        pre = workdir / "preflight"
        pre.mkdir()
        r = subprocess.run([sys.executable, "-m", "crawlsched", "daemon", "--help"],
                           env=cb.crawlsched_env(pre, pre / "jobs.toml"), cwd=pre, capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0:
            err = (f"`python -m crawlsched daemon --help` exited {r.returncode}: "
                   + (r.stderr.strip().splitlines() or ["?"])[-1])
            log(f"preflight FAILED, skipping crawlsched and http: {err}")
            for g in ("crawlsched", "http", "single"):
                if g in names:
                    runner.results[g if g != "single" else SINGLE + "crawlsched"] = [{"ok": False, "error": err}]
                    runner.errors.append(f"{g}: {err}")
            names = [n for n in names if n not in ("crawlsched", "http", "single")]
    timed: list[Task] = []
    fillers: list[Task] = []
    for i in range(cfg.runs):
        for t in TARGETS:
            if t not in names:
                continue
            if t == "crawlsched":
                tmp = workdir / f"crawlsched-{i + 1}"
                timed.append(Task(
                    f"crawlsched run {i + 1}/{cfg.runs}", "minute",
                    lambda at, tmp=tmp: cb.measure_crawlsched(cfg.jobs, cfg.burst, at, cfg.idle_seconds, tmp,
                                                              settle=cfg.settle),
                    lead=lambda: runner.lead("crawlsched"), group="crawlsched", meta={"run": i + 1}))
            else:
                task = Task(f"{LABELS[t]} run {i + 1}/{cfg.runs}", cfg.peer_instant,
                            lambda at, t=t: run_peer(t, at, cfg, workdir),
                            lead=lambda t=t: runner.lead(t),
                            est=lambda t=t: runner.lead(t) + 4.0, group=t, meta={"run": i + 1})
                (timed if cfg.peer_instant == "minute" else fillers).append(task)
    if "http" in names:
        for i in range(cfg.runs):
            tmp = workdir / f"http-{i + 1}"
            timed.append(Task(f"HTTP run {i + 1}/{cfg.runs}", "minute",
                              lambda at, tmp=tmp: cb.measure_http(cfg.burst, at, tmp),
                              lead=lambda: runner.lead("crawlsched", idle=False), group="http",
                              meta={"run": i + 1}))
    if "single" in names:  # no instant to wait for: they fill the waits before the timed ones
        for i in range(cfg.runs):
            for t in TARGETS:
                if t == "crawlsched":
                    tmp = workdir / f"single-crawlsched-{i + 1}"
                    run = (lambda tmp=tmp: cb.measure_single(cfg.single_fires, tmp, settle=cfg.settle))
                    est = cfg.single_fires + cfg.settle + 6.0
                else:
                    run = (lambda t=t: run_peer_single(t, cfg, workdir))
                    est = cfg.single_fires + cfg.settle + 4.0
                fillers.append(Task(f"one job, {LABELS[t]}, run {i + 1}/{cfg.runs}", "plain", run,
                                    est=lambda est=est: est, group=SINGLE + t, meta={"run": i + 1}))
    if "cli" in names:
        for name, est, thunk in cb.cli_tasks(workdir / "cli", cfg.cli_reps, add_args):
            def run(thunk=thunk, name=name):
                r = thunk()
                r["name"] = name
                return r
            fillers.append(Task(f"CLI: {name}", "plain", run, est=lambda est=est: est, group="cli",
                                meta={"name": name}))

    if "cluster" in names:  # minutes long, with its own instants: after everything else
        fillers.append(Task("crawlsched cluster: PostgreSQL, a daemon, crawlsched workers", "plain",
                            lambda: run_cluster(cfg, workdir), est=lambda: 1e9, group="cluster", meta={"run": 1}))
    if "celery" in names:  # minutes long, with its own instants: after everything else
        fillers.append(Task("Celery beat + workers over Redis", "plain", lambda: run_celery(cfg, workdir),
                            est=lambda: 1e9, group="celery", meta={"run": 1}))

    runner.plan_and_run(timed, fillers)

    summary = summarize(runner.results)
    tbls = tables(summary, cfg)
    queued = queue_rows(runner.results)
    if queued:
        import cluster  # noqa: PLC0415
        about = []
        for group in ("cluster", "celery"):
            done = [r for r in runner.results.get(group, []) if r.get("ok") and r.get("rows")]
            if not done:
                continue
            v = done[0]["versions"]
            about.append(f"crawlsched {v['crawlsched']} on PostgreSQL {v['postgresql']}, procrastinate "
                         f"{v['procrastinate']}, workers with --concurrency {cfg.cluster_concurrency}"
                         if group == "cluster" else
                         f"celery {v['celery']}, redis-server {v['redis-server']}, prefork pool, acks_late, prefetch 1")
        tbls.append(cluster.table(
            queued, f"Queue systems: {cfg.burst} of {cfg.jobs:,} entries due together; tasks per s ({'; '.join(about)})"))
        fail = next((r.get("failover") for r in runner.results.get("cluster", []) if r.get("failover")), None)
        if fail:
            tbls.append(("crawlsched cluster: failover", ["event", "seconds", "goal"], [
                ["daemon SIGKILL -> next fire handled by the other daemon", fmt(fail.get("daemon_kill_to_next_fire_s")), "<= 15"],
                ["worker SIGKILL -> attempt interrupted", fmt(fail.get("worker_kill_to_interrupted_s")), ""],
                ["worker SIGKILL -> retry started in another worker", fmt(fail.get("worker_kill_to_retry_started_s")),
                 f"<= lease + 5 = {fail.get('worker_lease_s', 10) + 5:g}"]]))
    print()
    if tbls:
        print_tables(tbls, cfg.markdown)
    else:
        print("no results")
    if runner.errors:
        print("\nfailed:", file=sys.stderr)
        for e in runner.errors:
            print("  " + e, file=sys.stderr)
    warnings = [f"{LABELS.get(g, g)} run {r.get('run')}: {r['warning']}"
                for g, rs in runner.results.items() for r in rs if r.get("warning")]
    warnings += [f"{LABELS.get(g, g)} run {r.get('run')}: idle window shortened to {r['idle_window_s']:.1f} s"
                 for g, rs in runner.results.items() for r in rs if r.get("idle_shortened")]
    for w in warnings:
        print("warning: " + w, file=sys.stderr)

    out = {
        "started": started, "finished": time.time(), "machine": machine,
        "config": {k: v for k, v in vars(cfg).items()}, "only": names, "peer_versions": versions,
        "crawlsched_cli": cb.crawlsched_cli(), "summary": summary, "runs": runner.results,
        "errors": runner.errors, "warnings": warnings,
    }
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nresults: {path.relative_to(BENCH.parent)} ({time.time() - started:.0f} s)", file=sys.stderr)
    if runner.errors or cfg.keep:
        print(f"work dir kept: {workdir.relative_to(BENCH.parent)}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if runner.errors else 0


if __name__ == "__main__":
    sys.exit(main())
