"""crawlsched's cluster as a bench/cluster.py `System`: PostgreSQL, `crawlsched daemon` with
`executor = "workers"`, and N `crawlsched worker --concurrency 1` processes (N task slots, as
Celery's prefork pool with N processes). Runs in the project venv (psycopg is a dependency).

    .venv/bin/python bench/crawlsched_cluster.py --out result.json [--workers 1,2,4] [--jobs 10000]

bench/run.py runs it for `--only cluster`. It starts a throwaway PostgreSQL server
(tests/helpers/postgres.py, as the tests do: initdb in a temp folder, a free loopback port) and
gives every measurement a database of its own. Figures, measured the same way as Celery's:

- throughput: `n` jobs (`every = "1d"`, so each fires once, at the daemon's first whole second)
  queued with no worker running; then the workers start. Each attempt's (start, end) is its
  row's `started_at` (the instant a worker took it over, before the crawl) and `finished_at`.
  "noop" runs `true`; "http" fetches the target's `/<id>` (50 ms answers).
- burst: bench/crawlsched_bench.write_jobs_toml's file (`jobs` entries, `burst` due at the
  same whole minute) with the two lines of SPEC §10 added to `[defaults]`, and each job's
  command `date +%s.%N`: lateness is the command's own clock when it ran (the row's message,
  the last line of its output) minus the scheduled minute. That is when the crawl began, after
  the worker took the row over, as Celery's figure is the task body's first `time.time_ns()`.
  The daemon queues each attempt ahead of its instant (crawlsched.workers.executor.QUEUE_AHEAD)
  and the row's `started_at` is the take-over's instant (by the database's clock, when the
  instant had come): `extra["takeover_lateness"]` summarizes `started_at` minus the minute.
- failover (not a `System` figure; `failover()`): daemon SIGKILL → the next fire handled by
  the other daemon (a row for a time due after the kill); worker SIGKILL → its attempt
  interrupted and the retry started in another worker (its row taken over).

When PostgreSQL or `crawlsched worker` is missing it prints `SKIP: <why>` and exits 3.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))  # helpers.postgres: the tests' throwaway server

import cluster  # noqa: E402
import crawlsched_bench as cb  # noqa: E402
from common import cpu_ns, sleep_until  # noqa: E402

SKIP_EXIT = 3
WORKER_TTL = 10.0  # crawlsched.state.queue.WORKER_TTL: a worker's lease on an attempt


class Skip(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- job files (pure)

def cluster_defaults(text: str, dsn: str) -> str:
    """A job file's text with SPEC §10's two lines first in its `[defaults]` (added when it has none)."""
    lines = [f'state = "{dsn}"', 'executor = "workers"']
    if text.startswith("[defaults]\n"):
        return "[defaults]\n" + "\n".join(lines) + "\n" + text[len("[defaults]\n"):]
    return "[defaults]\n" + "\n".join(lines) + "\n\n" + text


def throughput_jobs(dsn: str, kind: str, n: int, url: str) -> str:
    """`n` jobs that each fire once, together, when the daemon first sees them: a no-op command
    (`true`) or one GET of `url/<kind>-<i>`; no retries."""
    out = ["[defaults]", f'state = "{dsn}"', 'executor = "workers"', "max_retries = 0",
           f"max_concurrent = {n + 10}", 'timezone = "UTC"', ""]
    for i in range(n):
        out += ["[[jobs]]", f'id = "t{i:05d}"', f'name = "t{i:05d}"', 'every = "1d"']
        out.append('command = "true"' if kind == "noop" else f'url = "{url}/{kind}-{i}"')
        out.append("")
    return "\n".join(out)


def failover_jobs(dsn: str) -> str:
    """Ten jobs every second (the daemon's fires) and `long`, a 120 s command fired once (the
    worker's attempt), retried once at once after an interruption."""
    out = ["[defaults]", f'state = "{dsn}"', 'executor = "workers"', 'timezone = "UTC"', "grace_period = 2", ""]
    for i in range(10):
        out += ["[[jobs]]", f'id = "tick-{i}"', f'name = "tick-{i}"', 'every = "1s"', 'command = "true"',
                "max_retries = 0", ""]
    out += ["[[jobs]]", 'id = "long"', 'name = "long"', 'every = "1d"', 'command = "sleep 120"', "timeout = 300",
            "max_retries = 1", "retry_delay = 0", ""]
    return "\n".join(out)


def job_index(job_id: str) -> int:
    """`j00001` (write_jobs_toml) → 0, `t00007` → 7: the entry id cluster.py's rows use."""
    digits = int(job_id[1:])
    return digits - 1 if job_id.startswith("j") else digits


def records_of(rows: list[tuple]) -> list[cluster.Record]:
    """(job id, started_at, finished_at) of closed attempts → cluster.Records (ns)."""
    return [cluster.Record(job_index(j), int(s * 1e9), int(f * 1e9)) for j, s, f in rows
            if s is not None and f is not None]


def starts_of(rows: list[tuple], at: float) -> list[tuple[int, int]]:
    """(job id, scheduled_for, started_at) of attempt-1 rows taken by a worker → (entry id, start ns)
    of those scheduled at `at`."""
    return [(job_index(j), int(s * 1e9)) for j, t, s in rows if s is not None and abs(t - at) < 0.5]


BURST_COMMAND = 'command = "date +%s.%N"'  # the command prints its own start: the row's message


def command_starts(rows: list[tuple], at: float) -> list[tuple[int, int]]:
    """(job id, scheduled_for, message) of closed attempt-1 rows → (entry id, the command's own start ns)
    of those scheduled at `at` whose message is a clock reading."""
    out = []
    for j, t, message in rows:
        try:
            clock = float((message or "").strip())
        except ValueError:
            continue
        if abs(t - at) < 0.5:
            out.append((job_index(j), int(clock * 1e9)))
    return out


def _spread(ms: list[float], digits: int) -> list[float] | None:
    """min / median / max of some milliseconds, rounded; None when there are none."""
    if not ms:
        return None
    ms = sorted(ms)
    return [round(ms[0], digits), round(ms[len(ms) // 2], digits), round(ms[-1], digits)]


def by_worker(rows: list[tuple], at: float, cpu_ms: dict[int, float] | None = None) -> dict[str, dict]:
    """(job id, scheduled_for, started_at, message, owner_pid) rows → per worker process: how many
    of the burst it ran, their release (the row's ``started_at``) and command clock, ms after `at`:
    which process a tail comes from (one whose release was late as a whole, or the machine's).
    ``cpu_ms`` {pid: the process's CPU time over the burst}: with it, its CPU per attempt (what
    bounds how fast a worker with fewer slots than the burst gets through it)."""
    cpu_ms = cpu_ms or {}
    out: dict[str, dict] = {}
    for pid in sorted({r[4] for r in rows}):
        mine = [r for r in rows if r[4] == pid]
        released = starts_of([(j, t, s) for j, t, s, _, _ in mine], at)
        clocks = command_starts([(j, t, m) for j, t, _, m, _ in mine], at)
        out[str(pid)] = {"n": len(mine),
                         "release_ms": _spread([ns / 1e6 - at * 1000.0 for _, ns in released], 2),
                         "command_ms": _spread([ns / 1e6 - at * 1000.0 for _, ns in clocks], 1)}
        if pid in cpu_ms:
            out[str(pid)].update(cpu_ms=round(cpu_ms[pid], 1), cpu_ms_per_attempt=round(cpu_ms[pid] / len(mine), 2))
    return out


# --------------------------------------------------------------------------- processes

class Procs:
    """The crawlsched processes of one measurement (each in its own session), stopped together."""

    def __init__(self, wd: Path) -> None:
        self.wd = wd
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def spawn(self, name: str, argv: list[str], home: Path, dsn: str | None = None) -> tuple[subprocess.Popen, Path]:
        home.mkdir(parents=True, exist_ok=True)
        env = cb.crawlsched_env(home, home / "jobs.toml")
        env.pop("CRAWLSCHED_STATE", None)
        if dsn:
            env["CRAWLSCHED_STATE"] = dsn
        path = self.wd / f"{name}.log"
        with open(path, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "crawlsched", *argv], env=env, cwd=home,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append((proc, path))
        return proc, path

    def daemon(self, name: str, home: Path, jobs_text: str) -> tuple[subprocess.Popen, Path]:
        home.mkdir(parents=True, exist_ok=True)
        (home / "jobs.toml").write_text(jobs_text)
        return self.spawn(name, ["daemon"], home)

    def workers(self, n: int, dsn: str, tag: str, concurrency: int = 1) -> list[subprocess.Popen]:
        return [self.spawn(f"worker-{tag}-{i}", ["worker", "--concurrency", str(concurrency), "--home", str(self.wd / f"w-{tag}-{i}")],
                           self.wd / f"w-{tag}-{i}", dsn)[0] for i in range(n)]

    def wait_line(self, proc: subprocess.Popen, needle: str, timeout: float) -> float:
        path = next(p for q, p in self.procs if q is proc)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if needle in path.read_text(errors="replace"):
                return time.time() - t0
            if proc.poll() is not None:
                raise RuntimeError(f"{path.name}: exited {proc.returncode} before {needle!r}:\n"
                                   + path.read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        raise RuntimeError(f"{path.name}: no {needle!r} within {timeout:.0f} s")

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def query(dsn: str, sql: str, args: tuple = ()) -> list[tuple]:
    import psycopg  # noqa: PLC0415

    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            return conn.execute(sql, args).fetchall()
    except psycopg.Error:
        return []


def wait_rows(dsn: str, sql: str, want: int, timeout: float, procs: list[subprocess.Popen] = (), every: float = 0.2) -> int:
    deadline = time.time() + timeout
    got = 0
    while time.time() < deadline:
        rows = query(dsn, sql)
        got = rows[0][0] if rows else 0
        if got >= want:
            return got
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a crawlsched process exited {p.returncode} during the measurement")
        time.sleep(every)
    return got


# --------------------------------------------------------------------------- the System

class CrawlschedCluster:
    def __init__(self, tmp: Path, pg, concurrency: int = 1) -> None:
        self.tmp, self.pg = tmp, pg
        self.concurrency = concurrency  # attempts each worker process runs at once (1: as Celery's pool process)
        self.name = "crawlsched" if concurrency == 1 else f"crawlsched (--concurrency {concurrency})"
        self.n = 0
        self.ready_seen: list[float] = []
        server = pg.psql("SHOW server_version").split()[0]
        self.versions = {"crawlsched": md.version("crawlsched"), "postgresql": server,
                         "procrastinate": md.version("procrastinate"), "psycopg": md.version("psycopg")}

    def database(self) -> str:
        self.n += 1
        name = f"bench_{self.n}"
        self.pg.psql(f"CREATE DATABASE {name}")
        return self.pg.dsn(name)

    def throughput(self, workers: int, kind: str, n: int, url: str, wd: Path) -> list[cluster.Record]:
        dsn = self.database()
        procs = Procs(wd)
        try:
            daemon, _ = procs.daemon(f"daemon-{kind}-{self.n}", wd / f"{kind}-{self.n}", throughput_jobs(dsn, kind, n, url))
            procs.wait_line(daemon, "daemon ready", 120)
            queued = wait_rows(dsn, "SELECT count(*) FROM runs WHERE attempt = 1", n, 60 + n * 0.05, [daemon])
            if queued < n:
                raise RuntimeError(f"only {queued} of {n} attempts were queued")
            ws = procs.workers(workers, dsn, f"{kind}-{self.n}", self.concurrency)
            wait_rows(dsn, "SELECT count(*) FROM runs WHERE attempt = 1 AND status <> 'running'", n,
                      60 + n * 0.2, [daemon, *ws])
            rows = query(dsn, "SELECT job_id, started_at, finished_at FROM runs WHERE attempt = 1 AND status <> 'running'")
        finally:
            procs.stop()
        return records_of(rows)

    def burst_lead(self, jobs: int, workers: int) -> float:
        # the daemon's first start on a new database writes every job's first sight: twice the slowest seen
        return 20.0 + 2 * max(self.ready_seen, default=30.0)

    def burst(self, workers: int, jobs: int, burst: int, at: int, wd: Path) -> cluster.BurstResult:
        dsn = self.database()
        home = wd / f"burst-{self.n}"
        home.mkdir(parents=True, exist_ok=True)
        ids = cb.write_jobs_toml(home / "jobs.toml", jobs, burst, at)
        text = cluster_defaults((home / "jobs.toml").read_text(), dsn).replace('command = "true"', BURST_COMMAND, 1)
        procs = Procs(wd)
        try:
            ws = procs.workers(workers, dsn, f"burst-{self.n}", self.concurrency)
            daemon, _ = procs.daemon(f"daemon-burst-{self.n}", home, text)
            ready = procs.wait_line(daemon, "daemon ready", 300)
            self.ready_seen.append(ready)
            for w in ws:
                procs.wait_line(w, "worker ready", 60)
            log(f"  daemon ready in {ready:.1f} s, {at - time.time():.1f} s before the instant")
            if time.time() > at - 1.0:
                log("  WARNING: the daemon was ready less than 1 s before the instant")
            sleep_until(at - 1.0)
            cpu0 = {w.pid: cpu_ns(w.pid) for w in ws}  # from 1 s before the instant to the last close
            sleep_until(at + 1.0)
            closed = (f"SELECT count(*) FROM runs WHERE attempt = 1 AND scheduled_for = {at} AND owner_pid IS NOT NULL"
                      " AND status <> 'running'")
            wait_rows(dsn, closed, len(ids), 300, [daemon, *ws], every=0.5)
            cpu = {w.pid: (cpu_ns(w.pid) - c0) / 1e6 for w, c0 in zip(ws, cpu0.values())}
            time.sleep(1.0)
            rows = query(dsn, "SELECT job_id, scheduled_for, started_at, message, owner_pid FROM runs WHERE attempt = 1"
                              " AND scheduled_for = %s AND owner_pid IS NOT NULL", (at,))
        finally:
            procs.stop()
        taken = starts_of([(j, t, s) for j, t, s, _, _ in rows], at)
        extra = {"workers_concurrency": self.concurrency, "lateness_is": "the command's own clock when it ran",
                 "takeover_lateness": cluster.lateness_summary([(ns - at * 1e9) / 1e6 for _, ns in taken]),
                 "by_worker": by_worker(rows, at, cpu)}
        for pid, w in extra["by_worker"].items():
            log(f"    worker pid {pid}: {w['n']} attempts, released min/p50/max {w['release_ms']} ms, "
                f"command clock {w['command_ms']} ms, CPU {w.get('cpu_ms')} ms ({w.get('cpu_ms_per_attempt')} a piece)")
        return cluster.BurstResult(command_starts([(j, t, m) for j, t, _, m, _ in rows], at), ready, extra)

    def failover(self, wd: Path) -> dict:
        """Daemon SIGKILL → next fire handled; worker SIGKILL → interrupted, and the retry started."""
        dsn = self.database()
        procs = Procs(wd)
        text = failover_jobs(dsn)
        out: dict = {"worker_lease_s": WORKER_TTL}
        try:
            d1, _ = procs.daemon("failover-d1", wd / "failover-d1", text)
            procs.wait_line(d1, "daemon ready", 120)
            many = bool(query(dsn, "SELECT to_regclass('daemons')")[0][0])  # SPEC §10's many daemons in this tree
            d2 = None
            if many:
                d2, _ = procs.daemon("failover-d2", wd / "failover-d2", text)
                procs.wait_line(d2, "daemon ready", 120)
            ws = procs.workers(2, dsn, "failover")
            for w in ws:
                procs.wait_line(w, "worker ready", 60)
            pids = {w.pid: w for w in ws}
            # ---- worker SIGKILL under the long command
            deadline = time.time() + 60
            owner = None
            while time.time() < deadline and owner not in pids:
                rows = query(dsn, "SELECT owner_pid FROM runs WHERE job_id = 'long' AND attempt = 1 AND status = 'running'")
                owner = rows[0][0] if rows else None
                time.sleep(0.1)
            if owner not in pids:
                raise RuntimeError("the long command never ran in a worker")
            killed = time.time()
            os.kill(owner, signal.SIGKILL)
            interrupted = retried = None
            while time.time() < killed + 60 and retried is None:
                rows = query(dsn, "SELECT attempt, status, owner_pid, started_at FROM runs WHERE job_id = 'long'")
                if interrupted is None and any(a == 1 and s == "interrupted" for a, s, _, _ in rows):
                    interrupted = time.time()
                if any(a == 2 and p in pids and p != owner for a, _, p, _ in rows):
                    retried = time.time()
                time.sleep(0.1)
            out["worker_kill_to_interrupted_s"] = interrupted and round(interrupted - killed, 2)
            out["worker_kill_to_retry_started_s"] = retried and round(retried - killed, 2)
            # ---- daemon SIGKILL: the leader, as the daemons table says (SPEC §10's many daemons)
            leader = many and query(dsn, "SELECT pid FROM daemons WHERE role = 'leader' AND stopped_at IS NULL")
            if not leader or leader[0][0] not in (d1.pid, d2.pid):
                out["daemon_kill_to_next_fire_s"] = None
                out["daemon_note"] = "no leader row in a daemons table: many daemons are not in this tree"
                return out
            newest = query(dsn, "SELECT coalesce(max(id), 0) FROM runs")[0][0]
            killed = time.time()
            os.kill(leader[0][0], signal.SIGKILL)
            handled = None
            while time.time() < killed + 60 and handled is None:
                if query(dsn, "SELECT 1 FROM runs WHERE id > %s AND (scheduled_for > %s OR last_missed > %s) LIMIT 1",
                         (newest, killed + 1.0, killed + 1.0)):
                    handled = time.time()
                time.sleep(0.1)
            out["daemon_kill_to_next_fire_s"] = handled and round(handled - killed, 2)
        finally:
            procs.stop()
        return out


def why_not() -> str | None:
    from helpers.postgres import find_binaries  # noqa: PLC0415

    if find_binaries() is None:
        return "PostgreSQL's server binaries are not installed (Debian: apt-get install postgresql)"
    r = subprocess.run([sys.executable, "-m", "crawlsched", "worker", "--help"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if r.returncode != 0:
        return "`crawlsched worker` is not in this tree (executor = \"workers\", SPEC §10)"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--noop-tasks", type=int, default=2000)
    p.add_argument("--http-tasks-per-worker", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=1, help="each worker's --concurrency (default 1)")
    p.add_argument("--no-failover", action="store_true")
    p.add_argument("--workdir", type=Path)
    a = p.parse_args(argv)
    reason = why_not()
    if reason:
        print(f"SKIP: {reason}", flush=True)
        a.out.write_text(json.dumps({"skipped": reason}))
        return SKIP_EXIT
    from helpers.postgres import remove_cluster, start_cluster  # noqa: PLC0415

    tmp = a.workdir or Path(tempfile.mkdtemp(prefix="crawlsched-cluster-"))
    tmp.mkdir(parents=True, exist_ok=True)
    pg = start_cluster()
    try:
        system = CrawlschedCluster(tmp, pg, a.concurrency)
        log(f"crawlsched cluster: {system.versions}, work dir {tmp}")
        rows = cluster.measure(system, tmp, workers=[int(x) for x in a.workers.split(",")], jobs=a.jobs,
                               burst=a.burst, noop_tasks=a.noop_tasks, http_tasks_per_worker=a.http_tasks_per_worker,
                               log=log)
        failover = None
        if not a.no_failover:
            log("crawlsched cluster: failover (daemon SIGKILL, worker SIGKILL)")
            (tmp / "failover").mkdir(exist_ok=True)
            failover = system.failover(tmp / "failover")
            log(f"  {failover}")
    finally:
        remove_cluster(pg)
    a.out.write_text(json.dumps({"system": "crawlsched", "versions": system.versions,
                                 "config": {"jobs": a.jobs, "burst": a.burst, "worker_concurrency": a.concurrency},
                                 "rows": cluster.rows_json(rows), "failover": failover}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
