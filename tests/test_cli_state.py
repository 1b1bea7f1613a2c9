"""The read side: list/show/history/status over a state database written through ``State``'s own methods."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone

import pytest

from crawlsched.state import Retry, State

UTC = timezone.utc
URL = "https://example.com/news"
# 2026-12-01 02:05 UTC is 09:05 in Asia/Jakarta (UTC+7, no daylight saving).
T0 = datetime(2026, 12, 1, 2, 5, tzinfo=UTC).timestamp()
PAST = date.today() - timedelta(days=30)


@pytest.fixture
def state(tmp_home):
    st = State(tmp_home.db).open()
    yield st
    st.close()


def add(cli, name, *extra):
    result = cli("add", name, "--at", "09:05", "--url", URL, "--tz", "Asia/Jakarta", *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def attempt(st, job_id, status, *, n=1, of=4, at=T0, pid=None, message=None, retry=None, finish=True, **extra):
    run_id = st.start_attempt(job_id, at, n, of, trigger="schedule", started_at=at + n, pid=pid or os.getpid())
    if finish:
        st.finish_attempt(run_id, status=status, finished_at=at + n + 2, message=message or status, retry=retry, **extra)
    return run_id


def listed(cli):
    return {j["id"]: j for j in cli("list", "--json").json()["jobs"]}


# A stand-in daemon does what the real one does to be seen as up: holds the home's
# lock with its pid in it, and registers with this machine's host name.
_HOLD_LOCK = (
    "import fcntl, os, signal, sys, time; signal.signal(signal.SIGUSR1, signal.SIG_IGN); "
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644); fcntl.flock(fd, fcntl.LOCK_EX); "
    "os.ftruncate(fd, 0); os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0); print(1, flush=True); time.sleep(120)"
)


@pytest.fixture
def fake_daemon(state, tmp_home):
    """A live process standing in for the daemon (it ignores run-now's SIGUSR1 wake-up), registered as up."""
    import socket

    lock = tmp_home.path / ".crawlsched-daemon.lock"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE)
    proc.stdout.readline()  # its handler and the lock are in place
    state.daemon_started(proc.pid, socket.gethostname(), "0.1.0", time.time())
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- status derivation -----------------------------------------------------------------------


def test_job_status_is_derived_from_the_history(cli, tmp_home, state):
    ids = {name: add(cli, name) for name in ("ok", "bad", "again", "busy", "cut", "stale", "held", "fresh", "only-missed")}
    attempt(state, ids["ok"], "failed")
    attempt(state, ids["ok"], "success", n=2, message="saved 1 file")
    attempt(state, ids["bad"], "failed", message="HTTP 503")
    attempt(state, ids["again"], "failed", retry=Retry(ids["again"], T0, 2, 4, T0 + 300, "schedule"))
    attempt(state, ids["busy"], "running", finish=False)  # our own pid: alive
    attempt(state, ids["cut"], "interrupted", message="daemon stopped")
    attempt(state, ids["stale"], "running", finish=False, pid=dead_pid())
    attempt(state, ids["held"], "success")
    cli("pause", ids["held"])
    state.record_not_run(ids["only-missed"], T0, "missed", "missed 3 fires", now=T0 + 10, missed_count=3, first_missed=T0 - 172800, last_missed=T0)

    jobs = listed(cli)
    assert {k: jobs[v]["status"] for k, v in ids.items()} == {
        "ok": "success",
        "bad": "failed",
        "again": "retrying",
        "busy": "running",
        "cut": "failed",  # an interrupted attempt with no retry left counts as failed
        "stale": "failed",  # "running" but its process is gone
        "held": "paused",
        "fresh": "active",
        "only-missed": "active",  # skipped and missed fires are not attempts
    }
    ok = jobs[ids["ok"]]
    assert ok["last_run"] == "2026-12-01 09:05:02"  # the newest attempt's start, in the job's zone
    assert ok["last_run_iso"] == "2026-12-01T09:05:02+07:00"
    assert ok["last_message"] == "saved 1 file"
    assert jobs[ids["bad"]]["last_message"] == "HTTP 503"
    assert jobs[ids["only-missed"]]["last_run"] is None


