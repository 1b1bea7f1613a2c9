"""The chaos soak: the real daemon against a flaky target, killed and stopped at random, then checked.

    .venv/bin/python bench/soak.py --minutes 10 [--seed S] [--jobs 60] [--out DIR] [--no-edits]

What it does, all on 127.0.0.1 and bounded in time:

1. starts a flaky HTTP target (40 % 500s, some 429s with Retry-After, slow
   answers) that logs every request it gets to ``target-requests.jsonl``;
2. writes a job file of ``--jobs`` jobs: ``every`` 2-10 s jobs (URL jobs of one
   or two URLs, and command jobs: a Python one-liner that reports its job,
   scheduled time and attempt to the target, sleeps, and exits 0 or 1), a few
   ``* * * * *`` cron jobs, retries 1-3 s apart, every ``catch_up`` policy, and
   ``grace_period`` of a few seconds;
3. runs the real daemon (``python -m crawlsched daemon``) and, every 3-15 s,
   sends it SIGKILL or SIGTERM, waits for it to exit, and starts it again;
4. now and then runs ``crawlsched pause/resume/edit/add`` at the same time
   (``--no-edits`` turns this off; edited jobs are left out of the lost-fire check);
5. stops the daemon gracefully, looks for command processes left behind, and
   runs ``bench/soak_check.py`` over the database and the request log.

It prints a table and writes ``soak-result.json`` (figures and every violation)
in the run folder (``--out``, default ``bench/results/soak-<UTC stamp>``). Exit
status: 0 when every invariant held, 1 otherwise, 2 when the harness failed.
Every process it starts is stopped on the way out, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import soak_check  # noqa: E402

READY_TIMEOUT = 60.0  # seconds for a (re)started daemon to say "daemon ready"
STOP_TIMEOUT = 45.0  # seconds for a SIGTERM to end it (grace + CANCEL_WAIT, with room); then SIGKILL


# --- the flaky target ----------------------------------------------------------


class FlakyTarget:
    """127.0.0.1:<port>. ``/job/<id>/<n>``: flaky answers for URL jobs; ``/cmd/<id>?…``: command jobs' reports."""

    def __init__(self, log_path: Path, seed: int, fail_rate: float = 0.4, rate_429: float = 0.08,
                 slow_rate: float = 0.15) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.log_file = open(log_path, "a", buffering=1)
        self.counts = {"requests": 0, "500": 0, "429": 0, "slow": 0, "200": 0}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                t = time.time()
                parts = urlsplit(self.path)
                segs = parts.path.strip("/").split("/")
                if len(segs) >= 2 and segs[0] == "cmd":
                    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    outer.record({"t": t, "kind": "cmd", "job": segs[1], "path": parts.path, "sf": q.get("sf"),
                                  "attempt": q.get("a"), "phase": q.get("phase"), "pid": q.get("pid"), "rc": q.get("rc")})
                    return self.answer(200, b"ok\n")
                if len(segs) < 2 or segs[0] != "job":
                    return self.answer(404, b"no such route\n")
                with outer.lock:
                    roll, slow, after = outer.rng.random(), outer.rng.uniform(0.3, 3.0), outer.rng.choice((1, 2))
                if roll < fail_rate:
                    status, headers = 500, {}
                elif roll < fail_rate + rate_429:
                    status, headers = 429, {"Retry-After": str(after)}
                else:
                    status, headers = 200, {}
                is_slow = status == 200 and roll > 1 - slow_rate
                outer.record({"t": t, "kind": "url", "job": segs[1], "path": parts.path, "status": status,
                              "slow": round(slow, 2) if is_slow else 0})
                if is_slow:
                    time.sleep(slow)
                self.answer(status, b"body of %s\n" % parts.path.encode(), headers)

            def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client went away (a killed daemon)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (SIGKILL of the daemon) is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="soak-target", daemon=True)

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.counts["requests"] += 1
            if entry.get("kind") == "url":
                key = "slow" if entry.get("slow") else str(entry["status"])
                self.counts[key] = self.counts.get(key, 0) + 1
            self.log_file.write(json.dumps(entry) + "\n")

    def start(self) -> FlakyTarget:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            self.log_file.close()


# --- the job file ----------------------------------------------------------------

COMMAND_CODE = (
    "import os,sys,time,random,http.client as h\n"
    "from urllib.parse import quote\n"
    "e=os.environ;j=e['CRAWLSCHED_JOB_ID']\n"
    "q='sf=%s&a=%s&pid=%d'%(quote(e['CRAWLSCHED_SCHEDULED_FOR']),e['CRAWLSCHED_ATTEMPT'],os.getpid())\n"
    "def g(p):\n"
    " c=h.HTTPConnection('127.0.0.1',int(sys.argv[1]),timeout=5);c.request('GET','/cmd/%s?%s&phase=%s'%(j,q,p));"
    "c.getresponse().read();c.close()\n"
    "g('start');time.sleep(random.uniform(0,float(sys.argv[2])));rc=int(random.random()<float(sys.argv[3]))\n"
    "g('end');print('soak command exit',rc);sys.exit(rc)\n"
)


