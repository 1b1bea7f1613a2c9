"""cli/daemon.py's commands with real processes: `crawlsched run` (signals, the child's environment,
its ERROR lines) against a real local server, and `stop` / `run-now` signalling only our daemon.

Linux-only where process groups are checked (/proc).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crawlsched.state import State
from helpers.jobs import write_jobs
from helpers.process import ctrl_c_as_in_a_terminal

TOKEN = "tok-SECRET-9f8e7d6c5b4a"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLSCHED_")}
    env.update(CRAWLSCHED_HOME=str(home), CRAWLSCHED_JOBS=str(home / "jobs.toml"), TZ="UTC", NO_PROXY="*")
    env.update(extra)
    return env


def crawlsched(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crawlsched", *args], env=cli_env(home, **extra),
                          capture_output=True, text=True, timeout=60)


def rows(home: Path, job_id: str) -> list:
    st = State(home / "crawlsched.db").open()
    try:
        return st.runs(job_id)
    finally:
        st.close()


def group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def error_lines(home: Path) -> list[str]:
    return [line for f in (home / "logs").glob("crawler_*.log") for line in f.read_text().splitlines()
            if " - ERROR - " in line]



class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, dict(self.headers.items())))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.server.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        code = 404 if self.path.startswith("/missing") else 500 if self.path.startswith("/broken") else 200
        body = b"body\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_server() -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.seen, srv.location = [], ""
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    srv.url = f"http://127.0.0.1:{srv.server_port}"
    return srv


@pytest.fixture
def server():
    srv = start_server()
    yield srv
    srv.shutdown()
    srv.server_close()


# --- run: Ctrl-C / SIGTERM stop the command's group ----------------------------------------------


def started_group(pidfile: Path) -> int:
    """The process group the job's command wrote to ``pidfile`` once it started (``echo $$``)."""
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    return int(pidfile.read_text())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_run_stops_the_group_and_closes_the_row(tmp_path, sig):
    home = tmp_path / "home"
    pidfile = tmp_path / "child.pid"
    write_jobs(home, f'''[[jobs]]
id = "sleeper"
name = "sleeper"
every = "1d"
timezone = "UTC"
max_retries = 2
retry_delay = 1
command = "sh -c 'echo $$ > {pidfile}; exec sleep 60'"
''')
    proc = subprocess.Popen([sys.executable, "-m", "crawlsched", "run", "sleeper"], env=cli_env(home),
                            preexec_fn=ctrl_c_as_in_a_terminal,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pgid = started_group(pidfile)
        assert group_alive(pgid)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (1, 130), (proc.returncode, err)
    assert "Traceback" not in err, err
    if sig == signal.SIGINT:
        assert "interrupted" in err
    assert not group_alive(pgid), "the command's process group outlived `crawlsched run`"
    attempts = rows(home, "sleeper")
    assert [r.status for r in attempts] == ["interrupted"], [(r.status, r.message) for r in attempts]
    assert attempts[0].message == "interrupted" and attempts[0].finished_at is not None
    assert len(error_lines(home)) == 1


def test_a_run_after_a_sigkilled_run_settles_the_row_it_left_and_stops_its_command(tmp_path):
    """SIGKILL gives `crawlsched run` no chance to close its row or stop its command; the next
    `run` of the job does (as a daemon's start would): interrupted, the group stopped."""
    home = tmp_path / "home"
    pidfile = tmp_path / "child.pid"
    write_jobs(home, f'''[[jobs]]
id = "sleeper"
name = "sleeper"
every = "1d"
timezone = "UTC"
max_retries = 0
command = "sh -c 'if [ -s {pidfile} ]; then exit 0; fi; echo $$ > {pidfile}; exec sleep 60'"
''')
    proc = subprocess.Popen([sys.executable, "-m", "crawlsched", "run", "sleeper"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pgid = started_group(pidfile)
        proc.kill()
        proc.wait()
        assert group_alive(pgid)  # nobody stopped it: SIGKILL
        again = subprocess.run([sys.executable, "-m", "crawlsched", "run", "sleeper"], env=cli_env(home),
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        outlived = group_alive(pgid)
    finally:
        if pidfile.exists() and pidfile.read_text().strip() and group_alive(int(pidfile.read_text())):
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    assert again.returncode == 0, again.stderr
    assert not outlived, "the killed run's command outlived the next run"
    attempts = sorted(rows(home, "sleeper"), key=lambda r: r.id)
    assert [r.status for r in attempts] == ["interrupted", "success"], [(r.status, r.message) for r in attempts]
    assert attempts[0].finished_at is not None and "stopped" in attempts[0].message


# --- run: the API token never reaches a crawl command ---------------------------------------------


def test_token_is_not_in_a_command_jobs_environment(tmp_path):
    home = tmp_path / "home"
    write_jobs(home, '''[[jobs]]
id = "envy"
name = "envy"
every = "1d"
timezone = "UTC"
max_retries = 0
command = "sh -c 'env; echo MARKER_PRESENT=$MARKER; exit 1'"
on_failure = "env"
''')
    result = crawlsched(home, "run", "envy", CRAWLSCHED_TOKEN=TOKEN, MARKER="yes")
    assert result.returncode == 1, result.stderr
    logs = list((home / "logs" / "runs" / "envy").glob("*.log"))
    assert len(logs) == 2, logs  # the attempt's log and on_failure's
    for log in logs:
        text = log.read_text()
        assert "CRAWLSCHED_JOB_ID=envy" in text  # the log really holds the environment
        assert TOKEN not in text and "CRAWLSCHED_TOKEN" not in text, log
    assert any("MARKER_PRESENT=yes" in log.read_text() for log in logs)  # other variables still pass


# --- run: exactly one ERROR line per failed run ---------------------------------------------------


def test_permanent_404_logs_exactly_one_error_and_run_json_has_error(server, tmp_path):
    home = tmp_path / "home"
    write_jobs(home, f'''[[jobs]]
id = "gone"
name = "gone"
every = "1d"
timezone = "UTC"
max_retries = 3
retry_delay = 1
url = "{server.url}/missing"
''')
    result = crawlsched(home, "run", "gone", "--json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["success"] is False and "HTTP 404" in data["error"]
    errors = error_lines(home)
    assert len(errors) == 1, errors
    assert "❌ Job gone failed: HTTP 404" in errors[0] and "(not retried)" in errors[0]


def test_exhausted_retries_log_only_the_seeds_max_retries_line(server, tmp_path):
    home = tmp_path / "home"
    write_jobs(home, f'''[[jobs]]
id = "flaky"
name = "flaky"
every = "1d"
timezone = "UTC"
max_retries = 1
retry_delay = 0
url = "{server.url}/broken"
''')
    assert crawlsched(home, "run", "flaky").returncode == 1
    errors = error_lines(home)
    assert len(errors) == 1 and errors[0].endswith("❌ Max retries reached for job flaky"), errors


# --- stop / run-now signal only our daemon ---------------------------------------------------

HOLDER = """
import fcntl, os, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
if sys.argv[2] == "lock":
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{sys.argv[3] if len(sys.argv) > 3 else os.getpid()}\\n".encode(), 0)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_home):
    made = []

    def start(mode: str, *extra: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_home.path / ".crawlsched-daemon.lock"), mode,
                                 *extra], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        made.append(proc)
        return proc

    yield start
    for proc in made:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def register(tmp_home, pid: int, host: str | None = None) -> None:
    st = State(tmp_home.db).open()
    st.daemon_started(pid, host or socket.gethostname(), "0.1.0", time.time())
    st.close()


def test_stop_signals_the_daemon_that_holds_the_lock(cli, tmp_home, holder):
    proc = holder("lock")
    register(tmp_home, proc.pid)
    result = cli("stop", "--json")
    assert result.exit_code == 0, result.output
    assert proc.wait(timeout=5) == -signal.SIGTERM


@pytest.mark.parametrize("case", ["no lock held", "lock held by another pid", "other host"])
def test_stop_and_run_now_leave_an_unrelated_process_alone(cli, tmp_home, holder, case):
    if case == "no lock held":
        proc = holder("nolock")
        register(tmp_home, proc.pid)
    elif case == "lock held by another pid":
        proc = holder("nolock")
        holder("lock", "1")  # a daemon whose lock names another pid
        register(tmp_home, proc.pid)
    else:
        proc = holder("lock")
        register(tmp_home, proc.pid, host="some-other-machine")
    cli("add", "Now", "--every", "1h", "--command", "true")
    assert cli("stop").exit_code == 3
    assert cli("run-now", "now").exit_code == 3
    time.sleep(0.2)
    assert proc.poll() is None, "an unrelated process was signalled"
    from crawlsched.cli.daemon import live_daemon

    st = State(tmp_home.db).open()
    try:
        assert live_daemon(st, time.time(), tmp_home.path) is None
    finally:
        st.close()


def test_the_daemon_command_loads_its_jobs_with_the_collector_paused_and_freezes_them(tmp_path):
    # In a child: the collector is the whole process's, and the daemon's first load is the CLI's own.
    write_jobs(tmp_path, "".join(f'[[jobs]]\nid = "j{i}"\nevery = "1h"\ncommand = "true"\n\n' for i in range(50)))
    code = (
        "import gc\n"
        "from crawlsched.cli import env\n"
        "from crawlsched.cli.daemon import _daemon_state\n"
        "import crawlsched.jobread as jobread\n"
        "real, seen = jobread.JobReads.load, []\n"
        "def load(self, **kw):\n"
        "    seen.append(gc.isenabled())\n"
        "    return real(self, **kw)\n"
        "jobread.JobReads.load = load\n"
        "before = gc.get_freeze_count()\n"
        "_daemon_state(env().store())\n"
        "print(seen, gc.isenabled(), gc.get_freeze_count() - before > 500)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(tmp_path), capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == ["[False]", "True", "True"], out.stderr
