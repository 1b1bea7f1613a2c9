"""The web API and page (SPEC §8) through Flask's test client, over a real Daemon.

The daemon is started (lock, state, jobs) but its loop is not run: tests drive
``daemon.turn()`` with a fake clock and an inline executor, so a run-now or a
fire happens exactly when the test says.
"""

from __future__ import annotations

import json
import tomllib
import os
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask.testing import FlaskClient

from crawlsched.daemon import Daemon, DaemonView, InlineExecutor
from crawlsched.state import State
from crawlsched.store import JobStore
from crawlsched.errors import WebConfigError
from crawlsched.web import MAX_BODY, create_app, start_server
from helpers.clock import FakeClock
from helpers.jobs import write_jobs
from helpers.servers import Pages

UTC = timezone.utc
START = datetime(2025, 11, 8, 8, 0, tzinfo=UTC)  # a Saturday, 08:00 UTC
BASE = "http://127.0.0.1:5000"
SEED_BODY = {
    "name": "Crawl Pagi Hari",
    "start_date": "2025-11-08",
    "end_date": "2025-12-31",
    "hour": 9,
    "minute": 5,
    "max_retries": 3,
    "retry_delay": 300,
}
SECURITY = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Client(FlaskClient):
    """Requests go to http://127.0.0.1:5000 (the Host the app was bound to) unless told otherwise."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("base_url", BASE)
        return super().open(*args, **kwargs)


class Env:
    def __init__(self, home: Path, token: str | None = None) -> None:
        self.home = home
        self.jobs_file = home / "jobs.toml"
        self.clock = FakeClock(START)
        self.daemon = Daemon(JobStore(self.jobs_file, cache_dir=home / ".cache"), State(home / "crawlsched.db"), home,
                             logging.getLogger("crawlsched.test"), clock=self.clock.time, monotonic=self.clock.monotonic,
                             executor=InlineExecutor(), notify=lambda _m: False, duties=False)
        self.app = create_app(self.daemon.store, self.daemon.state, DaemonView(self.daemon), home=self.daemon.home, log=self.daemon.log, token=token, bind_host="127.0.0.1", bind_port=5000)
        self.app.config["CRAWLSCHED_HANDOVER_WAIT"] = 0
        self.app.test_client_class = Client
        self.client = self.app.test_client()

    def start(self) -> Env:
        self.daemon.start()
        return self

    def turn(self) -> None:
        self.daemon.turn()
        self.daemon.collect()

    def add(self, **body: Any) -> dict[str, Any]:
        response = self.client.post("/api/scheduler/job/add", json=body)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def file_bytes(self) -> bytes:
        return self.jobs_file.read_bytes() if self.jobs_file.exists() else b""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("CRAWLSCHED_TOKEN", raising=False)
    write_jobs(tmp_path, '# my jobs\n[defaults]\ntimezone = "UTC"\n', defaults=None)
    e = Env(tmp_path).start()
    yield e
    e.daemon.shutdown()


@pytest.fixture
def target() -> Iterator[str]:
    """A local crawl target: GET /ok answers 200, anything else 404."""
    server = Pages({"/ok": (200, b"hello", None)}, default=(404, b"no", None))
    yield server.url("")
    server.close()


# --- the seed's endpoints -------------------------------------------------------------------


def test_add_with_the_seeds_body_answers_the_seeds_message(env):
    response = env.client.post("/api/scheduler/job/add", json={**SEED_BODY, "url": "https://example.com/news"})
    assert response.status_code == 200
    assert response.get_json() == {
        "success": True,
        "message": "✅ Job 'Crawl Pagi Hari' berhasil ditambahkan",
        "job_id": "crawl-pagi-hari",
    }


def test_jobs_lists_the_seeds_card_fields(env):
    env.add(**SEED_BODY, url="https://example.com/news")
    data = env.client.get("/api/scheduler/jobs").get_json()
    assert data["success"] is True
    [job] = data["jobs"]
    assert {k: job[k] for k in ("id", "name", "schedule", "start_date", "end_date", "next_run", "last_run", "status",
                                "max_retries", "retry_delay", "last_message", "timezone")} == {
        "id": "crawl-pagi-hari", "name": "Crawl Pagi Hari", "schedule": "09:05", "start_date": "2025-11-08",
        "end_date": "2025-12-31", "next_run": "2025-11-08 09:05:00", "last_run": None, "status": "active",
        "max_retries": 3, "retry_delay": 300, "last_message": None, "timezone": "UTC",
    }  # fmt: skip


def test_add_writes_the_same_table_as_the_cli(env):
    env.add(**SEED_BODY, url="https://example.com/news")
    text = env.jobs_file.read_text()
    assert text.startswith('# my jobs\n[defaults]\ntimezone = "UTC"\n')
    assert ('[[jobs]]\nid = "crawl-pagi-hari"\nname = "Crawl Pagi Hari"\nat = "09:05"\nstart_date = 2025-11-08\n'
            'end_date = 2025-12-31\nurl = ["https://example.com/news"]\nmax_retries = 3\nretry_delay = 300\n'
            'timezone = "UTC"\ncreated_at = 2025-11-08 08:00:00+00:00\n') in text


def test_hour_alone_means_minute_zero_and_start_defaults_to_today(env):
    env.add(name="Pagi", hour=7, url="https://example.com/")
    job = env.client.get("/api/scheduler/job/pagi").get_json()["job"]
    assert job["schedule"] == "07:00"
    assert job["start_date"] == "2025-11-08"


@pytest.mark.parametrize(
    ("extra", "schedule"),
    [
        ({"at": "9:05"}, "09:05"),
        ({"cron": "0 10 * * 1"}, "0 10 * * 1"),
        ({"every": "15m"}, "every 15m"),
        ({"every": 90}, "every 90s"),
    ],
    ids=["at", "cron", "every", "every-seconds"],
)
def test_add_takes_at_cron_and_every(env, extra, schedule):
    env.add(name="J", url=["https://example.com/a", "https://example.com/b"], timezone="Asia/Jakarta", **extra)
    job = env.client.get("/api/scheduler/job/j").get_json()["job"]
    assert job["schedule"] == schedule
    assert job["timezone"] == "Asia/Jakarta"
    assert job["url"] == ["https://example.com/a", "https://example.com/b"]


def test_seed_body_without_url_uses_the_defaults_crawl(env):
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nurl = "https://example.com/all"\n', defaults=None)
    env.add(**SEED_BODY)
    job = env.client.get("/api/scheduler/job/crawl-pagi-hari").get_json()["job"]
    assert job["url"] == ["https://example.com/all"]
    assert "url" not in env.jobs_file.read_text().split("[[jobs]]")[1]


def test_seed_body_without_url_and_no_default_is_refused_saying_how_to_set_one(env):
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/job/add", json=SEED_BODY)
    assert response.status_code == 422
    assert response.get_json() == {"success": False, "error": (
        "url: missing: this job names no crawl (url or command) and [defaults] has no default crawl; "
        "give the job a url or a command, or set a default crawl with `crawlsched defaults --url URL`")}
    assert env.file_bytes() == before


def test_the_jobs_payload_says_whether_a_default_crawl_exists(env):
    assert env.client.get("/api/scheduler/jobs").get_json()["default_crawl"] is False
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nurl = "https://example.com/all"\n', defaults=None)
    assert env.client.get("/api/scheduler/jobs").get_json()["default_crawl"] is True


def test_numbers_may_come_as_decimal_strings_as_a_form_sends_them(env):
    env.add(name="Form", start_date="2025-11-08", hour="09", minute="05", max_retries="3", retry_delay="300",
            url="https://example.com/")
    job = env.client.get("/api/scheduler/job/form").get_json()["job"]
    assert (job["schedule"], job["max_retries"], job["retry_delay"]) == ("09:05", 3, 300)
    table = tomllib.loads(env.jobs_file.read_text())["jobs"][0]
    assert (table["at"], table["max_retries"], table["retry_delay"]) == ("09:05", 3, 300)  # numbers in the file
    config = env.client.post("/api/scheduler/retry-config", json={"max_retries": "5", "retry_delay": "7.5"})
    assert config.status_code == 200 and config.get_json()["defaults"]["retry_delay"] == 7.5
    start = env.client.post("/api/scheduler/start", json={"mode": "interval", "seconds": "3600", "url": "https://example.com/"})
    assert start.status_code == 200, start.get_json()
    assert tomllib.loads(env.jobs_file.read_text())["jobs"][1]["every"] == "3600s"


@pytest.mark.parametrize("value", ["nine", "9.5", "²", "0x9", "", " ", " 9"], ids=["word", "fraction", "superscript", "hex", "empty", "blank", "spaced"])
def test_a_string_that_is_not_a_whole_number_is_refused_as_the_hour(env, value):
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/job/add", json={"name": "X", "hour": value, "url": "https://example.com/"})
    assert response.status_code == 422
    assert response.get_json()["error"].startswith("hour: ")
    assert env.file_bytes() == before


PYTHON_VALUES = ("None", "True", "False", "['", "{'", "NoneType", "<class")
NO_PYTHON_CASES = [
    ("/api/scheduler/job/add", {"name": "X", "url": "https://example.com/"}),  # no schedule
    ("/api/scheduler/job/add", {"name": "X", "hour": 9}),  # no crawl anywhere
    ("/api/scheduler/job/add", {"hour": 9, "url": "https://example.com/"}),  # no name
    ("/api/scheduler/job/add", {"name": "X", "hour": True, "url": "https://example.com/"}),
    ("/api/scheduler/job/add", {"name": "X", "hour": 9, "end_date": False, "url": "https://example.com/"}),
    ("/api/scheduler/job/add", {"name": "X", "hour": 9, "url": [1, None]}),
    ("/api/scheduler/retry-config", {"max_retries": True}),
    ("/api/scheduler/start", {"mode": "daily"}),
    ("/api/scheduler/start", {"mode": "interval"}),
    ("/api/scheduler/start", {"mode": "custom"}),
    ("/api/scheduler/run-now", {"job_id": False}),
    ("/api/scheduler/job/add", None),  # the body `null`
    ("/api/scheduler/job/add", [None]),
]


@pytest.mark.parametrize(("path", "body"), NO_PYTHON_CASES, ids=[f"{p.rsplit('/', 1)[1]}-{i}" for i, (p, _) in enumerate(NO_PYTHON_CASES)])
def test_no_error_message_shows_a_python_value(env, path, body):
    response = env.client.post(path, data=json.dumps(body), content_type="application/json")
    assert response.status_code in (400, 422), response.get_json()
    error = response.get_json()["error"]
    assert not [word for word in PYTHON_VALUES if word in error], error


@pytest.mark.parametrize(("body", "error"), [
    ({"name": "X", "hour": [9], "url": "https://example.com/"}, "hour: [9] must be a whole number"),
    ({"name": "X", "hour": 9, "url": ["https://example.com/", 5]}, 'url: ["https://example.com/", 5] must be a URL or a list of URLs'),
    ({"name": {"a": 1}, "hour": 9, "url": "https://example.com/"}, 'name: {"a": 1} must be a text'),
    ({"name": "X", "hour": 9, "url": "https://example.com/", "extra": [1]}, "extra: [1] is not a field of a job"),
], ids=["array-hour", "array-url", "object-name", "unknown-key"])
def test_an_array_or_object_in_an_error_is_written_as_json(env, body, error):
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/job/add", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"].startswith(error), response.get_json()
    assert env.file_bytes() == before


def test_a_malformed_headers_value_is_not_echoed_in_the_error(env):
    body = {"name": "X", "hour": 9, "url": "https://example.com/", "headers": "Authorization: Bearer s3cret"}
    response = env.client.post("/api/scheduler/job/add", json=body)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error.startswith("headers: ") and "s3cret" not in error, error


def test_a_request_without_a_host_header_is_refused_without_a_python_value(env):
    response = env.client.get("/api/scheduler/jobs", headers={"Host": ""})
    assert response.status_code == 403
    assert "None" not in response.get_json()["error"] and "'" not in response.get_json()["error"]


def test_get_job_returns_job_and_runs(env):
    env.add(**SEED_BODY, url="https://example.com/news")
    data = env.client.get("/api/scheduler/job/crawl-pagi-hari").get_json()
    assert data["success"] is True
    assert data["job"]["id"] == "crawl-pagi-hari"
    assert data["runs"] == []


def test_job_is_found_by_exact_name_too(env):
    env.add(name="Crawl Pagi Hari", hour=9, url="https://example.com/")
    assert env.client.get("/api/scheduler/job/Crawl Pagi Hari").get_json()["job"]["id"] == "crawl-pagi-hari"


def test_delete_removes_the_job_and_keeps_the_id_reserved(env):
    env.add(**SEED_BODY, url="https://example.com/news")
    response = env.client.delete("/api/scheduler/job/crawl-pagi-hari")
    assert response.status_code == 200
    assert response.get_json() == {"success": True, "message": "🗑️ Job 'Crawl Pagi Hari' deleted", "removed": ["crawl-pagi-hari"]}
    assert env.client.get("/api/scheduler/jobs").get_json()["jobs"] == []
    again = env.add(**SEED_BODY, url="https://example.com/news")
    assert again["job_id"] == "crawl-pagi-hari-2"  # ids are never reused


def test_pause_and_resume(env):
    env.add(**SEED_BODY, url="https://example.com/news")
    paused = env.client.post("/api/scheduler/job/crawl-pagi-hari/pause")
    assert paused.status_code == 200
    assert paused.get_json()["job"]["status"] == "paused"
    assert "paused = true" in env.jobs_file.read_text()
    resumed = env.client.post("/api/scheduler/job/crawl-pagi-hari/resume", json={})
    assert resumed.get_json()["job"]["status"] == "active"
    assert "paused" not in env.jobs_file.read_text()


def test_retry_config_sets_the_defaults(env):
    response = env.client.post("/api/scheduler/retry-config", json={"max_retries": 5, "retry_delay": 600})
    assert response.status_code == 200
    data = response.get_json()
    assert data["success"] is True and data["message"]
    assert data["defaults"]["max_retries"] == 5 and data["defaults"]["retry_delay"] == 600
    assert "max_retries = 5\nretry_delay = 600" in env.jobs_file.read_text()
    assert env.client.get("/api/scheduler/retry-config").get_json()["defaults"]["max_retries"] == 5


def test_add_is_known_to_the_daemon_at_once_and_run_now_runs_it(env, target):
    env.add(name="Now", hour=23, url=f"{target}/ok")
    response = env.client.post("/api/scheduler/run-now", json={"job_id": "now"})
    assert response.status_code == 200
    assert response.get_json()["job_id"] == "now"
    env.turn()  # one turn: reload (asked by add), then the request (asked by run-now)
    runs = env.client.get("/api/scheduler/job/now").get_json()["runs"]
    assert [(r["attempt"], r["status"], r["trigger"]) for r in runs] == [(1, "success", "manual")]
    job = env.client.get("/api/scheduler/job/now").get_json()["job"]
    assert job["status"] == "success" and job["last_run"] == "2025-11-08 08:00:00"


def test_run_now_without_job_id_runs_the_job_default(env):
    assert env.client.post("/api/scheduler/run-now").status_code == 404
    env.client.post("/api/scheduler/start", json={"mode": "daily", "hour": 9, "url": "http://127.0.0.1:9/"})
    response = env.client.post("/api/scheduler/run-now")
    assert response.status_code == 200
    assert response.get_json()["job_id"] == "default"


def test_run_now_of_an_unknown_job_is_404(env):
    response = env.client.post("/api/scheduler/run-now", json={"job_id": "nope"})
    assert response.status_code == 404
    assert response.get_json() == {"success": False, "error": 'no job with id or name "nope"'}


@pytest.mark.parametrize(
    ("body", "field", "value"),
    [
        ({"mode": "daily", "hour": 9, "minute": 5}, "at", "09:05"),
        ({"mode": "daily", "hour": 9}, "at", "09:00"),
        ({"mode": "hourly", "minute": 15}, "cron", "15 * * * *"),
        ({"mode": "interval", "seconds": 3600}, "every", "3600s"),
        ({"mode": "custom", "cron": "0 10 * * 1"}, "cron", "0 10 * * 1"),
    ],
    ids=["daily", "daily-hour-only", "hourly", "interval", "custom"],
)
def test_legacy_start_mode_creates_the_job_default(env, body, field, value):
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nurl = "https://example.com/"\n', defaults=None)
    response = env.client.post("/api/scheduler/start", json=body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["job_id"] == "default"
    assert f'{field} = "{value}"' in env.jobs_file.read_text()


def test_legacy_start_twice_replaces_the_job_default(env):
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nurl = "https://example.com/"\n', defaults=None)
    env.client.post("/api/scheduler/start", json={"mode": "daily", "hour": 9})
    env.client.post("/api/scheduler/start", json={"mode": "custom", "cron": "0 10 * * 1"})
    jobs = env.client.get("/api/scheduler/jobs").get_json()["jobs"]
    assert [(j["id"], j["schedule"]) for j in jobs] == [("default", "0 10 * * 1")]


def test_legacy_stop_and_start_switch_the_scheduler_and_leave_each_jobs_own_pause(env):
    env.add(name="A", hour=9, url="https://example.com/")
    env.add(name="B", hour=10, url="https://example.com/")
    env.client.post("/api/scheduler/job/b/pause")  # paused on purpose, on its own
    stop = env.client.post("/api/scheduler/stop")  # no body, no Content-Type: as `curl -X POST` sends
    assert stop.status_code == 200 and stop.get_json()["scheduler_paused"] is True
    text = env.jobs_file.read_text()
    assert tomllib.loads(text)["defaults"]["paused"] is True
    assert [j.get("paused") for j in tomllib.loads(text)["jobs"]] == [None, True]  # the jobs' own keys untouched
    jobs = env.client.get("/api/scheduler/jobs").get_json()
    assert jobs["scheduler_paused"] is True
    assert {j["id"]: j["status"] for j in jobs["jobs"]} == {"a": "active", "b": "paused"}
    status = env.client.get("/api/scheduler/status").get_json()
    assert status["scheduler_paused"] is True and status["next_job"] is None
    start = env.client.post("/api/scheduler/start")
    assert start.status_code == 200 and start.get_json()["scheduler_paused"] is False
    assert "paused" not in tomllib.loads(env.jobs_file.read_text())["defaults"]
    after = env.client.get("/api/scheduler/jobs").get_json()
    assert after["scheduler_paused"] is False
    assert {j["id"]: j["status"] for j in after["jobs"]} == {"a": "active", "b": "paused"}  # B stays paused
    assert env.client.get("/api/scheduler/status").get_json()["next_job"] == "a"


def test_nothing_fires_while_the_scheduler_is_stopped_and_nothing_is_missed(env, target):
    env.add(name="Minutely", cron="* * * * *", url=f"{target}/ok")
    env.turn()
    env.client.post("/api/scheduler/stop")
    env.turn()  # the daemon applies [defaults] paused
    for _ in range(3):  # three minutes of fires while stopped
        env.clock.advance(60)
        env.turn()
    assert runs_of(env, "minutely") == []  # not fired, and not recorded as missed either
    env.client.post("/api/scheduler/start")
    env.turn()
    env.clock.advance(60)
    env.turn()
    assert [(r["status"], r["trigger"]) for r in runs_of(env, "minutely")] == [("success", "schedule")]


def runs_of(env: Env, job_id: str) -> list[dict[str, Any]]:
    return env.client.get(f"/api/scheduler/job/{job_id}").get_json()["runs"]


def test_status_has_the_shape_of_status_json(env):
    env.add(name="A", hour=9, url="https://example.com/")
    env.turn()
    data = env.client.get("/api/scheduler/status").get_json()
    assert data["success"] is True and data["running"] is True
    assert isinstance(data["pid"], int)
    assert data["config_ok"] is True and data["config_error"] is None
    assert data["job_count"] == 1
    assert data["next_job"] == "a" and data["next_run"] == "2025-11-08 09:00:00"


def test_status_reports_a_broken_job_file(env):
    env.jobs_file.write_text("[[jobs]\n")
    env.daemon.reload(force=True)
    data = env.client.get("/api/scheduler/status").get_json()
    assert data["config_ok"] is False
    assert data["config_error"].startswith("jobs.toml:1:")


# --- errors --------------------------------------------------------------------------------


BAD_ADDS = [
    ({**SEED_BODY, "url": "https://x/", "hour": 24}, 422, "hour:"),
    ({**SEED_BODY, "url": "https://x/", "minute": 60}, 422, "minute:"),
    ({**SEED_BODY, "url": "https://x/", "hour": "nine"}, 422, "hour:"),
    ({**SEED_BODY, "url": "ftp://x/"}, 422, "url:"),
    ({**SEED_BODY, "url": "https://x/", "end_date": "2025-01-01"}, 422, "end_date:"),
    ({**SEED_BODY, "url": "https://x/", "start_date": "tomorrow"}, 422, "start_date:"),
    ({**SEED_BODY, "url": "https://x/", "max_retries": -1}, 422, "max_retries:"),
    ({**SEED_BODY, "url": "https://x/", "retry_delay": "soon"}, 422, "retry_delay:"),
    ({**SEED_BODY, "url": "https://x/", "timezone": "Mars/Base"}, 422, "timezone:"),
    ({**SEED_BODY, "url": "https://x/", "cron": "0 0 31 2 *"}, 422, "schedule:"),
    ({"name": "c", "cron": "0 0 31 2 *", "url": "https://x/"}, 422, "cron:"),
    ({"name": "c", "minute": 5, "url": "https://x/"}, 422, "minute:"),
    ({"name": "", "hour": 5, "url": "https://x/"}, 422, "name:"),
    ({"hour": 5, "url": "https://x/"}, 422, "name:"),
    ({**SEED_BODY, "url": "https://x/", "colour": "red"}, 422, "colour:"),
    ({**SEED_BODY, "url": "https://x/", "end_date": "2025-11-01", "start_date": "2025-11-20"}, 422, "end_date:"),
]


@pytest.mark.parametrize(("body", "status", "prefix"), BAD_ADDS, ids=[b[2].rstrip(":") + f"-{i}" for i, b in enumerate(BAD_ADDS)])
def test_bad_add_is_refused_naming_the_field_and_changes_nothing(env, body, status, prefix):
    env.add(name="Existing", hour=1, url="https://example.com/")
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/job/add", json=body)
    assert response.status_code == status
    data = response.get_json()
    assert data["success"] is False and data["error"].startswith(prefix), data
    assert env.file_bytes() == before


def test_duplicate_name_is_409(env):
    env.add(**SEED_BODY, url="https://example.com/")
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/job/add", json={**SEED_BODY, "url": "https://example.com/"})
    assert response.status_code == 409
    assert response.get_json() == {"success": False, "error": 'name: "Crawl Pagi Hari" is taken by another job; names are unique'}
    assert env.file_bytes() == before


@pytest.mark.parametrize(
    ("data", "message"),
    [("{", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ('"x"', "must be a JSON object"),
     ('{"name": NaN}', "not valid JSON"), ("\xff", "not valid JSON"), ("\n", "not valid JSON")],
    ids=["truncated", "array", "string", "nan", "not-utf8", "blank"],
)
def test_malformed_json_is_400(env, data, message):
    before = env.file_bytes()
    raw = data.encode("latin-1")
    response = env.client.post("/api/scheduler/job/add", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert env.file_bytes() == before


def test_body_over_64_kib_is_413(env):
    before = env.file_bytes()
    body = json.dumps({**SEED_BODY, "url": "https://example.com/", "name": "x" * (MAX_BODY + 10)})
    response = env.client.post("/api/scheduler/job/add", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["success"] is False
    assert env.file_bytes() == before


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_post_body_that_is_not_json_is_415(env, content_type):
    before = env.file_bytes()
    body = json.dumps({**SEED_BODY, "url": "https://example.com/"})
    response = env.client.post("/api/scheduler/job/add", data=body, content_type=content_type)
    assert response.status_code == 415
    assert response.get_json()["success"] is False
    assert env.file_bytes() == before


def test_post_body_with_an_empty_content_type_is_415(env):
    env.add(name="A", hour=9, url="https://example.com/")
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/stop", data=b'{"x": 1}', headers={"Content-Type": ""})
    # an empty Content-Type is no type at all (a real client without one: tests/test_web_e2e.py)
    assert response.status_code == 415
    assert env.file_bytes() == before


def test_a_form_post_with_no_body_is_still_415(env):
    """A cross-site form always sends a type: even an empty one is refused."""
    env.add(name="A", hour=9, url="https://example.com/")
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/stop", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert env.file_bytes() == before


def test_delete_needs_no_content_type(env):
    env.add(name="A", hour=9, url="https://example.com/")
    assert env.client.delete("/api/scheduler/job/a", data=b"whatever", content_type="text/plain").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/scheduler/job/nope"), ("DELETE", "/api/scheduler/job/nope"),
     ("POST", "/api/scheduler/job/nope/pause"), ("POST", "/api/scheduler/job/nope/resume")],
)
def test_unknown_job_is_404(env, method, path):
    response = env.client.open(path, method=method)
    assert response.status_code == 404
    assert response.get_json() == {"success": False, "error": 'no job with id or name "nope"'}


def test_unknown_route_is_a_json_404(env):
    response = env.client.get("/api/nothing")
    assert response.status_code == 404
    assert response.get_json()["success"] is False


@pytest.mark.parametrize(
    ("body", "prefix"),
    [({"max_retries": -1}, "max_retries:"), ({"retry_delay": "x"}, "retry_delay:"),
     ({"retry_backoff": 0.5}, "defaults.retry_backoff:"), ({"colour": 1}, "colour:")],
)
def test_bad_retry_config_is_422_and_changes_nothing(env, body, prefix):
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/retry-config", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"].startswith(prefix)
    assert env.file_bytes() == before


@pytest.mark.parametrize(
    ("body", "prefix"),
    [({"mode": "weekly"}, "mode:"), ({"mode": "daily"}, "hour:"), ({"mode": "interval", "seconds": 0}, "seconds:"),
     ({"mode": "custom", "cron": "61 * * * *"}, "cron:"), ({"hour": 9}, "hour:")],
)
def test_bad_legacy_start_is_422_and_changes_nothing(env, body, prefix):
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nurl = "https://example.com/"\n\n[[jobs]]\nid = "a"\nat = "09:00"\npaused = true\n', defaults=None)
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/start", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"].startswith(prefix)
    assert env.file_bytes() == before


def test_internal_error_is_500_without_a_traceback(env, monkeypatch):
    def boom() -> None:
        raise RuntimeError("private detail /etc/secret")

    monkeypatch.setattr(env.daemon.store, "load", boom)
    response = env.client.get("/api/scheduler/jobs")
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert response.get_json()["success"] is False
    assert "Traceback" not in text and "private detail" not in text


# --- commands and secrets -------------------------------------------------------------------


def test_command_is_refused_unless_the_job_file_allows_it(env):
    before = env.file_bytes()
    response = env.client.post("/api/scheduler/job/add", json={"name": "C", "hour": 9, "command": "rm -rf /"})
    assert response.status_code == 403
    assert "allow_http_commands" in response.get_json()["error"]
    assert env.file_bytes() == before
    on_failure = env.client.post("/api/scheduler/job/add", json={"name": "C", "hour": 9, "url": "https://x/", "on_failure": "true"})
    assert on_failure.status_code == 403


def test_command_is_accepted_when_allow_http_commands_is_true(env):
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nallow_http_commands = true\n', defaults=None)
    env.add(name="C", hour=9, command="echo hi")
    assert env.client.get("/api/scheduler/job/c").get_json()["job"]["command"] == "echo hi"


ENV_THROUGH_API = [
    ("/api/scheduler/job/add", {"name": "Leak", "hour": 9, "url": "https://attacker.example/?home=${HOME}&path=${PATH}"}, "url"),
    ("/api/scheduler/job/add", {"name": "Leak", "hour": 9, "url": ["https://example.com/", "https://attacker.example/${HOME}"]}, "url"),
    ("/api/scheduler/job/add", {"name": "Leak", "hour": 9, "url": "https://${HOME}.attacker.example/"}, "url"),
    ("/api/scheduler/job/add", {"name": "Leak", "hour": 9, "url": "https://attacker.example/",
                                "headers": {"X-Home": "${HOME}"}}, "headers"),
    ("/api/scheduler/job/add", {"name": "Leak", "hour": 9, "url": "https://attacker.example/",
                                "headers": {"Authorization": "Bearer ${NEWS_TOKEN} ${HOME}"}}, "headers"),
    ("/api/scheduler/start", {"mode": "daily", "hour": 9, "url": "https://attacker.example/?p=${PATH}"}, "url"),
]


@pytest.mark.parametrize(("path", "body", "field"), ENV_THROUGH_API, ids=[f"{p.rsplit('/', 1)[1]}-{f}-{i}" for i, (p, _b, f) in enumerate(ENV_THROUGH_API)])
def test_an_environment_variable_through_the_api_is_refused_unless_allowed(env, path, body, field):
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nallow_http_env = ["NEWS_TOKEN"]\n', defaults=None)
    env.add(name="Existing", hour=1, url="https://example.com/")
    before = env.file_bytes()
    response = env.client.post(path, json=body)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error.startswith(f"{field}:") and "allow_http_env" in error and "NEWS_TOKEN" not in error.split(":")[1], error
    assert ("${HOME}" in error) or ("${PATH}" in error)
    assert env.file_bytes() == before


def test_allowed_environment_variables_are_accepted_through_the_api(env):
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nallow_http_env = ["NEWS_TOKEN", "REGION"]\n', defaults=None)
    env.add(name="Ok", hour=9, url="https://${REGION}.example.com/news", headers={"Authorization": "Bearer ${NEWS_TOKEN}"})
    assert env.client.post("/api/scheduler/start", json={"mode": "hourly", "url": "https://example.com/?r=${REGION}"}).status_code == 200
    text = env.jobs_file.read_text()
    assert "https://${REGION}.example.com/news" in text and "Bearer ${NEWS_TOKEN}" in text and "?r=${REGION}" in text


def test_text_that_is_not_a_variable_is_not_refused(env):
    env.add(name="Dollar", hour=9, url="https://example.com/?price=$5&x=${1}")


@pytest.mark.parametrize("value", ['"HOME"', '["1ABC"]', '["A B"]', '[1]', '["${HOME}"]'])
def test_a_bad_allow_http_env_names_the_key(env, value):
    from crawlsched.errors import JobFileError

    write_jobs(env.home, f'[defaults]\ntimezone = "UTC"\nallow_http_env = {value}\n', defaults=None)
    with pytest.raises(JobFileError) as info:
        JobStore(env.jobs_file).load()
    message = str(info.value)
    assert "defaults.allow_http_env:" in message and "variable names" in message, message


PRIVATE_TARGETS = [
    ("http://127.0.0.1:9/", "loopback"), ("http://localhost/x", "loopback"), ("http://[::1]:80/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"), ("http://10.1.2.3/", "private"),
    ("http://192.168.0.1/admin", "private"), ("http://[fd00::1]/", "private"), ("http://0.0.0.0:5000/", "public"),
    ("http://100.64.0.1/", "public"),
]


@pytest.mark.parametrize(("url", "kind"), PRIVATE_TARGETS, ids=[u for u, _k in PRIVATE_TARGETS])
def test_with_http_targets_public_the_api_refuses_a_private_target(env, url, kind):
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nhttp_targets = "public"\n', defaults=None)
    before = env.file_bytes()
    for path, body in (("/api/scheduler/job/add", {"name": "ssrf", "hour": 9, "url": ["https://example.com/", url]}),
                       ("/api/scheduler/start", {"mode": "daily", "hour": 9, "url": url})):
        response = env.client.post(path, json=body)
        assert response.status_code == 422, response.get_json()
        error = response.get_json()["error"]
        assert error.startswith("url:") and kind in error and 'http_targets = "public"' in error, error
    assert env.file_bytes() == before


def test_by_default_the_api_may_add_a_loopback_target(env):
    env.add(name="Local", hour=9, url="http://127.0.0.1:9/")


def test_a_bad_http_targets_names_the_key(env):
    from crawlsched.errors import JobFileError

    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nhttp_targets = "private"\n', defaults=None)
    with pytest.raises(JobFileError) as info:
        JobStore(env.jobs_file).load()
    assert "defaults.http_targets:" in str(info.value) and '"any" or "public"' in str(info.value)


def test_secrets_never_appear_in_any_response(env, monkeypatch):
    monkeypatch.setenv("NEWS_TOKEN", "s3cr3t-token-value")
    write_jobs(env.home, '[defaults]\ntimezone = "UTC"\nallow_http_env = ["NEWS_TOKEN"]\n', defaults=None)
    env.add(name="Secret", hour=9, url="https://user:hunter2@example.com/news",
            headers={"Authorization": "Bearer ${NEWS_TOKEN}", "X-Key": "plain-secret-value"})
    env.turn()
    bodies = [env.client.open(path, method=method).get_data(as_text=True) for method, path in [
        ("GET", "/api/scheduler/jobs"), ("GET", "/api/scheduler/job/secret"), ("GET", "/api/scheduler/status"),
        ("GET", "/metrics"), ("GET", "/api/scheduler/retry-config"), ("POST", "/api/scheduler/job/secret/pause"),
        ("POST", "/api/scheduler/start"),
    ]]  # fmt: skip
    bad = env.client.post("/api/scheduler/job/add", json={"name": "Bad", "hour": 9, "url": "https://user:hunter2@example.com/a b"})
    assert bad.status_code == 422
    bodies.append(bad.get_data(as_text=True))
    dup = env.client.post("/api/scheduler/job/add", json={"name": "Secret", "hour": 9, "url": "https://user:hunter2@example.com/"})
    bodies.append(dup.get_data(as_text=True))
    for body in bodies:
        for secret in ("hunter2", "s3cr3t", "NEWS_TOKEN", "plain-secret-value"):
            assert secret not in body
    assert "https://user:***@example.com/news" in bodies[0]


# --- the request guard ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost:5000", "127.0.0.2:5000", "[::1]:5000", "LOCALHOST:5000"])
def test_loopback_host_headers_are_served(env, host):
    assert env.client.get("/api/scheduler/jobs", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example:5000", "evil.example", "127.0.0.1:5001", "127.0.0.1", "10.0.0.1:5000", "", "[::1"])
def test_other_host_headers_are_refused_without_a_token(env, host):
    before = env.file_bytes()
    for method, path in [("GET", "/api/scheduler/jobs"), ("POST", "/api/scheduler/stop"), ("GET", "/scheduler")]:
        response = env.client.open(path, method=method, headers={"Host": host})
        assert response.status_code == 403, (method, path)
        assert response.get_json()["success"] is False
    assert env.file_bytes() == before


CROSS_SITE = [
    {"Origin": "http://127.0.0.1:8001"},  # another port of the same host: same-site, another origin
    {"Origin": "https://evil.example"},
    {"Origin": "null"},  # a sandboxed frame or a file: page
    {"Origin": "http://127.0.0.1"},  # port 80, not 5000
    {"Origin": "http://127.0.0.1:5000/path"},  # not an origin at all
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
]
WRITES = [("POST", "/api/scheduler/stop"), ("POST", "/api/scheduler/run-now"), ("POST", "/api/scheduler/start"),
          ("DELETE", "/api/scheduler/job/a"), ("POST", "/api/scheduler/job/a/pause"), ("PUT", "/api/scheduler/job/a"),
          ("PATCH", "/api/scheduler/job/a")]


@pytest.mark.parametrize("headers", CROSS_SITE, ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()))
def test_a_write_from_another_site_is_refused_with_or_without_a_body(env, headers):
    env.add(name="A", hour=9, url="https://example.com/")
    before = env.file_bytes()
    for method, path in WRITES:
        for kwargs in ({}, {"json": {}}, {"data": b"", "content_type": "text/plain"}):
            response = env.client.open(path, method=method, headers=headers, **kwargs)
            assert response.status_code == 403, (method, path, kwargs, response.get_json())
            body = response.get_json()
            assert body["success"] is False and "another site" in body["error"], body
    assert env.file_bytes() == before
    assert env.daemon.state.runs("a", 10) == []


def test_a_write_from_another_site_is_refused_with_a_token_too(token_env):
    before = token_env.file_bytes()
    response = token_env.client.post("/api/scheduler/stop", headers={
        "Origin": "http://attacker.example", "Authorization": "Bearer s3cret-token"})
    assert response.status_code == 403 and response.get_json()["success"] is False
    assert token_env.file_bytes() == before


@pytest.mark.parametrize("headers", [
    {"Origin": "http://127.0.0.1:5000"},  # the page's own fetch
    {"Origin": "HTTP://127.0.0.1:5000"},
    {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "none"},  # typed by the user
    {"Origin": "http://127.0.0.1:5000", "Sec-Fetch-Site": "same-origin"},
    {},  # curl: neither header
], ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()) or "none")
def test_writes_from_the_page_itself_and_from_curl_are_served(env, headers):
    env.add(name="A", hour=9, url="https://example.com/")
    assert env.client.post("/api/scheduler/stop", headers=headers).status_code == 200
    assert env.client.post("/api/scheduler/start", headers=headers, json={}).status_code == 200


def test_a_write_from_the_origin_of_a_proxy_in_front_is_served(token_env):
    """Behind a TLS proxy the Origin is https://name (port 443) and the Host header is name, port left out."""
    response = token_env.client.post("/api/scheduler/stop", headers={
        "Host": "sched.example.com", "Origin": "https://sched.example.com", "Authorization": "Bearer s3cret-token"})
    assert response.status_code == 200, response.get_json()


