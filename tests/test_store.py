"""The job file store (crawlsched/store.py): locked, atomic, comment-keeping edits and cached reads."""

from __future__ import annotations

import os
import threading
import time
import tomllib
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from crawlsched.errors import DuplicateName, InvalidValue, JobFileError, JobNotFound
from crawlsched.store import CACHE_MIN_BYTES, JobStore, resolve_paths
from helpers.jobs import write_jobs

NOW = datetime(2025, 11, 8, 8, 0, tzinfo=timezone.utc)
MINE = '# my jobs: keep this\n[defaults]\ntimezone = "UTC"\nurl = "https://example.com/"\n'


def store_of(home: Path) -> JobStore:
    return JobStore(home / "jobs.toml", cache_dir=home / ".cache", machine_tz="UTC")


@pytest.fixture
def store(home: Path) -> JobStore:
    write_jobs(home, MINE, defaults=None)
    return store_of(home)


def tables(store: JobStore) -> list[dict]:
    return tomllib.loads(store.path.read_text()).get("jobs", [])


# --- add ------------------------------------------------------------------------------------------


def test_add_appends_a_table_with_an_id_from_the_name_and_keeps_the_rest_byte_for_byte(store):
    job = store.add({"name": "Crawl Pagi", "at": "09:05"}, now=NOW)
    assert job.id == "crawl-pagi" and job.spec == "09:05"
    text = store.path.read_text()
    assert text.startswith(MINE) and text.count("[[jobs]]") == 1
    [table] = tables(store)
    # The zone and start date are written, so a later change of the machine's zone moves nothing.
    assert table["timezone"] == "UTC" and table["start_date"] == date(2025, 11, 8)
    assert store.load().find("crawl-pagi") == store_of(store.path.parent).load().find("crawl-pagi")


def test_add_never_reuses_an_id_the_history_knows(store):
    job = store.add({"name": "Daily", "at": "09:05"}, now=NOW, id_taken=lambda i: i == "daily")
    assert job.id == "daily-2"


def test_add_of_a_name_already_in_the_file_is_refused_and_writes_nothing(store):
    store.add({"name": "Daily", "at": "09:05"}, now=NOW)
    before = store.path.read_bytes()
    with pytest.raises(DuplicateName):
        store.add({"name": "Daily", "at": "10:00"}, now=NOW)
    assert store.path.read_bytes() == before


def test_add_of_a_bad_value_names_the_field_and_writes_nothing(store):
    before = store.path.read_bytes()
    with pytest.raises(InvalidValue) as info:
        store.add({"name": "Bad", "at": "25:00"}, now=NOW)
    assert info.value.field == "at" and "25:00" in str(info.value)
    assert store.path.read_bytes() == before


def test_add_of_a_job_that_ended_yesterday_is_refused(store):
    with pytest.raises(InvalidValue, match="end_date"):
        store.add({"name": "Old", "at": "09:05", "end_date": date(2025, 11, 7)}, now=NOW)
    assert tables(store) == []


def test_add_to_a_missing_file_creates_it(home):
    store = store_of(home)
    assert store.load().jobs == ()  # a missing file means no jobs
    store.add({"name": "First", "every": "1h", "url": "https://example.com/"}, now=NOW)
    assert [j.id for j in store.load().jobs] == ["first"]


def test_add_keeps_a_byte_order_mark_the_file_had(home):
    (home / "jobs.toml").write_bytes(b"\xef\xbb\xbf" + MINE.encode())
    store = store_of(home)
    store.add({"name": "Daily", "at": "09:05"}, now=NOW)
    data = (home / "jobs.toml").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf# my jobs") and data.count(b"\xef\xbb\xbf") == 1


