"""Scenarios 6-8: concurrent writers of jobs.toml, a writer killed mid-write, a job file broken while
the daemon runs, a job deleted or paused during its run.

Anchors: ``crontab -e`` (edits a temp copy and installs it whole; a crashed editor leaves the old
crontab); Kubernetes CronJob (deleting a CronJob stops new Jobs; a running Job is not restarted);
systemd ``daemon-reload`` (a unit file with errors is reported and the last good one keeps running).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawlsched.store import JobStore
from helpers.history import runs
from helpers.jobs import write_jobs
from helpers.process import cli, CRAWLSCHED, DaemonProcess, wait_for

UTC = timezone.utc


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), "TZ": "UTC"}


@pytest.mark.slow
def test_24_cli_adds_and_8_library_adds_at_once_all_survive(home):
    (home / "jobs.toml").write_text("# hand-written header, kept\n[defaults]\ntimezone = \"UTC\"\n")
    procs = [subprocess.Popen(CRAWLSCHED + ["add", f"cli job {i}", "--every", "1h", "--command", "true"],
                              env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(24)]
    errors: list[BaseException] = []

    def api_add(i: int) -> None:  # what the web API does: JobStore.add under the same lock
        try:
            JobStore(home / "jobs.toml", machine_tz="UTC").add(
                {"name": f"api job {i}", "every": "1h", "command": "true"}, now=datetime.now(UTC))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=api_add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = [p.wait(60) for p in procs]
    assert codes == [0] * 24, [p.stderr.read() for p in procs]
    assert errors == []
    text = (home / "jobs.toml").read_text()
    names = {j["name"] for j in tomllib.loads(text)["jobs"]}
    assert names == {f"cli job {i}" for i in range(24)} | {f"api job {i}" for i in range(8)}
    assert text.startswith("# hand-written header, kept\n")
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]


_EDIT_LOOP = r"""
import sys
from datetime import datetime, timezone
from crawlsched.store import JobStore
store = JobStore(sys.argv[1], machine_tz="UTC")
n = 0
while True:
    n += 1
    store.edit("a", {"retry_delay": n}, now=datetime.now(timezone.utc))
    store.set_paused("b", n % 2 == 0)
