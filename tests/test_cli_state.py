"""The read side: list/show/history/status over a state database written through ``State``'s own methods."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone

import pytest

from crawlsched.state import Retry, State
from helpers.process import ctrl_c_as_in_a_terminal

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


def test_a_retrying_job_shows_its_pending_retry(cli, state):
    waiting, calm = add(cli, "Waiting"), add(cli, "Calm")
    attempt(state, waiting, "failed", n=1, of=4, retry=Retry(waiting, T0, 2, 4, T0 + 300, "schedule"))
    attempt(state, calm, "failed", n=1, of=4)
    jobs = listed(cli)
    job = jobs[waiting]
    assert job["status"] == "retrying"
    assert job["next_retry"] == "2026-12-01 09:10:00" and job["next_retry_iso"] == "2026-12-01T09:10:00+07:00"
    assert job["attempt"] == 2  # the number the retry will be
    assert (jobs[calm]["next_retry"], jobs[calm]["next_retry_iso"], jobs[calm]["attempt"]) == (None, None, None)
    assert cli("show", waiting, "--json").json()["job"]["next_retry_iso"] == "2026-12-01T09:10:00+07:00"
    shown = cli("show", waiting).stdout
    assert "next retry" in shown and "attempt 2 of 4" in shown and "2026-12-01 09:10:00 WIB" in shown
    assert "retrying 2/4" in cli("list").stdout


def test_list_sorts_by_next_name_status_or_last(cli, state, monkeypatch):
    monkeypatch.setattr("crawlsched.cli.show._now", lambda: datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    late = add(cli, "b-late", "--tz", "UTC", "--start", "2026-12-01")  # 09:05 UTC
    soon = add(cli, "c-soon", "--start", "2026-12-01")  # 09:05 Jakarta = 02:05 UTC
    retry = add(cli, "a-retry", "--tz", "UTC", "--start", "2026-12-01")  # its retry is due first
    attempt(state, late, "success", at=T0 - 86400)
    attempt(state, soon, "failed", at=T0 - 3600)
    attempt(state, retry, "failed", at=T0 - 7200, retry=Retry(retry, T0 - 7200, 2, 4, T0 - 3 * 3600, "schedule"))
    order = lambda key: [j["id"] for j in cli("list", "--sort", key, "--json").json()["jobs"]]  # noqa: E731
    assert order("file") == [late, soon, retry]
    assert order("next") == [retry, soon, late]
    assert order("name") == [retry, late, soon]
    assert order("status") == [soon, retry, late]  # failed, retrying, success
    assert order("last") == [soon, retry, late]
    table = cli("list", "--sort", "next").stdout.splitlines()
    assert [line.split()[0] for line in table[1:]] == ["a-retry", "c-soon", "b-late"]
    bad = cli("list", "--sort", "soonest")
    assert bad.exit_code == 2 and "--sort" in bad.stderr and "next" in bad.stderr


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
    assert set(data) == {"success", "runs", "success_rate", "run_success_rate"}
    assert [r["status"] for r in data["runs"]] == ["missed", "skipped", "interrupted", "success", "success", "failed"]
    assert data["success_rate"] == pytest.approx(2 / 4)  # skipped and missed do not count
    assert data["run_success_rate"] == pytest.approx(2 / 3)  # fires: retried into success, success, interrupted
    assert [r["attempt"] for r in data["runs"]][:2] == [0, 0]

    missed = data["runs"][0]
    assert missed["missed_count"] == 2
    assert missed["first_missed"] == "2026-12-05 09:05:00" and missed["last_missed"] == "2026-12-06 09:05:00"
    assert "missed_count" not in data["runs"][2]

    limited = cli("history", job_id, "--limit", 3, "--json").json()
    assert len(limited["runs"]) == 3
    assert limited["success_rate"] == 0.0  # only the interrupted attempt is listed
    assert limited["run_success_rate"] == 0.0

    text = cli("history", job_id).stdout
    assert "success rate: 50% (2 of 4 attempts)" in text


def test_run_success_rate_judges_each_run_by_all_its_attempts(cli, state):
    job_id = add(cli, "Chains")
    attempt(state, job_id, "failed", n=1)  # fire 1: failed, then retried into success
    attempt(state, job_id, "success", n=2)
    attempt(state, job_id, "failed", n=1, at=T0 + 86400)  # fire 2: failed every attempt
    attempt(state, job_id, "failed", n=2, at=T0 + 86400)
    attempt(state, job_id, "failed", n=1, at=T0 + 2 * 86400,  # fire 3: its retry still pending
            retry=Retry(job_id, T0 + 2 * 86400, 2, 4, T0 + 2 * 86400 + 300, "schedule"))
    failed = cli("history", job_id, "--status", "failed", "--json").json()
    assert [r["status"] for r in failed["runs"]] == ["failed"] * 4
    assert failed["success_rate"] == 0.0  # over the attempts listed
    assert failed["run_success_rate"] == pytest.approx(1 / 2)  # fire 1 ended in success; fire 3 has not ended
    # --limit cuts rows, not runs: fire 1's listed attempt still speaks for the whole chain.
    newest = cli("history", job_id, "--limit", 4, "--json").json()
    assert [r["attempt"] for r in newest["runs"]] == [1, 2, 1, 2]
    assert newest["success_rate"] == pytest.approx(1 / 4)
    assert newest["run_success_rate"] == pytest.approx(1 / 2)
    text = cli("history", job_id).stdout
    assert "success rate: 20% (1 of 5 attempts)" in text and "run success rate: 50% (1 of 2 runs)" in text


@pytest.mark.parametrize("command", ["history", "show"])
def test_a_limit_beyond_what_sqlite_holds_lists_everything(cli, state, command):
    job_id = add(cli, "Many")
    attempt(state, job_id, "success")
    result = cli(command, job_id, "--limit", str(10**20), "--json")
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in result.json()["runs"]] == ["success"]


def test_history_filters_by_since_and_status(cli, state, monkeypatch):
    job_id = add(cli, "Filtered")
    attempt(state, job_id, "failed", at=T0)
    attempt(state, job_id, "success", at=T0 + 86400)
    state.record_not_run(job_id, T0 + 2 * 86400, "skipped", "still running", now=T0 + 2 * 86400)
    monkeypatch.setattr("crawlsched.cli.show._now", lambda: datetime.fromtimestamp(T0 + 2 * 86400 + 3600, UTC))
    since = lambda *a: [r["status"] for r in cli("history", job_id, "--since", *a, "--json").json()["runs"]]  # noqa: E731
    assert since("2h") == ["skipped"]
    assert since("1d2h") == ["skipped", "success"]
    assert since("2026-12-02") == ["skipped", "success"]  # midnight UTC (the machine's zone here)
    assert since("2026-12-01T09:05:00+07:00") == ["skipped", "success", "failed"]
    assert [r["status"] for r in cli("history", "--status", "success,skipped", "--json").json()["runs"]] == ["skipped", "success"]


@pytest.mark.parametrize("args, field", [(["--status", "broken"], "--status"), (["--status", ""], "--status"),
                                         (["--since", "yesterday"], "--since"), (["--since", "5x"], "--since")],
                         ids=["unknown-status", "empty-status", "word-since", "unit-since"])
def test_history_refuses_a_bad_filter_with_exit_2(cli, state, args, field):
    add(cli, "Filtered")
    result = cli("history", *args)
    assert result.exit_code == 2 and result.stderr.startswith(f"crawlsched: error: {field}: ")
    assert "one of" in result.stderr or "ISO" in result.stderr
    assert cli("history", *args, "--json").json()["success"] is False


def test_history_shows_each_runs_trigger(cli, state):
    job_id = add(cli, "Triggered")
    for n, trigger in enumerate(("schedule", "catch_up", "manual", "run")):
        run_id = state.start_attempt(job_id, T0 + n * 86400, 1, 4, trigger=trigger, started_at=T0 + n * 86400, pid=os.getpid())
        state.finish_attempt(run_id, status="success", finished_at=T0 + n * 86400 + 1, message="ok")
    runs = cli("history", job_id, "--json").json()["runs"]
    assert [r["trigger"] for r in runs] == ["run", "manual", "catch_up", "schedule"]
    lines = cli("history", job_id).stdout.splitlines()
    assert "trigger" in lines[0]
    assert [next(t for t in ("schedule", "catch_up", "manual", "run") if f" {t} " in line) for line in lines[1:5]] == \
        ["run", "manual", "catch_up", "schedule"]


def test_history_and_logs_by_the_id_of_a_removed_job_whose_name_was_reused(cli, state):
    old = add(cli, "news")
    attempt(state, old, "failed", message="the old job's run")
    assert cli("rm", old, "--yes").exit_code == 0
    new = add(cli, "news")  # the name is free again; the id is not
    assert (old, new) == ("news", "news-2")
    attempt(state, new, "success", at=T0 + 86400, message="the new job's run")
    [run] = cli("history", "news", "--json").json()["runs"]
    assert (run["job_id"], run["message"]) == ("news", "the old job's run")  # the id wins over the name
    [run] = cli("history", "news-2", "--json").json()["runs"]
    assert run["message"] == "the new job's run"
    assert cli("logs", "news", "--json").json()["run"] == "20261201T020500Z"  # the old job's run, by its id
    assert cli("logs", "news-2", "--json").json()["run"] == "20261202T020500Z"


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
    assert cli("history", "--json").json() == {"success": True, "runs": [], "success_rate": None, "run_success_rate": None}
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
    state.config_status(None, next_job="next", next_due=T0)
    result = _status_json(cli, monkeypatch)
    assert result.exit_code == 0, result.output
    data = result.json()
    assert data["running"] is True and data["pid"] == fake_daemon.pid and data["config_ok"] is True
    assert data["next_job"] == "next" and data["next_run"] == "2026-11-30 09:05:00"
    assert data["started_at"] is not None and data["heartbeat"] is not None
    assert f"pid {fake_daemon.pid}" in cli("status").stdout


def test_status_with_a_stale_heartbeat_is_down(cli, state, fake_daemon):
    state.heartbeat(time.time() - 200)
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
        "jobs_file": str(tmp_home.jobs_file), "home": str(tmp_home.path), "state": str(tmp_home.db),
        "daemons": [], "workers": [],
    }
    assert list(result.json()) == ["success", "running", "pid", "host", "version", "started_at", "started_at_iso",
                                   "heartbeat", "heartbeat_iso", "http", "config_ok", "config_error", "scheduler_paused", "next_job",
                                   "next_run", "next_run_iso", "jobs_file", "home", "state", "daemons", "workers"]


def test_status_json_is_exactly_as_before_with_a_daemon(cli, tmp_home, state, fake_daemon, monkeypatch):
    add(cli, "Next", "--start", "2026-11-30")
    state.daemon_ready(time.time(), http="http://127.0.0.1:5000")
    state.config_status("jobs.toml:1: broken", next_job="next", next_due=T0)
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
    state.heartbeat(time.time(), next_job="next", next_due=FIXED_NOW.timestamp() - 86400)
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

    from helpers.history import runs
    from helpers.jobs import write_jobs
    from helpers.process import cli as run, DaemonProcess, wait_for
    from helpers.servers import Target

    target = Target()
    home = tmp_path / "home"
    # Their next regular fire is ~22 h away, so the 300 s retry is never "after the next run" (SPEC §4),
    # whatever the time of day the test runs at (a fixed "23:59" failed when run at 23:55).
    at = time.strftime("%H:%M", time.gmtime(time.time() - 2 * 3600))
    write_jobs(home, f'[[jobs]]\nid = "slow"\nat = "{at}"\ntimezone = "UTC"\ncommand = "sleep 30"\n\n'
                     f'[[jobs]]\nid = "flaky"\nat = "{at}"\ntimezone = "UTC"\nurl = "{target.url("/fail")}"\nmax_retries = 2\nretry_delay = 300\n')
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
    skipped = len(runs(home, status="skipped"))
    assert skipped == 0


# --- run: a job never overlaps itself (the real two-process scenarios: tests/reliability/test_job_overlap.py) ---


def _claim(state, job_id, owner, pid):
    from crawlsched import procs

    from crawlsched.state import Owner

    assert state.claim_chain(job_id, Owner(owner, pid, procs.identity(pid)), time.time()).epoch >= 1


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
    with sqlite3.connect(state.path) as c:  # the claim of a daemon that was killed: its pid is gone
        c.execute("UPDATE chain_claims SET owner_pid = ?", (dead_pid(),))
    c.close()
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
        assert state.count_requests() == 0
    finally:
        helper.kill()
        helper.wait()


# --- tables in a real terminal ------------------------------------------------------------------

ANSI = __import__("re").compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
CURSOR = __import__("re").compile(r"\x1b\[[0-9;]*[A-HJK]")  # a live table's redraw: starts a fresh line


def in_terminal(home, columns: int, *args: str, rows: int = 50, interrupt_after: float | None = None) -> list[str]:
    """Run the real ``crawlsched ARGS`` on a pseudo-terminal ``columns`` wide; its screen lines, colour removed.

    ``interrupt_after``: send Ctrl-C's SIGINT after that many seconds (``list --watch``).
    """
    import fcntl
    import pty
    import signal
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env.update(TERM="xterm-256color", CRAWLSCHED_JOBS=str(home / "jobs.toml"), CRAWLSCHED_HOME=str(home), TZ="UTC")
    proc = subprocess.Popen([sys.executable, "-m", "crawlsched", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True, preexec_fn=ctrl_c_as_in_a_terminal)
    os.close(slave)
    if interrupt_after is not None:
        threading.Timer(interrupt_after, lambda: proc.send_signal(signal.SIGINT)).start()
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")
    screen = CURSOR.sub("\n", b"".join(chunks).decode())
    return [line for line in ANSI.sub("", screen).split("\n") if line.strip()]


NAMES = ("Daily Morning Crawl", "Weekly Report", "High Priority", "Berita Pagi Jakarta Timur", "news")


@pytest.fixture
def varied_jobs(cli, tmp_home, state):
    """Five jobs as a person has them: long names, two zones, a failure with a long message, a pending retry."""
    ids = [add(cli, NAMES[0], "--tz", "America/New_York"), add(cli, NAMES[1], "--tz", "Asia/Jakarta"),
           add(cli, NAMES[2], "--tz", "UTC"), add(cli, NAMES[3]), add(cli, NAMES[4], "--tz", "UTC")]
    now = time.time()
    attempt(state, ids[0], "success", at=now - 3 * 3600 - 1, message="HTTP 200, 51234 bytes from https://example.com/news")
    attempt(state, ids[1], "failed", at=now - 7201,
            message="https://example.com/weekly: HTTP 503 Service Unavailable from the origin, retrying later")
    attempt(state, ids[3], "failed", at=now - 60, of=4,
            retry=Retry(ids[3], now - 60, 2, 4, now + 290, "schedule"), message="connection reset by peer")
    return ids


@pytest.mark.parametrize("columns", [80, 100, 120, 200])
def test_list_in_a_terminal_shows_every_name_whole_on_one_line(tmp_home, varied_jobs, columns):
    lines = in_terminal(tmp_home.path, columns, "list")
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    body = [line for line in lines if any(name in line for name in NAMES)]
    assert len(body) == len(NAMES), "\n".join(lines)  # one line per job: nothing wrapped
    for name in NAMES:  # each row starts with its name ("news" is also in a message, shown whole when there is room)
        [row] = [line for line in body if line.startswith(name)]
    statuses = {name: next(line for line in body if line.startswith(name)) for name in NAMES}
    assert "success" in statuses[NAMES[0]] and "3h ago" in statuses[NAMES[0]]
    assert "failed" in statuses[NAMES[1]] and "2h ago" in statuses[NAMES[1]]
    assert "retrying 2/4 in 4m" in statuses[NAMES[3]]  # the pending retry, with its attempt number
    assert all(" in " in row for row in statuses.values())  # next run, relative
    if columns >= 120:  # room for the absolute time, and the zone where it is not the machine's
        assert "EST" in statuses[NAMES[0]] and "WIB" in statuses[NAMES[1]]
        assert "EST" not in statuses[NAMES[2]] and "UTC" not in statuses[NAMES[2]].split("(")[0]


@pytest.mark.parametrize("columns", [80, 100, 120, 200])
def test_history_and_show_in_a_terminal_keep_every_row_on_one_line(tmp_home, varied_jobs, columns):
    lines = in_terminal(tmp_home.path, columns, "history")
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    rows = [line for line in lines if line.split()[0] in varied_jobs]
    assert len(rows) == 3 and all(("ago" in r) and ("/4" in r) for r in rows), "\n".join(lines)
    assert "schedule" in rows[-1]  # the trigger column stays at 80
    assert any(line.startswith("success rate: ") for line in lines)
    shown = in_terminal(tmp_home.path, columns, "show", varied_jobs[1])
    assert all(len(line) <= columns for line in shown), "\n".join(shown)
    assert any(line.startswith("name") and NAMES[1] in line for line in shown)
    [message] = [line for line in shown if line.startswith("last message")]
    assert "https://example.com/weekly" in message  # cut at the width, never wrapped onto a second line
    if columns < 100:
        assert message.endswith("…")


@pytest.mark.slow
def test_list_watch_in_a_terminal_fits_and_stops_on_ctrl_c(tmp_home, varied_jobs):
    lines = in_terminal(tmp_home.path, 80, "list", "--watch", interrupt_after=2.5)
    assert all(len(line) <= 80 for line in lines)
    assert any("Ctrl-C to stop" in line for line in lines)
    assert all(any(name in line for line in lines) for name in NAMES)


# --- logs: what a run left behind ------------------------------------------------------------


@pytest.fixture
def site():
    """A real HTTP server on 127.0.0.1: ``/page`` is HTML, ``/data`` JSON, anything else 503."""
    from helpers.servers import Pages

    server = Pages({"/page": (200, b"<!DOCTYPE html><html>hello</html>", "text/html"),
                    "/data": (200, b'{"ok": true}', "application/json")}, default=(503, b"down", None))
    yield server.url("")
    server.close()


def test_logs_of_a_command_job_shows_each_attempts_log(cli, tmp_home):
    cli("add", "Shout", "--every", "1h", "--command", "sh -c 'echo attempt $CRAWLSCHED_ATTEMPT; exit 3'",
        "--max-retries", 1, "--retry-delay", 0)
    assert cli("run", "shout").exit_code == 1
    data = cli("logs", "shout", "--json").json()
    assert data["success"] is True and data["job_id"] == "shout" and data["run"].endswith("-run")
    assert (data["status"], data["attempts"], data["bodies"]) == ("failed", 2, [])
    assert [(log["attempt"], log["text"]) for log in data["logs"]] == [(1, "attempt 1\n"), (2, "attempt 2\n")]
    assert all(os.path.isfile(log["path"]) for log in data["logs"])
    text = cli("logs", "Shout").stdout  # by name too
    assert f"run {data['run']} of shout (failed, 2 attempts)" in text
    assert "--- attempt 1:" in text and "attempt 1\nattempt 2" not in text and "attempt 2\n" in text


def test_logs_of_a_run_waiting_for_its_retry_says_retrying_not_failed(cli, tmp_home, state):
    from crawlsched.state import Retry

    job = add(cli, "News")
    attempt(state, job, "failed", n=1, of=3, retry=Retry(job, T0, 2, 3, T0 + 300, "schedule"))
    data = cli("logs", job, "--json").json()
    assert (data["status"], data["attempts"]) == ("retrying", 1)  # as `list` and the page call it
    assert "(retrying, 1 attempt)" in cli("logs", job).stdout
    attempt(state, job, "failed", n=2, of=3)  # the retry ran and failed, and saved none: the run failed
    assert cli("logs", job, "--json").json()["status"] == "failed"


def test_logs_of_a_url_job_lists_its_bodies_and_history_points_at_the_body(cli, tmp_home, site):
    cli("add", "Page", "--every", "1h", "--url", f"{site}/page", "--max-retries", 0)
    cli("add", "Both", "--every", "1h", "--url", f"{site}/page", "--url", f"{site}/data", "--max-retries", 0)
    assert cli("run", "page").exit_code == 0 and cli("run", "both").exit_code == 0
    [body] = cli("logs", "page", "--json").json()["bodies"]
    assert body["size"] == 33 and body["content_type"] == "text/html" and body["path"].endswith(".body")
    [run] = cli("history", "page", "--json").json()["runs"]
    assert run["output"] == body["path"]  # one URL: the body file, not its folder
    bodies = cli("logs", "both", "--json").json()["bodies"]
    assert [b["content_type"] for b in bodies] == ["text/html", "application/json"]
    [run] = cli("history", "both", "--json").json()["runs"]
    assert run["output"] == os.path.dirname(bodies[0]["path"])  # several: the run's folder
    assert f"{body['path']}  33 bytes  text/html" in cli("logs", "page").stdout


def test_a_failed_url_run_leaves_no_empty_folder_and_logs_says_so(cli, tmp_home, site):
    cli("add", "Down", "--every", "1h", "--url", f"{site}/gone", "--max-retries", 1, "--retry-delay", 0)
    assert cli("run", "down").exit_code == 1
    assert not any((tmp_home.path / "data" / "down").iterdir())  # no empty data/down/<run>/
    [run] = cli("history", "down", "--limit", 1, "--json").json()["runs"]
    assert run["output"] is None
    result = cli("logs", "down")
    assert result.exit_code == 0 and "(failed, 2 attempts)" in result.stdout and "nothing saved" in result.stdout


def test_logs_of_a_named_run_and_the_errors(cli, tmp_home, state):
    job_id = add(cli, "Older")
    attempt(state, job_id, "success", at=T0)
    attempt(state, job_id, "failed", at=T0 + 86400)
    assert cli("logs", job_id, "--json").json()["run"] == "20261202T020500Z"  # the newest
    older = cli("logs", job_id, "--run", "20261201T020500Z", "--json").json()
    assert (older["run"], older["status"], older["attempts"]) == ("20261201T020500Z", "success", 1)
    missing = cli("logs", job_id, "--run", "20200101T000000Z")
    assert missing.exit_code == 1 and "no run '20200101T000000Z'" in missing.stderr and "20261202T020500Z" in missing.stderr
    assert cli("logs", job_id, "--run", "nope", "--json").json()["success"] is False
    assert cli("logs", "never-was").exit_code == 1
    fresh = add(cli, "Fresh")
    result = cli("logs", fresh)
    assert result.exit_code == 1 and "no runs yet" in result.stderr


def test_run_tells_each_attempt_once_with_one_counter(cli, tmp_home):
    cli("add", "Twice", "--every", "1h", "--command", "sh -c 'echo nope; exit 3'", "--max-retries", 2, "--retry-delay", 0)
    env = {**os.environ, "CRAWLSCHED_JOBS": str(tmp_home.jobs_file), "CRAWLSCHED_HOME": str(tmp_home.path)}
    proc = subprocess.run([sys.executable, "-m", "crawlsched", "run", "twice"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    both = proc.stdout + proc.stderr
    assert both.count("🤖 AUTO CRAWL STARTED") == 3
    assert both.count("🔄 Retry attempt: 1/2") == 1 and both.count("🔄 Retry attempt: 2/2") == 1
    assert "attempt 2/3" not in both and "attempt 3/3" not in both  # no second counter beside the seed's
    assert proc.stdout.strip() == "twice: failed after 3 attempts: nope"


def test_status_names_the_offset_of_a_next_run_in_another_zone(cli, tmp_home):
    add(cli, "Jakarta")  # 09:05 in Asia/Jakarta; the machine is on UTC
    line = next(line for line in cli("status").stdout.splitlines() if line.startswith("next:"))
    assert line.endswith("09:05:00 UTC+07:00"), line


def test_status_adds_no_zone_to_a_next_run_in_the_machines_zone(cli, tmp_home):
    result = cli("add", "Here", "--at", "09:05", "--url", URL)
    assert result.exit_code == 0, result.output
    line = next(line for line in cli("status").stdout.splitlines() if line.startswith("next:"))
    assert line.endswith("09:05:00"), line


# --- which state: the home's SQLite file, or $CRAWLSCHED_STATE / [defaults] state (SPEC §10) -------------

SECRET = "hunter2-not-for-eyes"
CLOSED_PG = f"postgresql://crawlsched:{SECRET}@127.0.0.1:1/crawlsched?connect_timeout=2"
CLOSED_PG_SHOWN = "postgresql://crawlsched@127.0.0.1:1/crawlsched?connect_timeout=2"


def test_status_names_the_sqlite_state_in_use(cli, tmp_home):
    add(cli, "News")
    result = cli("status", "--json")
    assert result.exit_code == 3
    assert result.json()["state"] == str(tmp_home.db)
    text = cli("status")
    assert f"state: {tmp_home.db}" in text.stdout.splitlines()


def _crawlsched(home, *args, environ=None):
    env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), "TZ": "UTC",
           **(environ or {})}
    env.pop("CRAWLSCHED_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "crawlsched", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def _waiting_daemon(home, environ, seconds=3.0):
    """``crawlsched daemon`` on a state that does not answer: it says it is waiting for it (its
    signal handlers are in place by then), is still up ``seconds`` later, then SIGTERM (exit 0)."""
    import signal

    from helpers.process import wait_for

    env = {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), "TZ": "UTC",
           **(environ or {})}
    env.pop("CRAWLSCHED_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "crawlsched", "daemon"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("waiting for it" in line for line in lines) or proc.poll() is not None, 60,
                 "the daemon to say it waits for the state database", context=lambda: "".join(lines))
        time.sleep(seconds)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_one_shot_command_on_an_unreachable_postgresql_state_fails_within_seconds(tmp_path):
    import time

    home = tmp_path / "home"
    home.mkdir()
    began = time.monotonic()
    result = _crawlsched(home, "history", environ={"CRAWLSCHED_STATE": f"postgresql://crawlsched:{SECRET}@127.0.0.1:1/x"})
    took = time.monotonic() - began
    assert result.returncode == 1 and "127.0.0.1:1" in result.stderr and SECRET not in result.stderr
    assert took < 3.0, f"a read against a closed port took {took:.1f} s"


def test_status_on_an_unreachable_postgresql_state_is_down_and_shows_no_password(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    status = _crawlsched(home, "status", "--json", environ={"CRAWLSCHED_STATE": CLOSED_PG})
    assert status.returncode == 3, status.stderr  # SPEC §5: not up
    data = json.loads(status.stdout)
    assert (data["state"], data["running"]) == (CLOSED_PG_SHOWN, False) and CLOSED_PG_SHOWN in data["state_error"]
    assert SECRET not in status.stdout + status.stderr


@pytest.mark.slow  # seven commands, and a daemon that must still be waiting for the database after 3 s
@pytest.mark.parametrize("where", ["environment", "job file"])
def test_an_unreachable_postgresql_state_is_reported_without_its_password(tmp_path, where):
    home = tmp_path / "home"
    home.mkdir()
    defaults = f'[defaults]\nstate = "{CLOSED_PG}"\n' if where == "job file" else ""
    (home / "jobs.toml").write_text(defaults + '[[jobs]]\nid = "a"\nname = "A"\nat = "09:00"\nurl = "https://example.com/"\n')
    environ = {"CRAWLSCHED_STATE": CLOSED_PG} if where == "environment" else {}

    status = _crawlsched(home, "status", "--json", environ=environ)
    assert status.returncode == 3, status.stderr  # SPEC §5: not up
    data = json.loads(status.stdout)
    assert data["state"] == CLOSED_PG_SHOWN and data["running"] is False and data["state_error"]
    assert CLOSED_PG_SHOWN in data["state_error"]
    text = _crawlsched(home, "status", environ=environ)
    assert text.returncode == 3 and f"state: {CLOSED_PG_SHOWN}" in text.stdout
    outputs = [status, text]
    for args in (["list"], ["history"], ["show", "a"], ["logs", "a"], ["list", "--json"]):
        result = _crawlsched(home, *args, environ=environ)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        message = json.loads(result.stdout)["error"] if "--json" in args else result.stderr
        assert CLOSED_PG_SHOWN in message and message.count("\n") <= 1
        outputs.append(result)
    daemon = _waiting_daemon(home, environ)  # SPEC §10: it keeps trying, it does not exit
    assert "Traceback" not in daemon.stderr and CLOSED_PG_SHOWN in daemon.stderr
    outputs.append(daemon)
    for result in outputs:
        assert SECRET not in result.stdout + result.stderr
    for log in (home / "logs").glob("*"):
        assert SECRET not in log.read_text(errors="replace")
    assert not (home / "crawlsched.db").exists(), "no SQLite state besides the PostgreSQL one"


def test_defaults_shows_the_state_without_its_password(cli, tmp_home):
    tmp_home.jobs_file.write_text(f'[defaults]\nstate = "{CLOSED_PG}"\nexecutor = "workers"\n')
    text = cli("defaults")
    assert text.exit_code == 0, text.output
    assert f'state = "{CLOSED_PG_SHOWN}"' in text.stdout and 'executor = "workers"' in text.stdout
    data = cli("defaults", "--json").json()
    assert (data["defaults"]["state"], data["defaults"]["executor"]) == (CLOSED_PG_SHOWN, "workers")
    assert SECRET not in text.output + json.dumps(data)


def test_defaults_sets_state_and_executor(cli, tmp_home):
    result = cli("defaults", "--state", "postgresql://crawlsched@db.internal/crawlsched", "--executor", "workers")
    assert result.exit_code == 0, result.output
    text = tmp_home.jobs_file.read_text()
    assert 'state = "postgresql://crawlsched@db.internal/crawlsched"' in text and 'executor = "workers"' in text
    assert cli("defaults", "--unset", "executor").exit_code == 0
    assert "executor" not in tmp_home.jobs_file.read_text()


def test_validate_refuses_workers_without_a_postgresql_state_and_accepts_it_from_the_environment(cli, tmp_home, monkeypatch):
    tmp_home.jobs_file.write_text('[defaults]\nexecutor = "workers"\n')
    refused = cli("validate")
    assert refused.exit_code == 2
    assert 'defaults.executor: "workers" needs a PostgreSQL state' in refused.stderr
    monkeypatch.setenv("CRAWLSCHED_STATE", "postgresql://crawlsched@db.internal/crawlsched")
    assert cli("validate").exit_code == 0


def test_the_daemon_refuses_workers_without_a_postgresql_state(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "jobs.toml").write_text('[defaults]\nexecutor = "workers"\n')
    result = _crawlsched(home, "daemon")
    assert result.returncode == 2, result.stderr
    assert 'defaults.executor: "workers" needs a PostgreSQL state' in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.fixture
def shared_state(tmp_path, monkeypatch):
    """A stand-in for crawlsched.state.postgres.PostgresStore: a SQLite store outside the home, opened
    for any DSN, which records the DSN it was given. What every command reads when a DSN is set."""
    import types

    from crawlsched.state import SqliteStore

    given: list[str] = []
    shared = tmp_path / "shared.db"

    class SharedStore(SqliteStore):
        def __init__(self, dsn: str, **timeouts: float) -> None:
            given.append(dsn)
            super().__init__(shared)

    module = types.ModuleType("crawlsched.state.postgres")
    module.PostgresStore = SharedStore
    monkeypatch.setitem(sys.modules, "crawlsched.state.postgres", module)
    st = SqliteStore(shared).open()
    yield st, given
    st.close()


def test_every_command_reads_the_state_that_crawlsched_state_names(cli, tmp_home, shared_state, monkeypatch):
    st, given = shared_state
    job_id = add(cli, "News")
    home_db = State(tmp_home.db).open()  # a history in the home's SQLite file that must not be read
    attempt(home_db, job_id, "failed", message="from the home's file")
    home_db.close()
    attempt(st, job_id, "success", message="from the shared state")
    monkeypatch.setenv("PGPASS", SECRET)
    monkeypatch.setenv("CRAWLSCHED_STATE", "postgresql://crawlsched:${PGPASS}@db.internal/crawlsched")

    [job] = cli("list", "--json").json()["jobs"]
    assert (job["status"], job["last_message"]) == ("success", "from the shared state")
    runs = cli("history", "--json").json()["runs"]
    assert [r["message"] for r in runs] == ["from the shared state"]
    assert cli("show", job_id, "--json").json()["runs"][0]["message"] == "from the shared state"
    status = cli("status", "--json")
    assert status.json()["state"] == "postgresql://crawlsched@db.internal/crawlsched"
    assert "state_error" not in status.json()
    assert set(given) == {f"postgresql://crawlsched:{SECRET}@db.internal/crawlsched"}, "expanded only to open it"
    for args in (["list"], ["history"], ["status"], ["show", job_id]):
        assert SECRET not in cli(*args).output


def test_a_daemons_log_lines_never_carry_the_states_password(tmp_path):
    import logging

    from crawlsched.state.open import choose_state, guard_log

    choice = choose_state(tmp_path, "postgresql://u:${PGPASS}@db/x", {})
    log = logging.getLogger("crawlsched.test-guard")
    log.propagate = False
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    log.addHandler(Keep())
    os.environ["PGPASS"] = SECRET
    try:
        guard_log(log, choice)
        log.error("cannot connect to %s", f"postgresql://u:{SECRET}@db/x")
        try:
            raise OSError(f"password {SECRET} refused")
        except OSError:
            log.exception("start failed")
    finally:
        del os.environ["PGPASS"]
    assert lines and all(SECRET not in line for line in lines)
    assert "cannot connect to postgresql://u@db/x" in lines[0]


def test_a_bad_crawlsched_state_is_refused_naming_the_variable(cli, tmp_home, monkeypatch):
    add(cli, "News")
    monkeypatch.setenv("CRAWLSCHED_STATE", f"mysql://crawlsched:{SECRET}@db/x")
    listed = cli("list")
    assert listed.exit_code == 2 and listed.stderr.startswith("crawlsched: error: $CRAWLSCHED_STATE: ")
    status = cli("status", "--json")
    assert status.exit_code == 3
    data = status.json()
    assert "state" not in data and data["state_error"].startswith("$CRAWLSCHED_STATE: ")
    assert SECRET not in listed.output + status.output + cli("status").output


def test_list_history_and_status_work_against_a_real_postgresql_state(tmp_path, request):
    pytest.importorskip("crawlsched.state.postgres", reason="the PostgreSQL store is not in this tree")
    try:
        dsn = request.getfixturevalue("pg_dsn")  # tests/conftest.py: a fresh database in a throwaway cluster
    except pytest.FixtureLookupError:
        pytest.skip("no pg_dsn fixture in this tree")
    from crawlsched.dsn import redact_dsn

    home = tmp_path / "home"
    home.mkdir()
    environ = {"CRAWLSCHED_STATE": dsn}
    added = _crawlsched(home, "add", "News", "--every", "1h", "--url", "https://example.com/", environ=environ)
    assert added.returncode == 0, added.stderr
    listed = _crawlsched(home, "list", "--json", environ=environ)
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == ["news"]
    history = _crawlsched(home, "history", "--json", environ=environ)
    assert history.returncode == 0 and json.loads(history.stdout)["runs"] == [], history.stderr
    status = _crawlsched(home, "status", "--json", environ=environ)
    assert status.returncode == 3, status.stderr  # no daemon up
    data = json.loads(status.stdout)
    assert data["state"] == redact_dsn(dsn) and "state_error" not in data, data
    assert not (home / "crawlsched.db").exists(), "the state is PostgreSQL's, not a file in the home"