def test_add_through_a_symbolic_link_replaces_the_target_and_keeps_the_link(home, tmp_path):
    real = tmp_path / "etc" / "jobs.toml"
    real.parent.mkdir()
    real.write_text(MINE)
    (home / "jobs.toml").symlink_to(real)
    store = store_of(home)
    store.add({"name": "Daily", "at": "09:05"}, now=NOW)
    assert (home / "jobs.toml").is_symlink() and "[[jobs]]" in real.read_text()
    assert store.lock_path == real.with_name(".jobs.toml.lock")


# --- edit, pause, remove --------------------------------------------------------------------------


def test_edit_changes_one_key_and_keeps_comments(store):
    store.add({"name": "Daily", "at": "09:05"}, now=NOW)
    store.path.write_text(store.path.read_text().replace('at = "09:05"', 'at = "09:05"  # morning'))
    edited = store.edit("Daily", {"max_retries": 5}, now=NOW)
    assert edited.max_retries == 5
    text = store.path.read_text()
    assert text.startswith(MINE) and 'at = "09:05"  # morning' in text


def test_edit_to_another_schedule_kind_drops_the_old_one(store):
    store.add({"name": "Daily", "at": "09:05"}, now=NOW)
    edited = store.edit("daily", {"every": "2h"}, now=NOW)
    assert edited.spec == "2h"
    [table] = tables(store)
    assert "at" not in table and table["every"] == "2h"


def test_edit_of_a_bad_value_writes_nothing(store):
    store.add({"name": "Daily", "at": "09:05"}, now=NOW)
    before = store.path.read_bytes()
    with pytest.raises(InvalidValue) as info:
        store.edit("daily", {"retry_delay": -1}, now=NOW)
    assert info.value.field == "retry_delay"
    assert store.path.read_bytes() == before


def test_edit_to_a_name_another_job_has_is_refused(store):
    store.add({"name": "A", "at": "09:05"}, now=NOW)
    store.add({"name": "B", "at": "09:05"}, now=NOW)
    with pytest.raises(DuplicateName):
        store.edit("a", {"name": "B"}, now=NOW)


def test_pause_and_resume_write_paused_only_while_paused(store):
    store.add({"name": "Daily", "at": "09:05"}, now=NOW)
    assert store.set_paused("daily", True).paused is True
    assert tables(store)[0]["paused"] is True
    assert store.set_paused("daily", False).paused is False
    assert "paused" not in tables(store)[0]


def test_remove_takes_out_the_table_and_its_comment_stays_with_the_rest(store):
    store.add({"name": "A", "at": "09:05"}, now=NOW)
    store.add({"name": "B", "at": "10:05"}, now=NOW)
    assert store.remove("a").id == "a"
    assert [t["id"] for t in tables(store)] == ["b"] and store.path.read_text().startswith(MINE)
    with pytest.raises(JobNotFound):
        store.remove("a")


def test_a_broken_file_is_never_rewritten(store):
    store.path.write_text(MINE + "[[jobs]]\nid = \n")
    before = store.path.read_bytes()
    with pytest.raises(JobFileError):
        store.add({"name": "Daily", "at": "09:05"}, now=NOW)
    assert store.path.read_bytes() == before


# --- bulk edits: one pass over the file -------------------------------------------------------------


def _many_jobs(n: int) -> str:
    parts = ["# my jobs: keep this\n[defaults]\ntimezone = \"UTC\"\nurl = \"https://example.com/\"\n"]
    for i in range(n):
        parts.append(f"\n# job {i}\n[[jobs]]\nid = \"j{i}\"  # id comment {i}\nat = \"09:{i % 60:02d}\"\n")
    return "".join(parts)


def _count_parses(monkeypatch):
    import crawlsched.tomledit as tomledit

    calls = {"n": 0}
    real = tomledit.tomllib.loads

    class Counting:
        @staticmethod
        def loads(text, **kw):
            calls["n"] += 1
            return real(text, **kw)

    monkeypatch.setattr(tomledit, "tomllib", Counting)
    return calls