"""

_KILL_AT_RENAME = r"""
import os, signal, sys
from datetime import datetime, timezone
from crawlsched.store import JobStore
real = os.replace
def die(src, dst):  # the temp file is written and fsynced; the rename never happens
    if str(dst).endswith("jobs.toml"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = die
JobStore(sys.argv[1], machine_tz="UTC").edit("a", {"retry_delay": 99}, now=datetime.now(timezone.utc))
"""


def _two_jobs(home: Path) -> None:
    write_jobs(home, '# keep me\n[[jobs]]\nid = "a"\nname = "a"\nevery = "1h"\ncommand = "true"\n\n'
                     '[[jobs]]\nid = "b"\nname = "b"\nevery = "1h"\ncommand = "true"\n')


@pytest.mark.slow
def test_a_writer_killed_at_random_moments_never_leaves_a_torn_file(home):
    _two_jobs(home)
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _EDIT_LOOP, str(home / "jobs.toml")], env=_env(home))
        time.sleep(0.4 + 0.037 * round_)  # different phases of the write
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        text = (home / "jobs.toml").read_text()
        data = tomllib.loads(text)  # whole: the old file or the new one
        assert [j["id"] for j in data["jobs"]] == ["a", "b"] and "# keep me" in text
    # Stray temp files of killed writers break nothing: every command still works, the daemon ignores them.
    assert cli(home, "add", "after the kills", "--every", "1h", "--command", "true").returncode == 0
    listed = json.loads(cli(home, "list", "--json", check=True).stdout)["jobs"]
    assert [j["id"] for j in listed] == ["a", "b", "after-the-kills"]


def test_a_writer_killed_between_temp_write_and_rename_leaves_the_old_file(home):
    _two_jobs(home)
    before = (home / "jobs.toml").read_bytes()
    proc = subprocess.run([sys.executable, "-c", _KILL_AT_RENAME, str(home / "jobs.toml")], env=_env(home))
    assert proc.returncode == -signal.SIGKILL
    assert (home / "jobs.toml").read_bytes() == before
    strays = [p for p in home.iterdir() if p.name.startswith(".jobs.toml.") and p.name.endswith(".tmp")]
    assert strays, "the killed writer's temp file is there (it is what this test is about)"
    assert cli(home, "edit", "a", "--retry-delay", "7").returncode == 0
    assert cli(home, "validate").returncode == 0
    assert tomllib.loads((home / "jobs.toml").read_text())["jobs"][0]["retry_delay"] == 7


# --- a job file broken while the daemon runs ----------------------------------------------

BROKEN = {
    "bad-value": ('[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\ncommand = "true"\n\n'
                  '[[jobs]]\nid = "late"\nname = "late"\nat = "25:00"\ncommand = "true"\n', 13),  # the `at` line
    "duplicate-id": ('[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\ncommand = "true"\n\n'
                     '[[jobs]]\nid = "tick"\nname = "tock"\nevery = "1s"\ncommand = "true"\n', 10),  # the second table
    "syntax": ('[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\ncommand = "true"\n[[jobs]\n', 9),  # the bad header
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_file_broken_while_running_keeps_the_last_good_jobs_and_says_where(home, case):
    write_jobs(home, '[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\ncommand = "true"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: runs(home), 10, "first run")
        body, line = BROKEN[case]
        write_jobs(home, body)  # write_jobs puts three lines of [defaults] first
        status = wait_for(lambda: (s := json.loads(cli(home, "status", "--json").stdout))["config_ok"] is False and s,
                          10, "the daemon to report the error")
        assert f"jobs.toml:{line}:" in status["config_error"], status["config_error"]
        n = len(runs(home, "tick"))
        wait_for(lambda: len(runs(home, "tick")) >= n + 2, 10, "the last good job to keep firing")
        write_jobs(home, '[[jobs]]\nid = "tock"\nname = "tock"\nevery = "1s"\ncommand = "true"\n')
        wait_for(lambda: runs(home, "tock"), 10, "the next good edit")
        assert json.loads(cli(home, "status", "--json").stdout)["config_ok"] is True
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0


# --- a job deleted or paused during its run -------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("how", [("rm", "--yes"), ("pause",)], ids=["deleted", "paused"])
def test_a_job_removed_or_paused_during_its_run_is_recorded_and_not_retried(home, how):
    write_jobs(home, '[[jobs]]\nid = "j"\nname = "j"\nevery = "1h"\ncommand = "sh -c \'sleep 2; exit 1\'"\n'
                     "max_retries = 3\nretry_delay = 1\n")
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: runs(home), 10, "the attempt to start")
        assert cli(home, how[0], "j", *how[1:]).returncode == 0
        wait_for(lambda: runs(home)[0]["status"] != "running", 10, "the attempt to end")
        time.sleep(2.5)  # longer than retry_delay: a retry would have started
    finally:
        assert d.stop() == 0
    got = runs(home)
    assert [(r["attempt"], r["status"]) for r in got] == [(1, "failed")]
    assert "removed or paused" in got[0]["message"]
    history = json.loads(cli(home, "history", "j", "--json").stdout)
    assert [r["attempt"] for r in history["runs"]] == [1]  # the history is kept


def test_a_job_paused_during_its_retry_wait_gets_no_further_retries(home):
    from helpers.clock import FakeClock
    from helpers.history import rows
    from helpers.loop import make_daemon, run_until

    (home / "jobs.toml").write_text('[[jobs]]\nid = "f"\nname = "f"\nat = "09:05"\ncommand = "false"\n'
                                    'start_date = 2025-01-01\nmax_retries = 2\nretry_delay = 60\n')
    clock = FakeClock(datetime(2025, 11, 8, 9, 0, tzinfo=UTC))
    d = make_daemon(home, clock)
    d.start()
    run_until(d, clock, datetime(2025, 11, 8, 9, 5, 30, tzinfo=UTC))
    assert d.chains["f"].retry_due is not None
    JobStore(home / "jobs.toml", machine_tz="UTC").set_paused("f", True)
    d.reload(force=True)
    run_until(d, clock, datetime(2025, 11, 8, 9, 30, tzinfo=UTC))
    assert [(r[2], r[3]) for r in rows(home)] == [(1, "failed")]
    from crawlsched.state import State

    assert State(home / "crawlsched.db").retries() == []


# --- a job file that is a symbolic link (as configuration management deploys it) -------------------

def _linked(home: Path) -> Path:
    """jobs.toml in the home is a link to deploy/jobs.toml; returns the target."""
    deploy = home / "deploy"
    deploy.mkdir()
    target = deploy / "jobs.toml"
    target.write_text('# deployed\n[[jobs]]\nid = "a"\nname = "a"\nevery = "1h"\ncommand = "true"\n')
    (home / "jobs.toml").symlink_to(os.path.relpath(target, home))
    return target


@pytest.mark.parametrize("edit", [
    ("add", "b", "--every", "2h", "--command", "true"),
    ("edit", "a", "--retry-delay", "7"),
    ("pause", "a"),
    ("rm", "a", "--yes"),
    ("retry-config", "--max-retries", "5"),
    ("prune",),
], ids=lambda e: e[0])
def test_edits_of_a_symlinked_job_file_go_to_its_target_and_keep_the_link(home, edit):
    target = _linked(home)
    link_text = os.readlink(home / "jobs.toml")
    before = target.read_text()
    assert cli(home, *edit).returncode == 0
    assert (home / "jobs.toml").is_symlink() and os.readlink(home / "jobs.toml") == link_text
    after = target.read_text()
    assert after.startswith("# deployed\n")
    if edit[0] != "prune":
        assert after != before
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_writers_through_the_link_and_through_the_target_share_one_lock(home):
    target = _linked(home)
    env_link = _env(home)
    env_target = {**env_link, "CRAWLSCHED_JOBS": str(target)}
    procs = [subprocess.Popen(CRAWLSCHED + ["add", f"job {i}", "--every", "1h", "--command", "true"],
                              env=env_link if i % 2 else env_target, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(12)]
    assert [p.wait(60) for p in procs] == [0] * 12, [p.stderr.read() for p in procs]
    names = {j["name"] for j in tomllib.loads(target.read_text())["jobs"]}
    assert names == {"a"} | {f"job {i}" for i in range(12)}
    assert (home / "jobs.toml").is_symlink()


def test_a_dangling_link_gets_its_target_created_on_the_first_add(home):
    (home / "deploy").mkdir()
    (home / "jobs.toml").symlink_to("deploy/jobs.toml")
    assert cli(home, "add", "first", "--every", "1h", "--command", "true").returncode == 0
    assert (home / "jobs.toml").is_symlink()
    assert "first" in (home / "deploy" / "jobs.toml").read_text()


def _seen_within(home: Path, job_id: str, timeout: float) -> float:
    """Seconds until the daemon has run ``job_id`` (an `every` job fires when first seen)."""
    began = time.monotonic()
    wait_for(lambda: runs(home, job_id), timeout, f"the daemon to pick up {job_id}")
    return time.monotonic() - began


@pytest.mark.slow
def test_the_daemon_notices_edits_of_a_symlinked_job_file_at_once(home):
    target = _linked(home)
    d = DaemonProcess(home, env={"TZ": "UTC"}).start()
    try:
        # 1. A CLI add through the link (written to the target's folder).
        assert cli(home, "add", "via-cli", "--every", "1h", "--command", "true").returncode == 0
        took_cli = _seen_within(home, "via-cli", 3)
        # 2. Configuration management rewrites the target itself (temp file and rename in its folder).
        text = target.read_text() + '\n[[jobs]]\nid = "via-target"\nname = "via-target"\nevery = "1h"\ncommand = "true"\n'
        tmp = target.with_name(".deploy-tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        took_target = _seen_within(home, "via-target", 3)
        # 3. ... or points the link at a new release.
        release = home / "release-2"
        release.mkdir()
        (release / "jobs.toml").write_text(text + '\n[[jobs]]\nid = "via-relink"\nname = "via-relink"\nevery = "1h"\ncommand = "true"\n')
        (home / ".jobs.toml.new-link").symlink_to("release-2/jobs.toml")
        os.replace(home / ".jobs.toml.new-link", home / "jobs.toml")
        took_relink = _seen_within(home, "via-relink", 3)
        # 4. Then an edit of the new target, whose folder was never watched before.
        (release / "jobs.toml").write_text((release / "jobs.toml").read_text().replace('id = "via-relink"\nname = "via-relink"\nevery = "1h"',
                                                                                           'id = "via-relink"\nname = "via-relink"\nevery = "1h"\npaused = true') +
                                           '\n[[jobs]]\nid = "in-release"\nname = "in-release"\nevery = "1h"\ncommand = "true"\n')
        took_release = _seen_within(home, "in-release", 3)
    finally:
        assert d.stop() == 0
    print(f"picked up after: cli {took_cli:.2f}s, target {took_target:.2f}s, relink {took_relink:.2f}s, "
          f"new target {took_release:.2f}s")


# --- an empty job file, a byte-order mark ----------------------------------------------------------

@pytest.mark.slow
def test_a_job_file_emptied_while_running_keeps_the_last_good_jobs_and_their_retries(home):
    write_jobs(home, '[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\ncommand = "true"\n\n'
                     '[[jobs]]\nid = "flaky"\nname = "flaky"\nevery = "1d"\ncommand = "false"\n'
                     "max_retries = 3\nretry_delay = 3600\n")
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: runs(home, "flaky", status="failed"), 10, "flaky's first attempt to fail")
        from crawlsched.state import State

        wait_for(lambda: State(home / "crawlsched.db").retries(), 10, "flaky's retry to be saved")
        (home / "jobs.toml").write_bytes(b"")  # truncated in place: `> jobs.toml`, a full disk, a bad deploy
        status = wait_for(lambda: (s := json.loads(cli(home, "status", "--json").stdout))["config_ok"] is False and s,
                          10, "the daemon to report the empty file")
        assert "empty" in status["config_error"], status["config_error"]
        time.sleep(1.5)  # well past the 0.5 s the daemon waits for a file to settle
        n = len(runs(home, "tick"))
        wait_for(lambda: len(runs(home, "tick")) >= n + 2, 10, "the last good job to keep firing")
        assert [r.job_id for r in State(home / "crawlsched.db").retries()] == ["flaky"]
        assert "job file not applied" in d.output() and "empty" in d.output()
        write_jobs(home, '[[jobs]]\nid = "tock"\nname = "tock"\nevery = "1s"\ncommand = "true"\n')
        wait_for(lambda: runs(home, "tock"), 10, "the next good file")
        assert json.loads(cli(home, "status", "--json").stdout)["config_ok"] is True
    finally:
        assert d.stop() == 0


def test_an_empty_job_file_at_the_first_start_means_no_jobs(home):
    (home / "jobs.toml").write_bytes(b"")
    d = DaemonProcess(home).start()
    try:
        assert "0 jobs" in d.output()
        assert cli(home, "add", "later", "--every", "1h", "--command", "true").returncode == 0
        wait_for(lambda: runs(home, "later"), 10, "the job added to the empty file")
    finally:
        assert d.stop() == 0


BOM_FILE = '\ufeff# saved by a Windows editor\n[[jobs]]\nid = "a"\nname = "a"\nevery = "1h"\ncommand = "true"\n'


def test_a_job_file_with_a_byte_order_mark_is_read_by_every_command_and_the_mark_is_kept(home):
    (home / "jobs.toml").write_text(BOM_FILE, encoding="utf-8")
    assert cli(home, "validate").returncode == 0, cli(home, "validate").stderr
    assert [j["id"] for j in json.loads(cli(home, "list", "--json", check=True).stdout)["jobs"]] == ["a"]
    assert cli(home, "show", "a").returncode == 0
    assert cli(home, "add", "b", "--every", "2h", "--command", "true").returncode == 0
    assert cli(home, "edit", "a", "--retry-delay", "9").returncode == 0
    raw = (home / "jobs.toml").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf# saved by a Windows editor\n") and raw.count(b"\xef\xbb\xbf") == 1
    assert [j["id"] for j in tomllib.loads(raw.decode("utf-8-sig"))["jobs"]] == ["a", "b"]


def test_a_large_job_file_with_a_byte_order_mark_is_read_through_the_cache(home, tmp_path):
    from crawlsched.store import CACHE_MIN_BYTES

    body = "".join(f'[[jobs]]\nid = "j{i}"\nname = "j{i}"\nevery = "1h"\ncommand = "true"\n\n' for i in range(2000))
    assert len(body) > CACHE_MIN_BYTES
    (home / "jobs.toml").write_text("\ufeff" + body, encoding="utf-8")
    cache = tmp_path / "cache"
    first = JobStore(home / "jobs.toml", cache_dir=cache, machine_tz="UTC").load()
    assert list(cache.iterdir()), "the parse was cached"
    second = JobStore(home / "jobs.toml", cache_dir=cache, machine_tz="UTC").load()
    assert len(first.jobs) == len(second.jobs) == 2000


def test_the_daemon_starts_from_a_job_file_with_a_byte_order_mark(home):
    (home / "jobs.toml").write_text(BOM_FILE.replace('every = "1h"', 'every = "1s"'), encoding="utf-8")
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: runs(home, "a"), 10, "the job of the file with a BOM to run")
    finally:
        assert d.stop() == 0


# --- values beyond the bounds, added while the daemon runs -------------------------------------------

OUT_OF_BOUNDS = {
    "end-date-9999-12-31": ('at = "09:05"\nend_date = 9999-12-31', "end_date"),
    "every-3000000000d": ('every = "3000000000d"', "every"),
    "retry-delay-inf": ('at = "09:05"\nretry_delay = inf', "retry_delay"),
    "max-bytes-2^64": ('at = "09:05"\nmax_bytes = 18446744073709551616', "max_bytes"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(OUT_OF_BOUNDS), ids=list(OUT_OF_BOUNDS))
def test_a_value_out_of_bounds_added_while_running_is_a_config_error_not_a_crash(home, case):
    write_jobs(home, '[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\ncommand = "true"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: runs(home), 10, "first run")
        schedule, key = OUT_OF_BOUNDS[case]
        write_jobs(home, '[[jobs]]\nid = "tick"\nname = "tick"\nevery = "1s"\ncommand = "true"\n\n'
                         f'[[jobs]]\nid = "big"\nname = "big"\n{schedule}\ncommand = "true"\n')
        status = wait_for(lambda: (s := json.loads(cli(home, "status", "--json").stdout))["config_ok"] is False and s,
                          10, "the daemon to report the bad value")
        assert key in status["config_error"] and "jobs.toml:" in status["config_error"], status["config_error"]
        n = len(runs(home, "tick"))
        wait_for(lambda: len(runs(home, "tick")) >= n + 2, 10, "the last good job to keep firing")
        assert "Traceback" not in d.output()
        validate = cli(home, "validate")
        assert validate.returncode == 2 and key in validate.stderr
    finally:
        assert d.stop() == 0


def test_the_longest_interval_allowed_fires_and_then_lists_shows_and_plans_its_next_fire(home):
    write_jobs(home, '[[jobs]]\nid = "decade"\nname = "decade"\nevery = "3650d"\ncommand = "true"\n')
    d = DaemonProcess(home).start()
    try:
        wait_for(lambda: [r for r in runs(home, "decade") if r["status"] == "success"], 10, "the first fire")
        listed = json.loads(cli(home, "list", "--json", check=True).stdout)["jobs"][0]
        assert listed["status"] == "success" and listed["next_run"][:4] == str(datetime.now(UTC).year + 10)
        assert cli(home, "show", "decade").returncode == 0
        assert json.loads(cli(home, "status", "--json").stdout)["config_ok"] is True
    finally:
        assert d.stop() == 0
    assert "Traceback" not in d.output()