def test_reads_from_another_site_are_not_refused_by_the_origin_check(env):
    assert env.client.get("/api/scheduler/jobs", headers={"Origin": "https://evil.example"}).status_code == 200


@pytest.fixture
def token_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv("TZ", "UTC")
    write_jobs(tmp_path, '[defaults]\ntimezone = "UTC"\n', defaults=None)
    e = Env(tmp_path, token="s3cret-token").start()
    yield e
    e.daemon.shutdown()


@pytest.mark.parametrize("path", ["/api/scheduler/jobs", "/api/scheduler/status", "/metrics", "/api/openapi.json", "/api/nothing"])
def test_with_a_token_every_api_route_needs_it(token_env, path):
    client = token_env.client
    for auth in (None, "Bearer wrong", "Basic s3cret-token", "Bearer", "s3cret-token"):
        headers = {"Authorization": auth} if auth else {}
        response = client.get(path, headers=headers)
        assert response.status_code == 401, auth
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.get_json()["success"] is False
    assert client.get(path, headers={"Authorization": "Bearer s3cret-token"}).status_code in (200, 404)


def test_with_a_token_writes_need_it_and_change_nothing_without(token_env):
    before = token_env.file_bytes()
    response = token_env.client.post("/api/scheduler/job/add", json={**SEED_BODY, "url": "https://x/"})
    assert response.status_code == 401
    assert token_env.file_bytes() == before
    ok = token_env.client.post("/api/scheduler/job/add", json={**SEED_BODY, "url": "https://x/"},
                               headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200


def test_wrong_tokens_are_answered_429_at_once_after_ten_a_minute_from_one_address(token_env, caplog):
    client, throttle = token_env.client, token_env.app.extensions["crawlsched.token_failures"]
    now = [1000.0]
    throttle.clock = lambda: now[0]
    caplog.set_level(logging.INFO)
    codes = [client.get("/api/scheduler/jobs", headers={"Authorization": f"Bearer guess-{i}"}).status_code
             for i in range(30)]
    assert codes == [401] * 10 + [429] * 20
    # Locked out, even with the right token: a lock that the right guess opened would leak it.
    locked = client.get("/api/scheduler/jobs", headers={"Authorization": "Bearer s3cret-token"})
    assert locked.status_code == 429 and locked.get_json()["success"] is False
    assert 1 <= int(locked.headers["Retry-After"]) <= 60
    other = client.get("/api/scheduler/jobs", headers={"Authorization": "Bearer s3cret-token"},
                       environ_base={"REMOTE_ADDR": "127.0.0.9"})
    assert other.status_code == 200  # another address is not held up
    assert client.get("/healthz").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # the first failure and the lock-out, not one line per guess
    assert all("127.0.0.1" in w for w in warnings)
    assert not [w for w in warnings if "guess-" in w or "s3cret-token" in w]
    now[0] += 61
    assert client.get("/api/scheduler/jobs", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_a_request_without_a_token_is_not_counted_as_a_guess(token_env):
    for _ in range(20):
        assert token_env.client.get("/api/scheduler/jobs").status_code == 401  # the page before it asks
    assert token_env.client.get("/api/scheduler/jobs", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_failed_token_addresses_are_bounded_in_memory(token_env):
    throttle = token_env.app.extensions["crawlsched.token_failures"]
    for i in range(throttle.max_clients + 500):
        throttle.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "GET", "/api/scheduler/jobs")
    assert len(throttle.clients) <= throttle.max_clients


@pytest.mark.parametrize("path", ["/healthz", "/scheduler", "/static/scheduler.js", "/static/scheduler.css"])
def test_with_a_token_the_page_and_healthz_load_without_it(token_env, path):
    assert token_env.client.get(path).status_code == 200


def test_with_a_token_any_host_is_served(token_env):
    response = token_env.client.get("/api/scheduler/jobs", headers={"Host": "scheduler.internal:5000", "Authorization": "Bearer s3cret-token"})
    assert response.status_code == 200


def serve(env: Env, bind: str, token: str | None = None) -> Any:
    """``start_server`` over the env's daemon, as ``crawlsched daemon --http`` calls it."""
    d = env.daemon
    return start_server(d.store, d.state, DaemonView(d), bind, home=d.home, log=d.log, token=token)


def test_start_server_refuses_a_non_loopback_address_without_a_token(env, monkeypatch):
    monkeypatch.delenv("CRAWLSCHED_TOKEN", raising=False)
    with pytest.raises(WebConfigError) as info:
        serve(env, "0.0.0.0:0")
    assert info.value.exit_code == 2
    assert "token" in str(info.value) and "0.0.0.0:0" in str(info.value)


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.1:99999", "nonsense", ":5000", ""])
def test_start_server_refuses_a_malformed_address(env, bind):
    with pytest.raises(WebConfigError) as info:
        serve(env, bind)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("token", ["a", "t0ken-value", "0123456789abcdef0123456789abcde",  # 31 hex
                                   "Zm9vYmFyYmF6cXV4cXV1eA"[:21]])
def test_start_server_refuses_a_short_token_on_a_non_loopback_address(env, token):
    with pytest.raises(WebConfigError) as info:
        serve(env, "0.0.0.0:0", token=token)
    message = str(info.value)
    assert info.value.exit_code == 2 and "128 bits" in message and "32 hex" in message and "22" in message
    assert len(token) < 5 or token not in message


@pytest.mark.parametrize("token", ["a", "short"])
def test_a_short_token_is_fine_on_loopback(env, token):
    server = serve(env, "127.0.0.1:0", token=token)
    server.close()


STRONG_TOKEN = "Zm9vYmFyYmF6cXV4cXV1eA"  # 22 base64 characters: 132 bits


def test_start_server_serves_a_non_loopback_address_with_a_token(env):
    import requests

    server = serve(env, "0.0.0.0:0", token=STRONG_TOKEN)
    try:
        assert server.port > 0
        base = f"http://127.0.0.1:{server.port}"
        assert requests.get(f"{base}/api/scheduler/jobs", timeout=5).status_code == 401
        ok = requests.get(f"{base}/api/scheduler/jobs", headers={"Authorization": f"Bearer {STRONG_TOKEN}"}, timeout=5)
        assert ok.status_code == 200 and ok.json()["success"] is True
        assert requests.get(f"{base}/healthz", timeout=5).json() == {"ok": True}
    finally:
        server.close()


def test_start_server_on_loopback_uses_the_token_from_the_environment(env, monkeypatch):
    import requests

    monkeypatch.setenv("CRAWLSCHED_TOKEN", "from-env-token")
    server = serve(env, "127.0.0.1:0")
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert requests.get(f"{base}/api/scheduler/status", timeout=5).status_code == 401
        ok = requests.get(f"{base}/api/scheduler/status", headers={"Authorization": "Bearer from-env-token"}, timeout=5)
        assert ok.status_code == 200
    finally:
        server.close()


# --- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/scheduler"), ("GET", "/static/scheduler.js"), ("GET", "/static/scheduler.css"), ("GET", "/api/scheduler/jobs"),
     ("GET", "/api/scheduler/job/nope"), ("POST", "/api/scheduler/job/add"), ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/")],
)
def test_every_response_has_the_security_headers_and_no_cors(env, method, path):
    response = env.client.open(path, method=method, headers={"Origin": "https://evil.example"})
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, name
    assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-")]


def test_a_preflight_gets_no_cors_headers(env):
    response = env.client.options("/api/scheduler/job/add", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-")]


# --- the page ------------------------------------------------------------------------------


def test_root_redirects_to_the_page(env):
    response = env.client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/scheduler")


def test_the_page_and_its_assets_are_served(env):
    page = env.client.get("/scheduler")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b'<script src="/static/scheduler.js"' in page.data
    assert env.client.get("/static/scheduler.js").mimetype in ("text/javascript", "application/javascript")
    assert env.client.get("/static/scheduler.css").mimetype == "text/css"


@pytest.mark.parametrize("path", ["/static/openapi.json", "/static/../daemon.py", "/static/%2e%2e/daemon.py", "/static/../__init__.py", "/static/nope.css"])
def test_only_the_page_assets_are_served(env, path):
    assert env.client.get(path).status_code == 404


# --- operations ----------------------------------------------------------------------------


def test_healthz_is_ok_while_the_loop_is_alive(env):
    response = env.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True}


def test_healthz_is_503_when_the_heartbeat_is_stale(env):
    env.clock.advance(120)
    response = env.client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["ok"] is False
    assert "heartbeat" in response.get_json()["error"]


def test_healthz_is_503_while_the_state_database_does_not_take_writes(env):
    env.daemon.state.db.hold(lambda c: None)  # a write the storage refused, held until it takes writes again
    response = env.client.get("/healthz")
    assert response.status_code == 503
    assert "does not take writes" in response.get_json()["error"]
    assert env.daemon.state.flush_held()
    assert env.client.get("/healthz").status_code == 200


def test_healthz_is_503_when_the_job_file_is_broken(env):
    env.jobs_file.write_text("[[jobs]\n")
    env.daemon.reload(force=True)
    response = env.client.get("/healthz")
    assert response.status_code == 503
    assert "jobs.toml:1:" in response.get_json()["error"]


def test_healthz_is_503_before_the_loop_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    e = Env(tmp_path)
    response = e.client.get("/healthz")
    assert response.status_code == 503
    assert "not started" in response.get_json()["error"]


# /metrics: tests/test_metrics.py


def test_openapi_describes_every_route(env):
    doc = env.client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for rule in env.app.url_map.iter_rules():
        path = rule.rule.replace("<path:", "{").replace("<int:", "{").replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert served == documented


def test_status_json_is_exactly_as_before(env):
    env.add(name="B", hour=10, url="https://example.com/")
    env.add(name="A", hour=9, url="https://example.com/")
    env.turn()
    data = env.client.get("/api/scheduler/status").get_json()
    row = env.daemon.state.daemon()
    assert list(data) == ["success", "running", "pid", "host", "version", "started_at", "started_at_iso",
                          "heartbeat", "heartbeat_iso", "http", "config_ok", "config_error", "scheduler_paused", "job_count",
                          "next_job", "next_run", "next_run_iso", "jobs_file", "home", "state"]
    assert data == {
        "success": True, "running": True, "pid": os.getpid(), "host": row.host, "version": row.version,
        "started_at": "2025-11-08 08:00:00", "started_at_iso": "2025-11-08T08:00:00+00:00",
        "heartbeat": data["heartbeat"], "heartbeat_iso": data["heartbeat_iso"],
        "http": "http://127.0.0.1:5000", "config_ok": True, "config_error": None, "scheduler_paused": False, "job_count": 2,
        "next_job": "a", "next_run": "2025-11-08 09:00:00", "next_run_iso": "2025-11-08T09:00:00+00:00",
        "jobs_file": str(env.jobs_file), "home": str(env.home), "state": str(env.daemon.state.path),
    }
    env.jobs_file.write_text("[[jobs]\n")
    env.daemon.reload(force=True)
    data = env.client.get("/api/scheduler/status").get_json()
    assert (data["config_ok"], data["job_count"], data["next_job"]) == (False, 2, "a")
    assert data["config_error"].startswith("jobs.toml:1:")


# --- run-now on a busy job -------------------------------------------------------------------


def test_run_now_of_a_job_waiting_for_its_retry_is_409_and_queues_nothing(env):
    env.add(name="Flaky", hour=23, url="http://127.0.0.1:9/down", max_retries=2, retry_delay=300)
    env.client.post("/api/scheduler/run-now", json={"job_id": "flaky"})
    env.turn()  # the first attempt fails: its retry waits 300 s
    assert env.client.get("/api/scheduler/job/flaky").get_json()["job"]["status"] == "retrying"
    queued = env.daemon.state.count_requests()
    response = env.client.post("/api/scheduler/run-now", json={"job_id": "flaky"})
    assert response.status_code == 409
    assert response.get_json() == {"success": False, "error": (
        "job flaky is waiting for its retry (attempt 2/3 at 2025-11-08 08:05:00); "
        "nothing was queued (runs of one job never overlap)")}
    assert env.daemon.state.count_requests() == queued


# --- a broken job file -------------------------------------------------------------------------


BROKEN = '[defaults]\ntimezone = "UTC\n'  # a missing quote on line 2


def test_a_broken_job_file_still_shows_the_jobs_the_daemon_runs(env):
    env.add(name="Kept", hour=9, url="https://example.com/")
    env.turn()  # applied by the daemon
    env.jobs_file.write_text(BROKEN)
    jobs = env.client.get("/api/scheduler/jobs")
    assert jobs.status_code == 200
    data = jobs.get_json()
    assert [j["id"] for j in data["jobs"]] == ["kept"]
    assert data["config_error"].startswith("jobs.toml:2: not valid TOML")
    one = env.client.get("/api/scheduler/job/kept")
    assert one.status_code == 200
    assert one.get_json()["job"]["id"] == "kept" and one.get_json()["config_error"] == data["config_error"]
    assert env.client.get("/api/scheduler/status").get_json()["config_error"].startswith("jobs.toml:2:")
    config = env.client.get("/api/scheduler/retry-config")
    assert config.status_code == 200 and config.get_json()["config_error"] == data["config_error"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/scheduler/job/add", {"name": "New", "hour": 9, "url": "https://example.com/"}),
    ("DELETE", "/api/scheduler/job/kept", None),
    ("POST", "/api/scheduler/job/kept/pause", None),
    ("POST", "/api/scheduler/retry-config", {"max_retries": 1}),
    ("POST", "/api/scheduler/stop", None),
    ("POST", "/api/scheduler/start", {"mode": "daily", "hour": 9}),
], ids=["add", "delete", "pause", "retry-config", "stop", "start"])
def test_writes_to_a_broken_job_file_are_422_naming_its_line_and_change_nothing(env, method, path, body):
    env.add(name="Kept", hour=9, url="https://example.com/")
    env.turn()
    env.jobs_file.write_text(BROKEN)
    before = env.file_bytes()
    response = env.client.open(path, method=method, json=body)
    assert response.status_code == 422
    assert response.get_json()["error"].startswith("jobs.toml:2: not valid TOML")
    assert env.file_bytes() == before


