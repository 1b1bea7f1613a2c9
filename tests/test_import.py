"""``import_seed``: the seed's scheduler_jobs.json into jobs.toml, all or nothing, safe to repeat."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawlsched.errors import CrawlschedError
from crawlsched.importer import import_seed
from crawlsched.state import State
from crawlsched.store import JobStore
from helpers.jobs import write_jobs

UTC = timezone.utc
NOW = datetime(2025, 11, 20, 3, 0, tzinfo=UTC)

# The seed's example file ("Konfigurasi File"), word for word.
SEED_EXAMPLE = """[
  {
    "id": "job_20251107110530",
    "name": "Crawl Pagi Hari",
    "start_date": "2025-11-08",
    "end_date": "2025-12-31",
    "hour": 9,
    "minute": 5,
    "max_retries": 3,
    "retry_delay": 300,
    "status": "active",
    "created_at": "2025-11-07 11:05:30",
    "last_run": null,
    "last_message": null
  }
]
"""


def record(**fields: object) -> dict[str, object]:
    base = json.loads(SEED_EXAMPLE)[0]
    base.update(fields)
    return base


@pytest.fixture
def home(home: Path) -> Path:
    """The shared home, holding a hand-written job file."""
    write_jobs(home, '# hand-written\n[defaults]\ntimezone = "Asia/Jakarta"\nurl = "https://example.com/news"\n', defaults=None)
    return home


def store(home: Path) -> JobStore:
    return JobStore(home / "jobs.toml", cache_dir=home / ".cache", machine_tz="UTC")


def state(home: Path) -> State:
    return State(home / "crawlsched.db").open()


def seed_file(home: Path, records: object) -> Path:
    path = home / "scheduler_jobs.json"
    path.write_text(records if isinstance(records, str) else json.dumps(records, indent=2))
    return path


def test_the_seeds_example_file_is_imported_with_its_id_times_and_retries(home):
    jobs = import_seed(seed_file(home, SEED_EXAMPLE), store(home), state(home), NOW)
    assert [j.id for j in jobs] == ["job_20251107110530"]
    text = (home / "jobs.toml").read_text()
    assert text.startswith('# hand-written\n[defaults]\ntimezone = "Asia/Jakarta"\nurl = "https://example.com/news"\n')
    assert ('[[jobs]]\nid = "job_20251107110530"\nname = "Crawl Pagi Hari"\nat = "09:05"\nstart_date = 2025-11-08\n'
            'end_date = 2025-12-31\nmax_retries = 3\nretry_delay = 300\ntimezone = "Asia/Jakarta"\n'
            "created_at = 2025-11-07 11:05:30+07:00\n") in text
    job = store(home).load().find("job_20251107110530")
    assert job is not None and job.urls == ("https://example.com/news",) and not job.paused


def test_imported_ids_are_remembered_so_they_are_never_reused(home):
    st = state(home)
    import_seed(seed_file(home, SEED_EXAMPLE), store(home), st, NOW)
    assert st.known_id("job_20251107110530")


def test_importing_twice_replaces_the_same_ids_without_duplicates(home):
    path = seed_file(home, [record(), record(id="job_2", name="Sore", hour=17, minute=0)])
    import_seed(path, store(home), state(home), NOW)
    first = (home / "jobs.toml").read_bytes()
    import_seed(path, store(home), state(home), NOW)
    assert (home / "jobs.toml").read_bytes() == first
    assert [j.id for j in store(home).load().jobs] == ["job_20251107110530", "job_2"]


def test_a_changed_seed_file_replaces_the_job_in_place_of_a_duplicate(home):
    import_seed(seed_file(home, [record()]), store(home), state(home), NOW)
    import_seed(seed_file(home, [record(hour=10, minute=30)]), store(home), state(home), NOW)
    jobs = store(home).load().jobs
    assert [(j.id, j.spec) for j in jobs] == [("job_20251107110530", "10:30")]


@pytest.mark.parametrize("status", ["paused", "stopped"])
def test_paused_or_stopped_seed_jobs_are_paused(home, status):
    import_seed(seed_file(home, [record(status=status)]), store(home), state(home), NOW)
    assert store(home).load().jobs[0].paused


def test_an_end_date_in_the_past_is_accepted_as_a_finished_job(home):
    import_seed(seed_file(home, [record(start_date="2025-01-01", end_date="2025-02-01")]), store(home), state(home), NOW)
    from crawlsched import timing

    assert timing.is_finished(store(home).load().jobs[0], NOW)


def test_minute_may_be_left_out(home):
    rec = record()
    del rec["minute"]
    import_seed(seed_file(home, [rec]), store(home), state(home), NOW)
    assert store(home).load().jobs[0].spec == "09:00"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"hour": 25}, 'scheduler_jobs.json: record 3 (id "job_3"): hour: 25 must be at most 23'),
        ({"minute": "x"}, 'scheduler_jobs.json: record 3 (id "job_3"): minute: "x" must be a whole number'),
        ({"id": "Job 3!"}, 'scheduler_jobs.json: record 3 (id "Job 3!"): id: "Job 3!" must match'),
        ({"start_date": "08-11-2025"}, 'scheduler_jobs.json: record 3 (id "job_3"): start_date: "08-11-2025" is not a date'),
        ({"end_date": "2025-01-01"}, 'scheduler_jobs.json: record 3 (id "job_3"): end_date: "2025-01-01" is before start_date'),
        ({"max_retries": -2}, 'scheduler_jobs.json: record 3 (id "job_3"): max_retries: -2 must be at least 0'),
        ({"created_at": "yesterday"}, 'scheduler_jobs.json: record 3 (id "job_3"): created_at: "yesterday" is not a date-time'),
        ({"hour": None}, 'scheduler_jobs.json: record 3 (id "job_3"): hour: missing'),
        ({"id": "job_1"}, 'scheduler_jobs.json: record 3 (id "job_1"): id: "job_1" is used by record 1 too'),
        ({"name": "One"}, 'scheduler_jobs.json: record 3 (id "job_3"): name: "One" is used by record 1 too'),
        ({"name": "Mine"}, 'scheduler_jobs.json: record 3 (id "job_3"): name: "Mine" is taken by job "mine" in jobs.toml'),
    ],
    ids=["hour", "minute", "id", "start", "end-before-start", "retries", "created", "no-hour", "dup-id", "dup-name", "taken-name"],
)
def test_one_bad_record_refuses_the_whole_file_and_changes_nothing(home, bad, message):
    (home / "jobs.toml").write_text((home / "jobs.toml").read_text() + '\n[[jobs]]\nid = "mine"\nname = "Mine"\nat = "08:00"\n')
    before = (home / "jobs.toml").read_bytes()
    records = [record(id="job_1", name="One"), record(id="job_2", name="Two"), record(**{"id": "job_3", "name": "Three", **bad})]
    with pytest.raises(CrawlschedError) as info:
        import_seed(seed_file(home, records), store(home), state(home), NOW)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(message), str(info.value)
    assert (home / "jobs.toml").read_bytes() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[{", "scheduler_jobs.json:1: not valid JSON"),
        ('{"id": "x"}', "scheduler_jobs.json: must hold a JSON array"),
        ('["x"]', 'scheduler_jobs.json: record 1: record: "x" must be a JSON object'),
    ],
    ids=["json", "not-array", "not-object"],
)
def test_a_malformed_file_is_refused(home, text, message):
    before = (home / "jobs.toml").read_bytes()
    with pytest.raises(CrawlschedError) as info:
        import_seed(seed_file(home, text), store(home), state(home), NOW)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(message)
    assert (home / "jobs.toml").read_bytes() == before


def test_a_missing_file_is_refused_with_exit_2(home):
    with pytest.raises(CrawlschedError) as info:
        import_seed(home / "nope.json", store(home), state(home), NOW)
    assert info.value.exit_code == 2 and "no such file" in str(info.value)


@pytest.mark.parametrize("kind", ["device", "fifo", "huge"])
def test_a_device_a_fifo_or_a_huge_file_is_refused_before_it_is_read(home, kind):
    import os

    from crawlsched.importer import SEED_MAX_BYTES

    if kind == "device":
        path = Path("/dev/zero")  # read whole, it would fill memory
    elif kind == "fifo":
        path = home / "seed.fifo"
        os.mkfifo(path)  # opened, it would wait for a writer for ever
    else:
        path = home / "huge.json"
        with open(path, "wb") as fh:
            fh.truncate(SEED_MAX_BYTES + 1)
    before = (home / "jobs.toml").read_bytes()
    with pytest.raises(CrawlschedError) as info:
        import_seed(path, store(home), state(home), NOW)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(f"{path}: is ")
    assert ("not a regular file" if kind != "huge" else "larger than 16 MiB") in str(info.value)
    assert (home / "jobs.toml").read_bytes() == before


def test_without_a_default_crawl_it_asks_for_defaults_url_or_url(tmp_path):
    (tmp_path / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\n')
    before = (tmp_path / "jobs.toml").read_bytes()
    with pytest.raises(CrawlschedError) as info:
        import_seed(seed_file(tmp_path, SEED_EXAMPLE), store(tmp_path), state(tmp_path), NOW)
    assert info.value.exit_code == 2
    assert "[defaults]" in str(info.value) and "url" in str(info.value) and "--url" in str(info.value)
    assert "`crawlsched defaults --url URL`" in str(info.value)  # the command, not "edit the file"
    assert (tmp_path / "jobs.toml").read_bytes() == before


def test_default_url_is_set_on_every_imported_job(tmp_path):
    jobs = import_seed(seed_file(tmp_path, SEED_EXAMPLE), store(tmp_path), state(tmp_path), NOW,
                       default_url="https://example.com/seed")
    assert jobs[0].urls == ("https://example.com/seed",)
    assert 'url = ["https://example.com/seed"]' in (tmp_path / "jobs.toml").read_text()


def test_a_bad_default_url_is_refused(tmp_path):
    with pytest.raises(CrawlschedError) as info:
        import_seed(seed_file(tmp_path, SEED_EXAMPLE), store(tmp_path), state(tmp_path), NOW, default_url="ftp://x/")
    assert info.value.exit_code == 2 and str(info.value).startswith("--url:")
    assert not (tmp_path / "jobs.toml").exists()


def test_an_empty_array_imports_nothing(home):
    before = (home / "jobs.toml").read_bytes()
    assert import_seed(seed_file(home, "[]"), store(home), state(home), NOW) == []
    assert (home / "jobs.toml").read_bytes() == before


@pytest.mark.parametrize("text", ["not json", json.dumps([{"id": "x", "name": "n"}]), json.dumps([record(hour=25)])])
def test_the_cli_import_of_a_refused_file_leaves_no_database_nor_job_file(cli, tmp_home, tmp_path, text):
    seed = tmp_path / "scheduler_jobs.json"
    seed.write_text(text)
    result = cli("import", seed, "--url", "https://example.com/news")
    assert result.exit_code == 2, result.output
    assert sorted(p.name for p in tmp_home.path.iterdir()) == []


def test_the_cli_import_creates_the_database_once_the_file_is_valid(cli, tmp_home, tmp_path):
    seed = tmp_path / "scheduler_jobs.json"
    seed.write_text(SEED_EXAMPLE)
    result = cli("import", seed, "--url", "https://example.com/news")
    assert result.exit_code == 0, result.output
    assert tmp_home.db.exists() and tmp_home.jobs_file.exists()


def test_importing_the_same_file_twice_says_nothing_was_imported(cli, tmp_home, tmp_path):
    seed = tmp_path / "scheduler_jobs.json"
    seed.write_text(SEED_EXAMPLE)
    first = cli("import", seed, "--url", "https://example.com/news")
    assert first.exit_code == 0 and first.stdout.startswith(f"imported 1 job from {seed}")
    before = tmp_home.jobs_file.read_bytes()
    again = cli("import", seed, "--url", "https://example.com/news", "--json")
    assert again.exit_code == 0, again.output
    assert again.json()["message"] == f"nothing to import: 1 job from {seed} already present, unchanged"
    assert again.json()["job_ids"] == ["job_20251107110530"] and again.json()["written"] == []
    assert tmp_home.jobs_file.read_bytes() == before
    seed.write_text(json.dumps([record(), record(id="job_2", name="Second", hour=10)]))
    more = cli("import", seed, "--url", "https://example.com/news")
    assert more.stdout.startswith(f"imported 1 job from {seed} (1 job already present, unchanged)")
