"""The crawlsched side of the benchmark (runs in the project venv).

Interface of crawlsched this codes against (see bench/README.md, "What the daemon must provide"):
  * `python -m crawlsched daemon`, configured by env CRAWLSCHED_JOBS (the jobs.toml) and
    CRAWLSCHED_HOME (state dir); prints a line containing `daemon ready` (stderr or stdout)
    once it will fire jobs; exits on SIGTERM.
  * SQLite `<CRAWLSCHED_HOME>/crawlsched.db`, table `runs(job_id TEXT, scheduled_for REAL,
    attempt INTEGER, started_at REAL, status TEXT)`, epoch seconds; started_at taken in the
    worker when the attempt starts, before the spawn / HTTP request.
  * jobs.toml: [defaults] + [[jobs]] with id, name, cron (5 fields), start_date, and either
    command (default from [defaults]) or url.
  * console script `crawlsched` with `--help`, `list --json`, `add ...` (args: CLI_ADD_ARGS).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import Watcher, cpu_ns, lateness_summary, measure_idle, stop_process, vm_rss_kb

# the source tree whose crawlsched is measured (default: this checkout)
REPO = Path(os.environ.get("CRAWLSCHED_BENCH_SRC") or Path(__file__).resolve().parent.parent)
READY_NEEDLE = "daemon ready"
FAR_MIN_S = 3600  # far-away jobs: daily crons 1 h .. 23 h after the burst minute
FAR_SPAN_S = 22 * 3600
# `crawlsched add` arguments used for the CLI timing (override: run.py --add-args).
CLI_ADD_ARGS = ["add", "bench_added", "--cron", "17 3 * * *", "--command", "true"]


# --------------------------------------------------------------------------- job files

def _cron_for(epoch: int) -> str:
    t = time.gmtime(epoch)
    return f"{t.tm_min} {t.tm_hour} * * *"


def write_jobs_toml(path: Path, jobs: int, burst: int, at: int, *, url_base: str | None = None,
                    max_concurrent: int | None = None) -> list[str]:
    """Write a jobs.toml (plain text, fast). Returns the ids of the `burst` jobs due at `at`.

    `at` must be a whole minute (crawlsched's cron is minute-granular). With `url_base`, the
    burst jobs are url jobs (`url = "<url_base>/<id>"`) and no default command is set.
    """
    if at % 60:
        raise ValueError(f"burst instant {at} is not a whole minute")
    mc = max_concurrent or max(256, burst + 10)
    out = ["[defaults]", f"max_concurrent = {mc}", 'timezone = "UTC"']
    if url_base is None:
        out.append('command = "true"')
    # The burst's command prints its own clock (the row's message is its last line): the lateness
    # at the command itself, beside the row's started_at (when crawlsched let it start).
    stamp = 'command = "date +%s.%N"'
    out += ["max_retries = 0", ""]
    n_far = jobs - burst
    burst_cron = _cron_for(at)
    ids = []
    for i in range(jobs):
        jid = f"j{i + 1:05d}"
        if i < burst:
            cron = burst_cron
            ids.append(jid)
        else:
            k = i - burst
            cron = _cron_for(at + FAR_MIN_S + (k * FAR_SPAN_S) // max(n_far, 1))
        out += ["[[jobs]]", f'id = "{jid}"', f'name = "{jid}"', f'cron = "{cron}"']
        if url_base is not None:
            if i < burst:
                out.append(f'url = "{url_base}/{jid}"')
            else:
                out.append('command = "true"')
        elif i < burst:
            out.append(stamp)
        out += ["start_date = 2025-01-01", ""]
    path.write_text("\n".join(out))
    return ids


# --------------------------------------------------------------------------- the daemon

def crawlsched_env(tmpdir: Path, jobs_file: Path) -> dict:
    env = dict(os.environ)
    env["CRAWLSCHED_JOBS"] = str(jobs_file)
    env["CRAWLSCHED_HOME"] = str(tmpdir)
    env["TZ"] = "UTC"
    # The CLI's parse cache goes to $XDG_CACHE_HOME: keep it in the work folder, never the user's.
    env["XDG_CACHE_HOME"] = str(Path(tmpdir) / "xdg-cache")
    # the package may not be pip-installed into the venv yet: make the work tree importable
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def crawlsched_cli() -> list[str]:
    """The console script of the project venv, else `python -m crawlsched`."""
    script = Path(sys.executable).parent / "crawlsched"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "crawlsched"]


def _start_daemon(tmpdir: Path, jobs_file: Path, log_name: str):
    env = crawlsched_env(tmpdir, jobs_file)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "crawlsched", "daemon"], env=env, cwd=tmpdir,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watcher = Watcher(proc, tmpdir / log_name, READY_NEEDLE)
    return proc, watcher, t0


def _wait_ready(proc, watcher: Watcher, t0: float, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while not watcher.found.wait(0.1):
        if proc.poll() is not None:
            raise RuntimeError(f"crawlsched daemon exited ({proc.returncode}) before ready:\n"
                               + watcher.tail_text())
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no line containing {READY_NEEDLE!r} within {timeout:.0f} s:\n"
                               + watcher.tail_text())
    return watcher.found_at - t0


def read_runs(db: Path, ids: set[str], at: float) -> list[dict]:
    """attempt-1 rows of `ids` scheduled at `at` (empty if the db/table is not there yet)."""
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
        try:
            rows = con.execute(
                "SELECT job_id, scheduled_for, attempt, started_at, status, message FROM runs "
                "WHERE attempt = 1 AND scheduled_for BETWEEN ? AND ?", (at - 1, at + 1)).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return []
    return [dict(zip(("job_id", "scheduled_for", "attempt", "started_at", "status", "message"), r))
            for r in rows if r[0] in ids and r[3] is not None]


def _collect_runs(proc, db: Path, ids: set[str], at: float, timeout: float) -> list[dict]:
    # don't touch the db while the burst is being dispatched
    from common import sleep_until
    sleep_until(at + 1.5)
    deadline = at + timeout
    rows: list[dict] = []
    while True:
        rows = read_runs(db, ids, at)
        # Closed rows only: a row written ahead of its instant says when it began once it is closed.
        done = len(rows) >= len(ids) and all(r["status"] != "running" for r in rows)
        if done or time.time() > deadline or proc.poll() is not None:
            return rows
        time.sleep(0.5)


def measure_crawlsched(jobs: int, burst: int, at: int, idle_seconds: float, tmpdir, *,
                       settle: float = 2.0, ready_timeout: float = 180.0,
                       collect_timeout: float = 30.0) -> dict:
    """One crawlsched run: start the daemon now, idle window, burst at `at` (a whole minute)."""
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    jobs_file = tmpdir / "jobs.toml"
    ids = write_jobs_toml(jobs_file, jobs, burst, at)
    proc, watcher, t0 = _start_daemon(tmpdir, jobs_file, "daemon.log")
    res: dict = {"target": "crawlsched", "jobs": jobs, "burst": burst, "at": at, "tmpdir": str(tmpdir)}
    try:
        res["ready_s"] = _wait_ready(proc, watcher, t0, ready_timeout)
        res["ready_left_s"] = at - time.time()
        res.update(measure_idle(proc.pid, settle, idle_seconds, must_end_by=at - 1.0))
        c_before = cpu_ns(proc.pid)
        rows = _collect_runs(proc, tmpdir / "crawlsched.db", set(ids), at, collect_timeout)
        if proc.poll() is None:
            res["burst_cpu_ns"] = cpu_ns(proc.pid) - c_before
            res["rss_kb_after_burst"] = vm_rss_kb(proc.pid)
        lateness = sorted((r["started_at"] - r["scheduled_for"]) * 1000.0 for r in rows)
        res["lateness_ms"] = lateness
        res["missing"] = burst - len(lateness)
        res["early"] = sum(1 for x in lateness if x < 0)
        res["scheduled_for_mismatch"] = sum(1 for r in rows if abs(r["scheduled_for"] - at) > 1e-3)
        res["statuses"] = dict(sorted({s: sum(1 for r in rows if r["status"] == s)
                                       for s in {r["status"] for r in rows}}.items()))
        res.update(lateness_summary(lateness))
        own = sorted((float(r["message"]) - r["scheduled_for"]) * 1000.0 for r in rows
                     if r["message"] and r["message"].replace(".", "", 1).isdigit())
        res["command_clock"] = lateness_summary(own)  # at the command's own clock (`date +%s.%N`)
        if res["missing"]:
            res["warning"] = f"{res['missing']} of {burst} burst attempts not in runs table"
    finally:
        res["stop"] = stop_process(proc)
        watcher.close()
    return res


# --------------------------------------------------------------------------- one job

SINGLE_ID = "single"


def write_single_toml(path: Path) -> None:
    """One job, due every second (``every = "1s"``), running ``true``."""
    path.write_text("\n".join([
        "[defaults]", 'timezone = "UTC"', 'command = "true"', "max_retries = 0", "",
        "[[jobs]]", f'id = "{SINGLE_ID}"', f'name = "{SINGLE_ID}"', 'every = "1s"', "",
    ]))


def measure_single(fires: int, tmpdir, *, settle: float = 2.0, ready_timeout: float = 60.0) -> dict:
    """One job due every second: the lateness of `fires` fires after the daemon settled.

    The interval's anchor is the moment the daemon first saw the job, so the instants are
    not whole seconds; each attempt's lateness is ``started_at - scheduled_for`` as in the
    burst. Fires during start-up and the `settle` seconds after it are left out.
    """
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    jobs_file = tmpdir / "jobs.toml"
    write_single_toml(jobs_file)
    proc, watcher, t0 = _start_daemon(tmpdir, jobs_file, "daemon.log")
    res: dict = {"target": "crawlsched", "fires": fires, "tmpdir": str(tmpdir)}
    try:
        res["ready_s"] = _wait_ready(proc, watcher, t0, ready_timeout)
        time.sleep(settle)
        since = time.time()
        time.sleep(fires + 1.5)  # the last of them has started (and finished: `true` takes ms)
        db = tmpdir / "crawlsched.db"
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = con.execute(
                "SELECT scheduled_for, started_at FROM runs WHERE job_id = ? AND attempt = 1 "
                "AND scheduled_for >= ? AND started_at IS NOT NULL ORDER BY scheduled_for LIMIT ?",
                (SINGLE_ID, since, fires)).fetchall()
        finally:
            con.close()
    finally:
        res["stop"] = stop_process(proc)
        watcher.close()
    lateness = sorted((started - scheduled) * 1000.0 for scheduled, started in rows)
    res["lateness_ms"] = lateness
    res["missing"] = fires - len(lateness)
    res["early"] = sum(1 for x in lateness if x < 0)
    res.update(lateness_summary(lateness))
    if res["missing"] or res["early"]:
        res["warning"] = f"missing {res['missing']} of {fires} fires, early {res['early']}"
    return res


# --------------------------------------------------------------------------- CLI timings

def _time_cmd(argv: list[str], env: dict, reps: int, prepare=None, check=None) -> dict:
    """A first run (checked, timed as ``cold_ms``: the first call after the file was written),
    then `reps` timed warm runs; median/min/max in ms."""
    if prepare:
        prepare()
    t = time.perf_counter()
    warm = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    cold_ms = (time.perf_counter() - t) * 1000.0
    if warm.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} -> exit {warm.returncode}:\n"
                           + warm.stderr.decode(errors="replace")[-1500:])
    note = check(warm.stdout) if check else None
    times = []
    for _ in range(reps):
        if prepare:
            prepare()
        t = time.perf_counter()
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000.0)
        if r.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} -> exit {r.returncode} on a timed run")
    return {"argv": argv, "ms": times, "median_ms": statistics.median(times),
            "min_ms": min(times), "max_ms": max(times), "cold_ms": cold_ms, "check": note}


def cli_tasks(tmpdir, reps: int, add_args: list[str] | None = None) -> list[tuple[str, float, callable]]:
    """The CLI timings as separate (name, estimated seconds, thunk) tasks."""
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    cli = crawlsched_cli()
    add_args = add_args or CLI_ADD_ARGS
    files = {}

    def jobs_file(n: int) -> Path:
        if n not in files:
            p = tmpdir / f"jobs_{n}.toml"
            # a fixed far-future-ish minute; content only matters for size/shape
            write_jobs_toml(p, n, min(200, n), 1767225600)  # 2026-01-01T00:00Z
            files[n] = p
        return files[n]

    def env_for(n: int | None, path: Path | None = None) -> dict:
        home = tmpdir / "home"
        home.mkdir(exist_ok=True)
        env = crawlsched_env(home, path or (jobs_file(n) if n else tmpdir / "none.toml"))
        # Python writes each module's byte code at its first import, and later calls load it: a
        # user's CLI does, and the floor's site-packages come compiled. A PYTHONDONTWRITEBYTECODE
        # inherited from the machine (this sandbox sets it) would make every warm call compile
        # crawlsched's modules again (about 60 ms of `list --json`), which no user pays.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def check_list(n: int):
        def check(out: bytes):
            try:
                data = json.loads(out)
            except ValueError as e:
                return f"stdout is not JSON: {e}"
            got = len(data) if isinstance(data, list) else len(data.get("jobs", [])) if isinstance(data, dict) else None
            return "ok" if got == n else f"expected {n} jobs, got {got}"
        return check

    def list_task(n: int):
        return lambda: _time_cmd(cli + ["list", "--json"], env_for(n), reps, check=check_list(n))

    def add_task(n: int):
        def run():
            src = jobs_file(n)
            dst = tmpdir / f"add_{n}.toml"

            def prepare():
                shutil.copyfile(src, dst)

            r = _time_cmd(cli + add_args, env_for(None, dst), reps, prepare=prepare)
            added = dst.read_text().count("[[jobs]]") - n
            r["check"] = "ok" if added == 1 else f"file has {added} new [[jobs]] tables (expected 1)"
            return r
        return run

    per = reps + 1
    return [
        ("crawlsched --help", per * 0.6, lambda: _time_cmd(cli + ["--help"], env_for(None), reps)),
        ("python -c 'import typer, rich' (floor)", per * 0.4,
         lambda: _time_cmd([sys.executable, "-c", "import typer, rich"], env_for(None), reps)),
        ("crawlsched list --json, 1,000 jobs", per * 1.0, list_task(1000)),
        ("crawlsched list --json, 10,000 jobs", per * 4.0, list_task(10000)),
        ("crawlsched add, 1,000-job file", per * 1.0, add_task(1000)),
        ("crawlsched add, 10,000-job file", per * 4.0, add_task(10000)),
    ]


# --------------------------------------------------------------------------- HTTP variant

class _ArrivalServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 would drop SYNs of a 200-request burst

    def __init__(self):
        self.arrivals: list[tuple[str, float]] = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(h):  # noqa: N805
                t = time.time()
                with self.lock:
                    self.arrivals.append((h.path, t))
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


_BASELINE = r"""
import sys, time, requests
base, n = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
for i in range(n):
    requests.get(f"{base}/baseline{i}", timeout=10).raise_for_status()
print((time.perf_counter() - t) * 1000.0)
"""


def measure_requests_baseline(base: str, n: int) -> float:
    """ms for `n` bare requests.get calls in a loop, in one fresh process (imports excluded)."""
    out = subprocess.run([sys.executable, "-c", _BASELINE, base, str(n)], capture_output=True,
                         text=True, check=True, timeout=300)
    return float(out.stdout.strip().splitlines()[-1])


def measure_http(burst: int, at: int, tmpdir, *, ready_timeout: float = 180.0,
                 collect_timeout: float = 30.0) -> dict:
    """`burst` url jobs due at `at` (a whole minute) against a local server."""
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    server = _ArrivalServer()
    base = server.start()
    res: dict = {"target": "crawlsched-http", "burst": burst, "at": at, "tmpdir": str(tmpdir)}
    try:
        jobs_file = tmpdir / "jobs.toml"
        ids = write_jobs_toml(jobs_file, burst, burst, at, url_base=base)
        proc, watcher, t0 = _start_daemon(tmpdir, jobs_file, "daemon.log")
        try:
            res["ready_s"] = _wait_ready(proc, watcher, t0, ready_timeout)
            deadline = at + collect_timeout
            while time.time() < deadline and proc.poll() is None:
                with server.lock:
                    got = {p.lstrip("/") for p, _ in server.arrivals}
                if len(got & set(ids)) >= burst:
                    break
                time.sleep(0.25)
            rows = read_runs(tmpdir / "crawlsched.db", set(ids), at)
        finally:
            res["stop"] = stop_process(proc)
            watcher.close()
        with server.lock:
            arr = sorted((t - at) * 1000.0 for p, t in server.arrivals if p.lstrip("/") in set(ids))
        res["arrivals_ms"] = arr
        res["missing"] = burst - len(arr)
        res["last_arrival_ms"] = arr[-1] if arr else None
        res["first_arrival_ms"] = arr[0] if arr else None
        res["p50_arrival_ms"] = statistics.median(arr) if arr else None
        res["db_lateness"] = lateness_summary(sorted((r["started_at"] - r["scheduled_for"]) * 1000.0
                                                     for r in rows))
        res["statuses"] = {s: sum(1 for r in rows if r["status"] == s) for s in {r["status"] for r in rows}}
        with server.lock:
            server.arrivals.clear()
        res["requests_loop_ms"] = measure_requests_baseline(base, burst)
    finally:
        server.shutdown()
        server.server_close()
    return res