def test_finished_job_status_and_no_next_run(cli, tmp_home, state):
    with tmp_home.jobs_file.open("a") as fh:
        fh.write(f'[[jobs]]\nid = "over"\nname = "Over"\nat = "09:05"\nstart_date = {PAST}\n'
                 f'end_date = {PAST + timedelta(days=3)}\nurl = ["{URL}"]\ntimezone = "UTC"\n')  # fmt: skip
    attempt(state, "over", "success")
    job = listed(cli)["over"]
    assert job["status"] == "finished" and job["next_run"] is None and job["next_run_iso"] is None
    assert job["last_run"] is not None


def test_list_table_shows_status_and_last_message(cli, state):
    job_id = add(cli, "Shown")
    attempt(state, job_id, "failed", message="HTTP 503 Service Unavailable")
    out = cli("list").stdout
    assert "failed" in out and "HTTP 503 Service Unavailable" in out and "2026-12-01 09:05:01" in out


# --- history and show -------------------------------------------------------------------------


def test_history_newest_first_with_success_rate_over_attempts(cli, state):
    job_id = add(cli, "Rated")
    attempt(state, job_id, "failed", n=1)
    attempt(state, job_id, "success", n=2)
    attempt(state, job_id, "success", at=T0 + 86400)
    attempt(state, job_id, "interrupted", at=T0 + 2 * 86400)
    state.record_not_run(job_id, T0 + 3 * 86400, "skipped", "still running", now=T0 + 3 * 86400)
    state.record_not_run(job_id, T0 + 5 * 86400, "missed", "missed 2 fires", now=T0 + 5 * 86400,
                         missed_count=2, first_missed=T0 + 4 * 86400, last_missed=T0 + 5 * 86400)  # fmt: skip
    result = cli("history", job_id, "--json")
    assert result.exit_code == 0
    data = result.json()
    assert set(data) == {"success", "runs", "success_rate"}
    assert [r["status"] for r in data["runs"]] == ["missed", "skipped", "interrupted", "success", "success", "failed"]
    assert data["success_rate"] == pytest.approx(2 / 4)  # skipped and missed do not count
    assert [r["attempt"] for r in data["runs"]][:2] == [0, 0]

    missed = data["runs"][0]
    assert missed["missed_count"] == 2
    assert missed["first_missed"] == "2026-12-05 09:05:00" and missed["last_missed"] == "2026-12-06 09:05:00"
    assert "missed_count" not in data["runs"][2]

    limited = cli("history", job_id, "--limit", 3, "--json").json()
    assert len(limited["runs"]) == 3
    assert limited["success_rate"] == 0.0  # only the interrupted attempt is listed

    text = cli("history", job_id).stdout
    assert "success rate: 50% (2 of 4 attempts)" in text


def test_run_object_field_by_field(cli, state):
    job_id = add(cli, "Fields")
    attempt(state, job_id, "success", http_status=200, bytes=1234, output="data/fields/x/news.html", message="saved")
    [run] = cli("show", job_id, "--json").json()["runs"]
    assert isinstance(run["id"], int)
    assert run["job_id"] == job_id
    assert run["scheduled_for"] == "2026-12-01 09:05:00" and run["scheduled_for_iso"] == "2026-12-01T09:05:00+07:00"
    assert (run["attempt"], run["max_attempts"]) == (1, 4)
    assert run["started_at"] == "2026-12-01 09:05:01" and run["started_at_iso"] == "2026-12-01T09:05:01+07:00"
    assert run["finished_at"] == "2026-12-01 09:05:03" and run["finished_at_iso"] == "2026-12-01T09:05:03+07:00"
    assert run["status"] == "success" and run["message"] == "saved" and run["trigger"] == "schedule"
    assert (run["http_status"], run["exit_code"], run["bytes"], run["output"]) == (200, None, 1234, "data/fields/x/news.html")