def test_pause_all_on_2000_jobs_is_one_pass_and_keeps_comments(tmp_path, monkeypatch):
    path = tmp_path / "jobs.toml"
    path.write_text(_many_jobs(2000))
    store = JobStore(path, cache_dir=tmp_path / ".cache")
    calls = _count_parses(monkeypatch)
    assert store.set_paused_all(True) == 2000
    assert calls["n"] <= 2  # the whole-file check runs once, not once per job
    text = path.read_text()
    assert text.startswith("# my jobs: keep this\n") and "# job 1999\n" in text and 'id = "j7"  # id comment 7' in text
    assert all(t["paused"] is True for t in tomllib.loads(text)["jobs"])
    assert store.set_paused_all(False) == 2000
    assert path.read_text() == _many_jobs(2000)


def test_prune_and_add_many_are_one_pass(tmp_path, monkeypatch):
    path = tmp_path / "jobs.toml"
    text = _many_jobs(300).replace('at = "09:00"\n', 'at = "09:00"\nend_date = 2020-01-02\n')
    path.write_text(text)
    store = JobStore(path, cache_dir=tmp_path / ".cache")
    calls = _count_parses(monkeypatch)
    gone = store.prune(datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert [j.id for j in gone] == [f"j{i}" for i in range(0, 300, 60)] and calls["n"] <= 2
    calls["n"] = 0
    store.add_many([{"id": f"j{i}", "name": f"J{i}", "at": "10:00"} for i in range(1, 200)], replace=True)
    assert calls["n"] <= 2
    jobs = store.load().jobs
    assert len(jobs) == 298 and store.load().find("j1").name == "J1" and "# job 250\n" in path.read_text()


# --- one writer at a time -------------------------------------------------------------------------


def test_a_writer_waits_for_the_lock_and_then_sees_the_other_writers_job(store):
    other = store_of(store.path.parent)
    done = threading.Event()
    errors: list[BaseException] = []

    def add_b() -> None:
        try:
            other.add({"name": "B", "at": "10:05"}, now=NOW)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        done.set()

    with store.locked():
        thread = threading.Thread(target=add_b)
        thread.start()
        assert not done.wait(0.3), "the second writer did not wait for the lock"
        # Still under the lock: the holder writes A.
        store.path.write_text(store.path.read_text() + '\n[[jobs]]\nid = "a"\nname = "A"\nat = "09:05"\n')
    assert done.wait(10) and not errors
    thread.join()
    assert [t["id"] for t in tables(store)] == ["a", "b"]  # B was added to the file with A, not over it


# --- the parse cache ------------------------------------------------------------------------------


def _big(home: Path) -> str:
    text = MINE + "".join(f'\n[[jobs]]\nid = "j{i}"\nat = "09:{i % 60:02d}"\n' for i in range(3000))
    assert len(text.encode()) >= CACHE_MIN_BYTES
    return text


def test_a_large_file_is_read_from_the_cache_until_it_changes(home, monkeypatch):
    write_jobs(home, _big(home), defaults=None)
    first = store_of(home).load()
    assert list((home / ".cache").glob("jobs-*.pickle"))
    parses = []
    real = tomllib.loads
    monkeypatch.setattr(tomllib, "loads", lambda *a, **k: parses.append(1) or real(*a, **k))
    assert store_of(home).load() == first and parses == []  # a fresh store (process) reads the cache
    time.sleep(0.01)
    write_jobs(home, _big(home).replace('id = "j0"', 'id = "zero"'), defaults=None)
    changed = store_of(home).load()
    assert parses and changed.jobs[0].id == "zero" and [j.id for j in changed.jobs[1:]] == [j.id for j in first.jobs[1:]]


def test_a_small_file_leaves_no_cache_file(store):
    store.load()
    assert not (store.path.parent / ".cache").exists() or not list((store.path.parent / ".cache").glob("jobs-*"))


def test_a_cache_file_that_is_garbage_is_ignored(home):
    write_jobs(home, _big(home), defaults=None)
    first = store_of(home).load()
    for cached in (home / ".cache").glob("jobs-*.pickle"):
        cached.write_bytes(b"not a pickle")
    assert store_of(home).load() == first


# --- where the files are ----------------------------------------------------------------------------


def test_paths_come_from_the_option_then_the_environment_then_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_paths(None, None, {}) == (tmp_path / "jobs.toml", tmp_path)
    env = {"CRAWLSCHED_JOBS": "/etc/c/jobs.toml", "CRAWLSCHED_HOME": "/var/lib/c"}
    assert resolve_paths(None, None, env) == (Path("/etc/c/jobs.toml"), Path("/var/lib/c"))
    assert resolve_paths("x.toml", "h", env) == (tmp_path / "x.toml", tmp_path / "h")
    assert resolve_paths(None, None, {"CRAWLSCHED_JOBS": "/etc/c/jobs.toml"}) == (Path("/etc/c/jobs.toml"), Path("/etc/c"))


def test_the_last_good_copy_round_trips_and_a_broken_one_is_none(store):
    home = store.path.parent
    assert store.load_last_good(home) is None
    store.add({"name": "Daily", "at": "09:05"}, now=NOW)
    store.save_last_good(home, store.path.read_bytes())
    assert [j.id for j in store.load_last_good(home).jobs] == ["daily"]
    os.chmod(store.last_good_path(home), 0o600)
    store.last_good_path(home).write_text("[[jobs]]\nid = ")
    assert store.load_last_good(home) is None


# --- [defaults] state, read before the jobs are (crawlsched.state.open chooses the state from it) ----------


@pytest.mark.parametrize(("text", "state"), [
    ('[defaults]\nstate = "postgresql://db/x"\n\n[[jobs]]\nid = "a"\n', "postgresql://db/x"),
    ('[[jobs]]\nid = "a"\nname = "A"\nat = "09:00"\nurl = "https://example.com/"\n', None),
    ('# no defaults here\n', None),
    ('[[jobs]]\nid = "a"\nname = "A"\nat = "09:00"\nurl = "https://example.com/"\n\n[defaults]\nstate = "host=db"\n', "host=db"),
])  # fmt: skip
def test_the_defaults_state_is_read_from_the_file_as_written(tmp_path, text, state):
    path = tmp_path / "jobs.toml"
    path.write_text(text)
    assert JobStore(path).defaults_state() == state


def test_a_broken_file_gives_the_state_of_the_daemons_last_good_copy(tmp_path):
    path = tmp_path / "jobs.toml"
    store = JobStore(path)
    store.last_good_path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    store.last_good_path(tmp_path).write_text('[defaults]\nstate = "postgresql://db/x"\n')
    path.write_text('[defaults\nstate = "postgresql://other/y"\n')
    assert store.defaults_state(tmp_path) == "postgresql://db/x"
    assert JobStore(tmp_path / "missing.toml").defaults_state(tmp_path) is None


def test_a_large_file_loaded_twice_unchanged_is_parsed_once_and_changed_is_read_again(tmp_path, monkeypatch):
    from crawlsched import jobcache

    path = tmp_path / "jobs.toml"
    body = "".join(f'[[jobs]]\nid = "j{i}"\nevery = "1h"\ncommand = "true"\n\n' for i in range(jobcache.CACHE_MIN_BYTES // 40))
    path.write_text(body)
    store = JobStore(path, cache_dir=tmp_path / "cache", machine_tz="UTC")
    parses = []
    real = jobcache.ParseCache.parse
    monkeypatch.setattr(jobcache.ParseCache, "parse", lambda self, *a: parses.append(1) or real(self, *a))
    first = store.load(cache_later=True)
    assert store.load() is first and len(parses) == 1, "the same version: the same jobs, not parsed again"
    path.write_text(body.replace('id = "j0"', 'id = "first"'))
    assert store.load().jobs[0].id == "first", "a new version is read"