def test_the_last_good_job_file_is_kept_in_the_home_when_the_daemon_applies_it(env):
    env.add(name="Kept", hour=9, url="https://example.com/")
    env.turn()
    good = env.file_bytes()
    env.jobs_file.write_text(BROKEN)
    env.daemon.reload(force=True)
    assert env.daemon.store.last_good_path(env.home).read_bytes() == good
    assert env.daemon.store.last_good_path(env.home).parent == env.home / ".cache"


# --- the web knows the scheduler only through control.SchedulerView -------------------------


def test_the_web_package_never_imports_the_daemon():
    import ast

    import crawlsched.web

    for path in Path(crawlsched.web.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "crawlsched.daemon" or n.startswith("crawlsched.daemon.") for n in names), path.name


def test_the_daemons_view_is_a_scheduler_view(env):
    from crawlsched.control import SchedulerView

    view = DaemonView(env.daemon)
    assert isinstance(view, SchedulerView)
    assert view.started and not view.stopping and view.config_error is None
    assert view.jobs is env.daemon.jobs and view.next_fires() == env.daemon.planned
    assert view.next_fires() is not env.daemon.planned  # a copy: the web cannot change the loop's plan


class FakeScheduler:
    """A scheduler view that is not a daemon: what the web needs, and nothing more."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.monotonic = clock.time, clock.monotonic
        self.started, self.stopping, self.config_error = False, False, None
        self.jobs: dict[str, Any] = {}
        self.defaults = None
        self.pool_size = 3
        self.busy: set[str] = set()
        self.reloads = self.wakes = 0

    def next_fires(self) -> dict[str, float]:
        return {}

    def is_busy(self, job_id: str) -> bool:
        return job_id in self.busy

    def request_reload(self) -> None:
        self.reloads += 1

    def request_wake(self) -> None:
        self.wakes += 1


def test_the_api_serves_over_any_scheduler_view(tmp_path, monkeypatch):
    from crawlsched.control import SchedulerView

    monkeypatch.setenv("TZ", "UTC")
    write_jobs(tmp_path, '[defaults]\ntimezone = "UTC"\ncommand = "true"\n', defaults=None)
    scheduler = FakeScheduler(FakeClock(START))
    assert isinstance(scheduler, SchedulerView)
    state = State(tmp_path / "crawlsched.db").open()
    try:
        app = create_app(JobStore(tmp_path / "jobs.toml", cache_dir=tmp_path / ".cache"), state, scheduler,
                         home=tmp_path, log=logging.getLogger("crawlsched.test"))
        app.config["CRAWLSCHED_HANDOVER_WAIT"] = 0
        app.test_client_class = Client
        client = app.test_client()
        assert client.get("/healthz").get_json() == {"ok": False, "error": "the scheduler loop has not started"}
        added = client.post("/api/scheduler/job/add", json={"name": "probe", "every": "1m"})
        assert added.status_code == 200 and scheduler.reloads == 1, added.get_json()
        scheduler.busy.add("probe")
        busy = client.post("/api/scheduler/run-now", json={"job_id": "probe"})
        assert busy.status_code == 409 and scheduler.wakes == 0
        scheduler.busy.clear()
        queued = client.post("/api/scheduler/run-now", json={"job_id": "probe"})
        assert queued.status_code == 200 and queued.get_json()["taken"] is False and scheduler.wakes == 1
        assert "crawlsched_pool_size 3.0" in client.get("/metrics").get_data(as_text=True)
    finally:
        state.close()