def test_show_lists_recent_attempts(cli, state):
    job_id = add(cli, "Shown")
    for day in range(12):
        attempt(state, job_id, "success", at=T0 + day * 86400)
    data = cli("show", job_id, "--json").json()
    assert len(data["runs"]) == 10 and data["job"]["status"] == "success"
    assert len(cli("show", job_id, "--limit", 3, "--json").json()["runs"]) == 3
    text = cli("show", job_id).stdout
    assert "1/4" in text and "success" in text


def test_history_of_all_jobs_and_of_a_removed_job(cli, state):
    a, b = add(cli, "A"), add(cli, "B")
    attempt(state, a, "success")
    attempt(state, b, "failed")
    assert {r["job_id"] for r in cli("history", "--json").json()["runs"]} == {a, b}
    assert cli("rm", b, "--yes").exit_code == 0
    gone = cli("history", b, "--json")
    assert gone.exit_code == 0
    [run] = gone.json()["runs"]
    assert run["started_at_iso"].endswith("+00:00")  # the job is gone, so UTC
    assert cli("history", "never-was").exit_code == 1


def test_history_without_a_database_is_empty_and_creates_none(cli, tmp_home):
    add(cli, "Lonely")
    tmp_home.db.unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_home.path / f"crawlsched.db{suffix}").unlink(missing_ok=True)
    assert cli("history", "--json").json() == {"success": True, "runs": [], "success_rate": None}
    assert cli("list", "--json").json()["jobs"][0]["status"] == "active"
    assert not tmp_home.db.exists()


# --- status, stop, run-now --------------------------------------------------------------------


def test_status_without_a_daemon_is_exit_3(cli, tmp_home):
    add(cli, "Next")
    result = cli("status", "--json")
    assert result.exit_code == 3
    data = result.json()
    assert data["running"] is False and data["pid"] is None
    assert data["config_ok"] is True and data["config_error"] is None
    assert data["next_job"] == "next" and data["next_run"].endswith("09:05:00")
    for key in ("started_at", "heartbeat", "next_run_iso"):
        assert key in data
    assert "not running" in cli("status").stdout


def test_status_reports_a_broken_file_when_the_daemon_is_down(cli, tmp_home):
    tmp_home.jobs_file.write_text('[[jobs]]\nid = "x"\nat = "25:00"\nurl = "https://e.com/"\n')
    result = cli("status", "--json")
    assert result.exit_code == 3
    assert result.json()["config_ok"] is False
    assert result.json()["config_error"].startswith("jobs.toml:3:")


def test_status_with_a_live_daemon_is_exit_0(cli, state, fake_daemon, monkeypatch):
    add(cli, "Next", "--start", "2026-11-30")
    state.daemon_update(config_ok=1, config_error=None, next_job="next", next_due=T0)
    result = _status_json(cli, monkeypatch)
    assert result.exit_code == 0, result.output
    data = result.json()
    assert data["running"] is True and data["pid"] == fake_daemon.pid and data["config_ok"] is True
    assert data["next_job"] == "next" and data["next_run"] == "2026-11-30 09:05:00"
    assert data["started_at"] is not None and data["heartbeat"] is not None
    assert f"pid {fake_daemon.pid}" in cli("status").stdout


def test_status_with_a_stale_heartbeat_is_down(cli, state, fake_daemon):
    state.daemon_update(heartbeat=time.time() - 200)
    assert cli("status", "--json").json()["running"] is False
    assert cli("status").exit_code == 3


def test_stop_without_a_daemon_is_exit_3(cli):
    result = cli("stop")
    assert result.exit_code == 3 and "not running" in result.stderr


