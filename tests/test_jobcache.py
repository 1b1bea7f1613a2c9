"""The job file's parse cache: a changed file is parsed only in the tables that changed,
and gives exactly what parsing the whole text gives — jobs, lines and errors."""

from __future__ import annotations

import shutil
import tomllib
from datetime import datetime, timezone

import pytest

from crawlsched.errors import JobFileError
from crawlsched.jobcache import CACHE_MIN_BYTES, parse_segmented
from crawlsched.jobfile import parse_text
from crawlsched.store import JobStore

HEAD = '# my jobs\n[defaults]\ntimezone = "UTC"\ncommand = "true"\n\n'


def _big(n: int = 1500, head: str = HEAD) -> str:
    body = "".join(f'# job {i}\n[[jobs]]\nid = "j{i}"\nname = "Job {i}"\nevery = "{i + 1}m"\nstart_date = 2025-01-01\n\n'
                   for i in range(n))
    return head + body


@pytest.fixture
def parsed(monkeypatch):
    """Characters that went through ``tomllib.loads`` (every module calls it through the module)."""
    seen = {"chars": 0}
    real = tomllib.loads

    def counting(text, **kw):
        seen["chars"] += len(text)
        return real(text, **kw)

    monkeypatch.setattr(tomllib, "loads", counting)
    return seen


def _same(a, b) -> None:
    assert a.defaults == b.defaults and a.raw_defaults == b.raw_defaults
    assert a.jobs == b.jobs
    assert [j.line for j in a.jobs] == [j.line for j in b.jobs]


@pytest.mark.parametrize("text", [
    _big(3),
    HEAD,
    "",
    "[[jobs]]\nid = \"a\"\nevery = \"1h\"\ncommand = \"true\"\n",
    HEAD + '[[jobs]]  # the first\r\nid = "a"\r\nevery = "1h"\r\n\r\n[[jobs]]\r\nid = "b"\r\nat = "09:00"\r\n',
    HEAD + '[[jobs]]\nid = "a"\nevery = "1h"\n[jobs.headers]\nX-A = "1"\n\n[[jobs]]\nid = "b"\nevery = "2h"\n',
    "\ufeff" + HEAD + '[[jobs]]\nid = "a"\nevery = "1h"\n',
])
def test_a_file_cut_at_its_job_headers_parses_as_the_whole_text(text):
    result = parse_segmented(text, "UTC")
    assert result is not None
    _same(result[0], parse_text(text, "jobs.toml", "UTC"))


@pytest.mark.parametrize("text", [
    # a header inside a multi-line string: one job, not two
    HEAD + '[[jobs]]\nid = "a"\nevery = "1h"\ncommand = """echo\n[[jobs]]\nid = "b"\n"""\n',
    # [defaults] after the jobs
    '[[jobs]]\nid = "a"\nevery = "1h"\n\n[defaults]\ncommand = "true"\n',
    # a quoted header the cut does not see
    HEAD + '[[jobs]]\nid = "a"\nevery = "1h"\n\n[["jobs"]]\nid = "b"\nevery = "1h"\n',
    # jobs as an inline array
    'jobs = [{ id = "a", every = "1h", command = "true" }]\n' + HEAD,
])
def test_a_file_that_cannot_be_cut_exactly_is_left_to_the_whole_parse(text):
    assert parse_segmented(text, "UTC") is None
    parse_text(text, "jobs.toml", "UTC")  # valid: only the cut is refused


@pytest.mark.parametrize("bad", [
    HEAD + '[[jobs]]\nid = "a"\nevery = "1h"\n\n[[jobs]]\nid = "a"\nevery = "2h"\n',  # duplicate id
    HEAD + '[[jobs]]\nid = "a"\nevery = "soon"\n',  # a bad value
    HEAD + '[[jobs]]\nid = "a"\nevery = "1h\n',  # not TOML
    HEAD.replace('"UTC"', '"Mars/Base"') + '[[jobs]]\nid = "a"\nevery = "1h"\n',  # bad defaults
])
def test_a_file_with_an_error_is_left_to_the_whole_parse(bad):
    assert parse_segmented(bad, "UTC") is None
    with pytest.raises(JobFileError):
        parse_text(bad, "jobs.toml", "UTC")


def test_a_copied_and_hand_edited_large_file_is_parsed_only_where_it_changed(tmp_path, parsed):
    path = tmp_path / "jobs.toml"
    text = _big()
    assert len(text) > CACHE_MIN_BYTES
    path.write_text(text)
    cache = tmp_path / "cache"
    JobStore(path, cache_dir=cache, machine_tz="UTC").load()  # the first read parses everything
    edited = text.replace('name = "Job 700"\nevery = "701m"', 'name = "Job 700"\nevery = "7h"')
    copy = tmp_path / "copy" / "jobs.toml"
    copy.parent.mkdir()
    path.write_text(edited)  # same path, new contents
    parsed["chars"] = 0
    got = JobStore(path, cache_dir=cache, machine_tz="UTC").load()
    assert parsed["chars"] < len(text) // 50
    _same(got, parse_text(edited, "jobs.toml", "UTC"))
    assert got.find("j700").every_seconds == 7 * 3600
    shutil.copyfile(path, copy)  # another path has its own cache: parsed whole once
    assert JobStore(copy, cache_dir=cache, machine_tz="UTC").load().jobs == got.jobs