def command_for(port: int, sleep_max: float, fail_rate: float, marker: str) -> str:
    """A command job: no shell; the marker (last argument) finds its processes in /proc."""
    return shlex.join([sys.executable, "-c", COMMAND_CODE, str(port), str(sleep_max), str(fail_rate), marker])


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def make_jobs(n: int, rng: random.Random, port: int, marker: str, grace: float) -> tuple[str, list[str]]:
    """The job file text, and the ids of the jobs the CLI may edit during the soak."""
    today = datetime.now(timezone.utc).date().isoformat()
    lines = [
        "# crawlsched chaos soak: written by bench/soak.py",
        "[defaults]",
        'timezone = "UTC"',
        "max_concurrent = 16",
        f"grace_period = {grace:g}",
        "max_retries = 2",
        "retry_delay = 2",
        "",
    ]
    churn: list[str] = []
    n_cron = max(2, n // 15)
    n_churn = max(2, n // 12)
    for i in range(n):
        if i < n_cron:
            job_id, schedule = f"cron-{i:02d}", 'cron = "* * * * *"'
        else:
            job_id, schedule = f"every-{i:02d}", f'every = "{rng.randint(2, 10)}s"'
        if n - i <= n_churn:
            job_id = f"churn-{i:02d}"
            churn.append(job_id)
        lines += ["[[jobs]]", f'id = "{job_id}"', f'name = "{job_id}"', schedule, f"start_date = {today}"]
        if rng.random() < 0.35:
            lines.append(f"command = {toml_str(command_for(port, rng.choice((0.5, 1.5, 3.0)), 0.5, marker))}")
        else:
            urls = [f"http://127.0.0.1:{port}/job/{job_id}/{k}" for k in range(rng.choice((1, 1, 2)))]
            lines.append("url = [" + ", ".join(toml_str(u) for u in urls) + "]")
        lines.append("timeout = 10")
        lines.append(f"max_retries = {rng.choice((0, 1, 2, 3, 3))}")
        lines.append(f"retry_delay = {rng.choice((1, 2, 3))}")
        if rng.random() < 0.3:
            lines += ["retry_backoff = 1.5", "retry_max_delay = 3"]
        lines.append(f'catch_up = "{rng.choice(("latest", "none", "all"))}"')
        lines.append("")
    return "\n".join(lines), churn


# --- processes -------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.folder: Path = args.out
        self.home = self.folder / "home"
        self.jobs_file = self.home / "jobs.toml"
        self.marker = f"crawlsched-soak-{os.getpid()}-{args.seed}"
        self.env = dict(os.environ, CRAWLSCHED_HOME=str(self.home), CRAWLSCHED_JOBS=str(self.jobs_file), TZ="UTC",
                        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.env.pop("CRAWLSCHED_TOKEN", None)
        self.env.pop("NOTIFY_SOCKET", None)
        self.daemon: subprocess.Popen | None = None
        self.daemon_n = 0
        self.events: dict[str, Any] = {"seed": args.seed, "marker": self.marker, "signals": [], "starts": [],
                                       "cli_ops": [], "churned_jobs": [], "added_jobs": []}
        self.stop_edits = threading.Event()
        self.edit_thread: threading.Thread | None = None
        self.cli_procs: set[subprocess.Popen] = set()
        self.target: FlakyTarget | None = None

    # daemon

    def spawn(self) -> subprocess.Popen:
        self.daemon_n += 1
        out = open(self.folder / f"daemon-{self.daemon_n:03d}.out", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "crawlsched", "daemon"], cwd=self.home, env=self.env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.daemon = proc
        self.events["starts"].append({"n": self.daemon_n, "pid": proc.pid, "t": time.time()})
        return proc

    def wait_ready(self, proc: subprocess.Popen, timeout: float = READY_TIMEOUT) -> float | None:
        path = self.folder / f"daemon-{self.daemon_n:03d}.out"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"daemon ready" in path.read_bytes():
                t = time.time()
                self.events["starts"][-1]["ready"] = t
                return t
            if proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def start_daemon(self) -> None:
        for _ in range(3):
            proc = self.spawn()
            if self.wait_ready(proc) is not None:
                return
            rc = proc.poll()
            self.events["starts"][-1]["failed"] = rc
            if rc is None:
                self.kill_proc(proc)
            time.sleep(1)
        raise RuntimeError("the daemon did not become ready three times in a row; see daemon-*.out")

    def kill_proc(self, proc: subprocess.Popen) -> None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def signal_daemon(self, kind: str) -> dict[str, Any]:
        proc = self.daemon
        assert proc is not None
        entry: dict[str, Any] = {"kind": kind, "pid": proc.pid, "n": self.daemon_n, "sent": time.time()}
        os.kill(proc.pid, signal.SIGKILL if kind == "kill" else signal.SIGTERM)
        try:
            entry["rc"] = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            entry["rc"] = None
            entry["hung"] = True
            self.kill_proc(proc)
        entry["exited"] = time.time()
        self.daemon = None
        return entry

    # the CLI, concurrently

    def cli(self, *argv: str) -> dict[str, Any]:
        t = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "crawlsched", *argv], cwd=self.home, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.cli_procs.add(proc)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        finally:
            self.cli_procs.discard(proc)
        op = {"t": t, "argv": list(argv), "rc": proc.returncode, "seconds": round(time.time() - t, 3)}
        if proc.returncode != 0:
            op["stderr"] = err.strip()[-500:]
        self.events["cli_ops"].append(op)
        return op

    def edit_loop(self, churn: list[str]) -> None:
        rng = random.Random(self.args.seed + 1)
        port = self.target.port if self.target else 0
        added = 0
        while not self.stop_edits.wait(rng.uniform(4, 16)):
            roll = rng.random()
            job = rng.choice(churn)
            if roll < 0.85 and job not in self.events["churned_jobs"]:
                self.events["churned_jobs"].append(job)  # before the edit: its schedule may change from now on
            if roll < 0.3:
                self.cli("pause", job)
            elif roll < 0.6:
                self.cli("resume", job)
            elif roll < 0.85:
                self.cli("edit", job, "--every", f"{rng.randint(2, 10)}s", "--retry-delay", str(rng.randint(1, 3)))
            elif added < 6:
                added += 1
                name = f"added-{added}"
                op = self.cli("add", name, "--every", f"{rng.randint(3, 8)}s", "--url",
                              f"http://127.0.0.1:{port}/job/{name}/0", "--max-retries", "1", "--retry-delay", "1",
                              "--timeout", "10", "--tz", "UTC")
                if op["rc"] == 0:
                    self.events["added_jobs"].append({"id": name, "t": op["t"]})

    # leftovers

    def marker_processes(self) -> list[dict[str, Any]]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if self.marker.encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
                found.append({"pid": int(entry.name), "cmdline": b" ".join(cmdline).decode(errors="replace")[-160:]})
        return found

    def kill_markers(self) -> None:
        for p in self.marker_processes():
            try:
                os.kill(p["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass

    # the run

    def run(self) -> dict[str, Any]:
        args = self.args
        self.home.mkdir(parents=True, exist_ok=True)
        self.target = FlakyTarget(self.folder / "target-requests.jsonl", args.seed).start()
        text, churn = make_jobs(args.jobs, self.rng, self.target.port, self.marker, args.grace)
        if args.no_edits:
            churn_ids: list[str] = []
        else:
            churn_ids = churn
        self.jobs_file.write_text(text)
        (self.folder / "jobs-initial.toml").write_text(text)
        self.events["started"] = time.time()
        deadline = time.monotonic() + args.minutes * 60
        self.start_daemon()
        if churn_ids:
            self.edit_thread = threading.Thread(target=self.edit_loop, args=(churn_ids,), daemon=True)
            self.edit_thread.start()
        first_kinds = self.rng.sample(["kill", "term"], 2)
        while True:
            wait = self.rng.uniform(args.min_wait, args.max_wait)
            if self.rng.random() < 0.1:
                wait = self.rng.uniform(0.2, 1.5)  # now and then, a kill soon after a start
            if time.monotonic() + wait >= deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                break
            time.sleep(wait)
            if len(self.events["signals"]) < 2:  # both kinds, even in a short run
                kind = first_kinds[len(self.events["signals"])]
            else:
                kind = "term" if self.rng.random() < args.term_share else "kill"
            entry = self.signal_daemon(kind)
            down = self.rng.choice((0.0, 0.0, 0.5, 2.0, 5.0))
            time.sleep(down)
            self.start_daemon()
            entry["restarted"] = self.events["starts"][-1]["t"]
            entry["restarted_ready"] = self.events["starts"][-1].get("ready")
            self.events["signals"].append(entry)
        self.stop_edits.set()
        if self.edit_thread is not None:
            self.edit_thread.join(timeout=90)
        final = self.signal_daemon("term")
        self.events["final_stop"] = final
        time.sleep(1.0)
        self.events["leftover_processes"] = self.marker_processes()
        self.events["ended"] = time.time()
        self.write_events()
        self.target.stop()
        self.target = None
        result = soak_check.check(self.folder, margin=args.margin)
        result["target"] = self.events.get("target_counts", {})
        return result

    def write_events(self) -> None:
        if self.target is not None:
            self.events["target_counts"] = dict(self.target.counts)
        (self.folder / "soak-events.json").write_text(json.dumps(self.events, indent=1))

    def cleanup(self) -> None:
        """Whatever happened: no daemon, no CLI, no command of ours is left running."""
        self.stop_edits.set()
        if self.daemon is not None and self.daemon.poll() is None:
            try:
                os.kill(self.daemon.pid, signal.SIGTERM)
                self.daemon.wait(timeout=STOP_TIMEOUT)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill_proc(self.daemon)
        for proc in list(self.cli_procs):
            if proc.poll() is None:
                proc.kill()
        self.kill_markers()
        if self.target is not None:
            self.write_events()
            self.target.stop()


# --- output ------------------------------------------------------------------------

TABLE = [
    ("minutes", "minutes of chaos"), ("jobs", "jobs"), ("kills", "SIGKILL restarts"), ("terms", "SIGTERM restarts"),
    ("cli_edits", "CLI edits during the run"), ("attempts", "attempts (rows)"), ("expected_fires", "fires checked"),
    ("missed_fires", "fires recorded missed"), ("duplicates", "duplicated attempts"), ("lost_fires", "lost fires"),
    ("lost_fires_in_grace", "  of them in a SIGTERM grace window"), ("orphans", "orphans (rows + processes)"),
    ("overlapping_commands", "command runs overlapping"), ("chains_incomplete", "retry chains incomplete"),
    ("requests_per_attempt", "requests per URL-job attempt"),
    ("requests_per_url_of_an_attempt", "requests per URL of an attempt (<= 1)"), ("max_requests_per_url_per_attempt", "max requests per URL per attempt"),
    ("requests_outside_attempts", "requests outside any attempt"), ("commands_without_row", "commands without a row"),
    ("off_schedule_rows", "rows off the schedule"), ("fires_recorded_twice", "fires recorded twice"),
    ("missed_count_mismatch", "missed rows with a wrong count"), ("daemon_bad_exits", "SIGTERM exits not 0"),
    ("cli_errors", "CLI edits that failed"), ("stale_part_files", ".part files left"),
    ("daemon_internal_errors", "internal errors in the daemon's output"),
]


def print_table(result: dict[str, Any]) -> None:
    fig = result["figures"]
    width = max(len(label) for _, label in TABLE)
    for key, label in TABLE:
        print(f"  {label:<{width}}  {fig.get(key)}")
    print(f"  {'rows by status':<{width}}  {fig['rows_by_status']}")
    if result["violation_counts"]:
        print("violations:")
        for kind, n in result["violation_counts"].items():
            first = result["violations"][kind][0] if result["violations"].get(kind) else {}
            print(f"  {kind}: {n}   e.g. {json.dumps(first)[:300]}")
    print("OK: every invariant held" if result["ok"] else "FAILED: see the violations above")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Chaos soak of the real crawlsched daemon (loopback only).")
    ap.add_argument("--minutes", type=float, required=True, help="how long to run the chaos")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock; printed)")
    ap.add_argument("--jobs", type=int, default=60, help="jobs in the file (default 60)")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default bench/results/soak-<stamp>)")
    ap.add_argument("--grace", type=float, default=4.0, help="grace_period of the daemon, seconds (default 4)")
    ap.add_argument("--term-share", type=float, default=0.35, help="share of restarts done with SIGTERM (default 0.35)")
    ap.add_argument("--min-wait", type=float, default=3.0, help="least seconds between restarts (default 3)")
    ap.add_argument("--max-wait", type=float, default=15.0, help="most seconds between restarts (default 15)")
    ap.add_argument("--margin", type=float, default=2.0, help="seconds before the final stop not checked for lost fires")
    ap.add_argument("--no-edits", action="store_true", help="no CLI edits of the job file during the run")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 100000
    if args.out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        args.out = HERE / "results" / f"soak-{stamp}"
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"soak: {args.minutes:g} min, seed {args.seed}, {args.jobs} jobs, folder {args.out}", flush=True)
    soak = Soak(args)
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both end the run through the cleanup below (SIGINT too when the
    # harness was started in the background, where a shell leaves SIGINT ignored).
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = soak.run()
    except KeyboardInterrupt:
        print("soak: interrupted; stopping what it started", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"soak: the harness failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise
    finally:
        soak.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    (args.out / "soak-result.json").write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"figures and violations: {args.out / 'soak-result.json'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