def test_stop_sends_sigterm_and_waits(cli, fake_daemon):
    result = cli("stop", "--json")
    assert result.exit_code == 0, result.output
    assert result.json()["pid"] == fake_daemon.pid
    assert fake_daemon.wait(timeout=5) == -15


def test_run_now_without_a_daemon_is_exit_3(cli):
    add(cli, "Now")
    result = cli("run-now", "now", "--json")
    assert result.exit_code == 3 and result.json()["success"] is False


def test_run_now_hands_the_request_to_the_daemon(cli, tmp_home, fake_daemon):
    job_id = add(cli, "Now")
    taken: list[tuple[int, str, float]] = []

    def daemon_side() -> None:
        other = State(tmp_home.db).open()
        deadline = time.monotonic() + 5
        while not taken and time.monotonic() < deadline:
            taken.extend(other.take_requests(time.time()))
            time.sleep(0.02)
        other.close()

    thread = threading.Thread(target=daemon_side)
    thread.start()
    result = cli("run-now", "Now", "--json")
    thread.join()
    assert result.exit_code == 0, result.output
    assert result.json()["taken"] is True and result.json()["job_id"] == job_id
    assert [t[1] for t in taken] == [job_id]


def test_run_now_not_taken_in_time_stays_queued(cli, state, fake_daemon, monkeypatch):
    monkeypatch.setattr("crawlsched.cli.HANDOVER_WAIT", 0.2)
    add(cli, "Now")
    result = cli("run-now", "now", "--json")
    assert result.exit_code == 0
    assert result.json()["taken"] is False
    assert state.take_requests(time.time())[0][1] == "now"