def test_a_large_file_broken_by_hand_reports_its_error_as_without_the_cache(tmp_path):
    path = tmp_path / "jobs.toml"
    text = _big()
    path.write_text(text)
    store = JobStore(path, cache_dir=tmp_path / "cache", machine_tz="UTC")
    store.load()
    broken = text.replace('every = "901m"', 'every = "nine"')
    path.write_text(broken)
    with pytest.raises(JobFileError) as cached:
        store.load()
    with pytest.raises(JobFileError) as whole:
        parse_text(broken, "jobs.toml", "UTC")
    assert str(cached.value) == str(whole.value) and whole.value.line == cached.value.line


def test_adding_to_a_fresh_copy_of_a_large_file_parses_no_table_again(tmp_path, parsed):
    src = tmp_path / "src.toml"
    src.write_text(_big())
    dst = tmp_path / "jobs.toml"
    cache = tmp_path / "cache"
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    shutil.copyfile(src, dst)
    JobStore(dst, cache_dir=cache, machine_tz="UTC").add({"name": "new", "every": "1h"}, now=now)
    shutil.copyfile(src, dst)  # as the benchmark does: the same file again, a new inode
    parsed["chars"] = 0
    job = JobStore(dst, cache_dir=cache, machine_tz="UTC").add({"name": "new", "every": "1h"}, now=now)
    assert parsed["chars"] < 2000  # the head, the new table checked on its own
    assert job.id == "new"
    loaded = JobStore(dst, cache_dir=tmp_path / "other-cache", machine_tz="UTC").load()
    assert [j.id for j in loaded.jobs][-2:] == ["j1499", "new"]


def test_after_an_add_a_hand_edit_elsewhere_is_parsed_only_where_it_changed(tmp_path, parsed):
    path = tmp_path / "jobs.toml"
    path.write_text(_big().rstrip("\n") + "\n")  # the last table ends in one newline: add writes a blank line after it
    cache = tmp_path / "cache"
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    JobStore(path, cache_dir=cache, machine_tz="UTC").add({"name": "new", "every": "1h"}, now=now)
    edited = path.read_text().replace('every = "6m"', 'every = "7m"')
    path.write_text(edited)
    parsed["chars"] = 0
    got = JobStore(path, cache_dir=cache, machine_tz="UTC").load()
    assert parsed["chars"] <= len(HEAD) + 100  # the head and the one edited table: not the last one, not the new one
    _same(got, parse_text(edited, "jobs.toml", "UTC"))


def test_a_load_that_caches_later_writes_the_parse_cache_only_when_told(tmp_path, parsed):
    path = tmp_path / "jobs.toml"
    path.write_text(_big())
    cache = tmp_path / "cache"
    store = JobStore(path, cache_dir=cache, machine_tz="UTC")
    first = store.load(cache_later=True)
    assert not list(cache.glob("jobs-*.pickle")), "nothing written before it is asked for"
    store.save_cache_later()
    store.save_cache_later()  # once only: nothing left to write
    parsed["chars"] = 0
    again = JobStore(path, cache_dir=cache, machine_tz="UTC").load()
    assert parsed["chars"] == 0, "the next read is the cache's"
    _same(again, first)


def test_the_parse_cache_writes_its_jobs_as_the_default_pickle_does(tmp_path):
    import io
    import pickle

    from crawlsched import jobcache

    path = tmp_path / "jobs.toml"
    path.write_text(_big())
    jobfile = JobStore(path, cache_dir=tmp_path / "cache", machine_tz="UTC").load()
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = jobcache._DISPATCH
    pickler.dump(jobfile)
    assert out.getvalue() == pickle.dumps(jobfile, protocol=pickle.HIGHEST_PROTOCOL)  # caches written before still read
    _same(pickle.loads(next((tmp_path / "cache").glob("jobs-*.pickle")).read_bytes())[1][1], jobfile)


def test_a_daemon_s_parse_cache_reads_back_into_jobs_as_small_as_parsed_ones(tmp_path):
    import gc
    import tracemalloc

    path = tmp_path / "jobs.toml"
    path.write_text(_big(3000))

    def loaded_bytes(store: JobStore) -> tuple[float, object]:
        gc.collect()
        tracemalloc.start()
        jobfile = store.load()
        gc.collect()
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return size / len(jobfile.jobs), jobfile

    parsed_size, parsed = loaded_bytes(JobStore(path, cache_dir=tmp_path / "fresh", machine_tz="UTC"))
    daemon_store = JobStore(path, cache_dir=tmp_path / "daemon", machine_tz="UTC")
    daemon_store.compact_cache = True
    daemon_store.load()  # writes the cache
    again = JobStore(path, cache_dir=tmp_path / "daemon", machine_tz="UTC")
    again.compact_cache = True
    cached_size, cached = loaded_bytes(again)
    _same(cached, parsed)
    # Read back with the default pickle, each job also holds a dict of its fields (64 bytes more on 3.11).
    assert cached_size <= parsed_size + 60, (cached_size, parsed_size)