def test_status_up_with_this_process_as_the_daemon(cli, state, tmp_home):
    import fcntl
    import socket

    fd = os.open(tmp_home.path / ".crawlsched-daemon.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        state.daemon_started(os.getpid(), socket.gethostname(), "0.1.0", time.time())
        result = cli("status", "--json")
        assert result.exit_code == 0 and result.json()["running"] is True and result.json()["pid"] == os.getpid()
    finally:
        os.close(fd)


# --- status --json: the exact shape (built once in render.status_dict, shared with the web API) ----


FIXED_NOW = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


def _status_json(cli, monkeypatch):
    monkeypatch.setattr("crawlsched.cli.show._now", lambda: FIXED_NOW)
    return cli("status", "--json")


def test_status_json_is_exactly_as_before_without_a_daemon(cli, tmp_home, monkeypatch):
    add(cli, "Later", "--tz", "UTC")  # 09:05 UTC
    add(cli, "Sooner")  # 09:05 Asia/Jakarta = 02:05 UTC
    cli("pause", "sooner")
    add(cli, "Soonest", "--start", "2026-11-30")
    result = _status_json(cli, monkeypatch)
    assert result.exit_code == 3
    assert result.json() == {
        "success": True, "running": False, "pid": None, "host": None, "version": None,
        "started_at": None, "started_at_iso": None, "heartbeat": None, "heartbeat_iso": None, "http": None,
        "config_ok": True, "config_error": None, "scheduler_paused": False, "next_job": "soonest",
        "next_run": "2026-11-30 09:05:00", "next_run_iso": "2026-11-30T09:05:00+07:00",
        "jobs_file": str(tmp_home.jobs_file), "home": str(tmp_home.path),
    }
    assert list(result.json()) == ["success", "running", "pid", "host", "version", "started_at", "started_at_iso",
                                   "heartbeat", "heartbeat_iso", "http", "config_ok", "config_error", "scheduler_paused", "next_job",
                                   "next_run", "next_run_iso", "jobs_file", "home"]


def test_status_json_is_exactly_as_before_with_a_daemon(cli, tmp_home, state, fake_daemon, monkeypatch):
    add(cli, "Next", "--start", "2026-11-30")
    state.daemon_update(config_ok=0, config_error="jobs.toml:1: broken", next_job="next", next_due=T0,
                        http="http://127.0.0.1:5000")
    monkeypatch.setattr("crawlsched.cli.show.live_daemon", lambda st, now, home=None: st.daemon())  # up, whatever the lock
    result = _status_json(cli, monkeypatch)
    assert result.exit_code == 0, result.output
    data = result.json()
    assert {k: data[k] for k in ("running", "pid", "host", "version", "http", "config_ok", "config_error",
                                 "next_job", "next_run", "next_run_iso")} == {
        "running": True, "pid": fake_daemon.pid, "host": data["host"], "version": "0.1.0",
        "http": "http://127.0.0.1:5000", "config_ok": False, "config_error": "jobs.toml:1: broken",
        "next_job": "next", "next_run": "2026-11-30 09:05:00", "next_run_iso": "2026-11-30T09:05:00+07:00"}
    assert "state_error" not in data and "job_count" not in data


def test_status_says_what_is_next_as_of_now_not_as_of_the_daemons_last_heartbeat(cli, state, fake_daemon, monkeypatch):
    add(cli, "Next", "--start", "2026-11-30")  # 09:05 Jakarta = 02:05 UTC
    # The row's "next" was written at a heartbeat a day ago: a time long past.
    state.daemon_update(next_job="next", next_due=FIXED_NOW.timestamp() - 86400)
    data = _status_json(cli, monkeypatch).json()
    assert (data["next_job"], data["next_run_iso"]) == ("next", "2026-11-30T09:05:00+07:00")


def test_status_next_is_a_pending_retry_when_it_comes_first(cli, state, fake_daemon, monkeypatch):
    add(cli, "Next", "--start", "2026-11-30")
    job_id = add(cli, "Retrying", "--start", "2026-11-30", "--at", "23:00")
    due = FIXED_NOW.timestamp() + 60  # 08:01 Jakarta, before Next's 09:05
    attempt(state, job_id, "failed", at=FIXED_NOW.timestamp() - 600,
            retry=Retry(job_id, FIXED_NOW.timestamp() - 600, 2, 4, due, "schedule"))
    data = _status_json(cli, monkeypatch).json()
    assert (data["next_job"], data["next_run_iso"]) == (job_id, "2026-11-30T08:01:00+07:00")


def test_status_with_a_corrupt_database_is_down_with_the_error(cli, tmp_home):
    add(cli, "Next")
    tmp_home.db.write_bytes(b"this is not a sqlite database" * 100)
    result = cli("status", "--json")
    assert result.exit_code == 3, result.output
    data = result.json()
    assert data["running"] is False and data["pid"] is None and data["success"] is True
    assert str(tmp_home.db) in data["state_error"]
    assert data["config_ok"] is True and data["next_job"] == "next"
    assert cli("status").exit_code == 3


def test_status_with_a_corrupt_database_but_a_held_daemon_lock_is_up(cli, tmp_home):
    tmp_home.db.write_bytes(b"this is not a sqlite database" * 100)
    lock = tmp_home.path / ".crawlsched-daemon.lock"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()
        result = cli("status", "--json")
        assert result.exit_code == 0, result.output
        data = result.json()
        assert data["running"] is True and data["pid"] == proc.pid and str(tmp_home.db) in data["state_error"]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.slow
def test_run_now_of_a_busy_job_exits_1_saying_why_and_queues_nothing(tmp_path):
    """The real daemon as a subprocess: a job whose attempt is running, and one waiting for its retry."""
    import json
    import sqlite3

    from daemon_helpers import DaemonProcess, Target, cli as run, wait_for, write_jobs

    target = Target()
    home = tmp_path / "home"
    write_jobs(home, f'[[jobs]]\nid = "slow"\nat = "23:59"\ncommand = "sleep 30"\n\n'
                     f'[[jobs]]\nid = "flaky"\nat = "23:59"\nurl = "{target.url("/fail")}"\nmax_retries = 2\nretry_delay = 300\n')
    daemon = DaemonProcess(home, "--grace", "1").start()  # the sleeping command is stopped at the end

    def requests_queued() -> int:
        con = sqlite3.connect(home / "crawlsched.db", timeout=10)
        try:
            return con.execute("SELECT count(*) FROM requests").fetchone()[0]
        finally:
            con.close()

    try:
        assert run(home, "run-now", "slow").returncode == 0
        assert run(home, "run-now", "flaky").returncode == 0
        wait_for(lambda: json.loads(run(home, "show", "slow", "--json").stdout)["job"]["status"] == "running", 10, "slow running")
        wait_for(lambda: json.loads(run(home, "show", "flaky", "--json").stdout)["job"]["status"] == "retrying", 10, "flaky retrying")
        queued = requests_queued()

        busy = run(home, "run-now", "slow")
        assert busy.returncode == 1
        assert busy.stderr.startswith("crawlsched: error: job slow is running (attempt 1/4, since ")
        assert busy.stderr.rstrip().endswith("nothing was queued (runs of one job never overlap)")
        waiting = run(home, "run-now", "flaky", "--json")
        assert waiting.returncode == 1
        error = json.loads(waiting.stdout)
        assert error["success"] is False
        assert error["error"].startswith("job flaky is waiting for its retry (attempt 2/3 at ")
        assert requests_queued() == queued  # nothing was handed to the daemon
    finally:
        assert daemon.stop() == 0
        target.close()
    skipped = sqlite3.connect(home / "crawlsched.db").execute("SELECT count(*) FROM runs WHERE status = 'skipped'").fetchone()[0]
    assert skipped == 0


# --- run: a job never overlaps itself (the real two-process scenarios: tests/reliability/test_job_overlap.py) ---


def _claim(state, job_id, owner, pid):
    from crawlsched import procs

    assert state.claim_chain(job_id, owner, pid, procs.identity(pid), time.time()) is None


def test_run_refuses_while_the_daemon_waits_to_retry_the_job(cli, state, fake_daemon):
    assert cli("add", "Cmd", "--every", "1h", "--command", "true").exit_code == 0
    _claim(state, "cmd", "daemon", fake_daemon.pid)
    attempt(state, "cmd", "failed", retry=Retry("cmd", T0, 2, 4, T0 + 300, "schedule"))
    result = cli("run", "cmd", "--json")
    assert result.exit_code == 1
    assert f"the daemon (pid {fake_daemon.pid}) is waiting to retry it (attempt 2/4 at" in result.json()["error"]
    assert [r.trigger for r in state.runs("cmd")] == ["schedule"], "nothing ran"


def test_run_goes_on_when_the_chains_owner_is_dead_and_releases_its_claim(cli, state):
    assert cli("add", "Cmd", "--every", "1h", "--command", "true").exit_code == 0
    _claim(state, "cmd", "daemon", os.getpid())
    with state.write() as c:  # the claim of a daemon that was killed: its pid is gone
        c.execute("UPDATE chain_claims SET owner_pid = ?", (dead_pid(),))
    result = cli("run", "cmd")
    assert result.exit_code == 0, result.output
    assert [(r.trigger, r.status) for r in state.runs("cmd")] == [("run", "success")]
    assert state.claim("cmd") is None


def test_run_now_refuses_while_a_run_chain_in_another_process_holds_the_job(cli, state, fake_daemon):
    assert cli("add", "Cmd", "--every", "1h", "--command", "true").exit_code == 0
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands in for `crawlsched run`
    try:
        _claim(state, "cmd", "run", helper.pid)  # between two attempts: no running row, no saved retry
        result = cli("run-now", "cmd", "--json")
        assert result.exit_code == 1
        assert result.json()["error"] == (f"job cmd is busy: `crawlsched run` (pid {helper.pid}) is running it; "
                                          "nothing was queued (runs of one job never overlap)")
        assert state.read("SELECT count(*) AS n FROM requests")[0]["n"] == 0
    finally:
        helper.kill()
        helper.wait()
