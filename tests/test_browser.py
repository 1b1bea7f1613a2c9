"""The web page in real headless Chromium (Playwright) against the real daemon with ``--http``.

Needs the ``playwright`` package and /usr/bin/chromium (no ``playwright install``:
the system browser is used); skipped cleanly when either is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers.process import HttpDaemon

sync_api = pytest.importorskip("playwright.sync_api")
requests = pytest.importorskip("requests")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CRAWLSCHED_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
XSS_NAME = '<img src=x onerror="window.__xss = 1">'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as exc:  # a browser that does not start is an environment problem, not a failure
            pytest.skip(f"Chromium does not start: {exc}")
        yield b
        b.close()


class Server(HttpDaemon):
    """The real daemon in a subprocess, serving the page on a free loopback port."""

    def __init__(self, home: Path) -> None:
        super().__init__(home, stdout=subprocess.DEVNULL)
        self.wait_ready()

    def add(self, **body: Any) -> str:
        response = requests.post(f"{self.base}/api/scheduler/job/add", json=body, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()["job_id"]

    def jobs(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.base}/api/scheduler/jobs", timeout=5).json()["jobs"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\nurl = "http://127.0.0.1:9/"\n')
    s = Server(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.messages = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.messages.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: pg.messages.append(f"pageerror: {e}"))
    yield pg
    context.close()


def card(page: Any, name: str) -> Any:
    return page.locator('[data-testid="job-card"]').filter(has=page.locator("h3", has_text=name))


def test_cards_show_the_seeds_fields(page, server):
    start, end = date.today() + timedelta(days=1), date.today() + timedelta(days=40)
    server.add(name="Crawl Pagi Hari", start_date=start.isoformat(), end_date=end.isoformat(), hour=9, minute=5,
               max_retries=3, retry_delay=300)
    page.goto(f"{server.base}/scheduler")
    c = card(page, "Crawl Pagi Hari")
    c.wait_for()
    assert c.locator('[data-testid="job-status"]').inner_text().lower() == "active"
    assert "09:05" in c.locator('[data-field="schedule"]').inner_text()
    assert c.locator('[data-field="period"]').inner_text() == f"{start} → {end}"  # as `list` writes it, with or without an end
    assert c.locator('[data-field="next_run"]').inner_text() == f"{start} 09:05:00"
    assert c.locator('[data-field="last_run"]').inner_text() == "never"
    assert c.locator('[data-field="retry"]').inner_text() == "Max 3x, Delay 300s"
    assert not [m for m in page.messages if "Content Security Policy" in m or m.startswith(("error", "pageerror"))]


def test_the_form_adds_a_job(page, server):
    page.goto(f"{server.base}/scheduler")
    page.fill("#f-name", "Sore Hari")
    page.fill("#f-hour", "17")
    page.fill("#f-minute", "30")
    page.fill("#f-url", "https://example.com/sore")
    page.click('[data-testid="add-button"]')
    card(page, "Sore Hari").wait_for()
    assert "berhasil ditambahkan" in page.locator('[data-testid="notice"]').inner_text()
    [job] = server.jobs()
    assert (job["name"], job["schedule"], job["url"]) == ("Sore Hari", "17:30", ["https://example.com/sore"])


def test_the_form_shows_the_apis_error(page, server):
    server.add(name="Taken", hour=1)
    page.goto(f"{server.base}/scheduler")
    page.fill("#f-name", "Taken")
    page.fill("#f-hour", "5")
    page.click('[data-testid="add-button"]')
    error = page.locator('[data-testid="form-error"]')
    error.wait_for()
    assert "is taken by another job" in error.inner_text()


def test_the_trash_icon_deletes_after_confirming(page, server):
    server.add(name="Keep", hour=1)
    server.add(name="Remove Me", hour=2)
    page.goto(f"{server.base}/scheduler")
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    card(page, "Remove Me").locator('[data-testid="delete-button"]').click()
    card(page, "Remove Me").wait_for(state="detached")
    assert dialogs and "Remove Me" in dialogs[0]
    assert [j["name"] for j in server.jobs()] == ["Keep"]


def test_dismissing_the_confirmation_keeps_the_job(page, server):
    server.add(name="Stay", hour=1)
    page.goto(f"{server.base}/scheduler")
    page.on("dialog", lambda d: d.dismiss())
    card(page, "Stay").locator('[data-testid="delete-button"]').click()
    page.wait_for_timeout(500)
    assert [j["name"] for j in server.jobs()] == ["Stay"]


def test_pause_button_pauses_the_job(page, server):
    server.add(name="Pausable", hour=1)
    page.goto(f"{server.base}/scheduler")
    card(page, "Pausable").locator('[data-testid="pause-button"]').click()
    page.wait_for_function("() => document.querySelector('[data-testid=job-card]').dataset.status === 'paused'")
    assert server.jobs()[0]["status"] == "paused"


def test_a_job_named_like_html_shows_as_text_and_runs_nothing(page, server):
    server.add(name=XSS_NAME, hour=1)
    page.goto(f"{server.base}/scheduler")
    page.locator('[data-testid="job-card"]').first.wait_for()
    page.wait_for_timeout(300)
    assert page.locator('[data-testid="job-card"] h3').inner_text() == XSS_NAME
    assert page.locator('[data-testid="job-list"] img').count() == 0
    assert page.evaluate("() => typeof window.__xss") == "undefined"


def test_the_url_hint_tells_whether_a_default_crawl_exists(page, server, tmp_path):
    page.goto(f"{server.base}/scheduler")
    hint = page.locator('[data-testid="url-help"]')
    page.wait_for_function("() => document.getElementById('url-help').textContent.startsWith('Empty')")
    assert "default crawl" in hint.inner_text()  # the fixture's [defaults] names one
    (tmp_path / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\n')  # now none
    page.wait_for_function("() => document.getElementById('url-help').textContent.startsWith('Required')", timeout=10000)
    assert "crawlsched defaults --url" in hint.inner_text()
    page.fill("#f-name", "No Crawl")
    page.fill("#f-hour", "9")
    page.click('[data-testid="add-button"]')
    assert "URL is required" in page.locator('[data-testid="form-error"]').inner_text()
    assert server.jobs() == []


def test_the_page_shows_a_broken_job_file_with_the_jobs_the_daemon_runs(page, server, tmp_path):
    server.add(name="Still Here", hour=1)
    page.goto(f"{server.base}/scheduler")
    card(page, "Still Here").wait_for()
    (tmp_path / "jobs.toml").write_text('[defaults]\ntimezone = "UTC\n')  # a missing quote
    banner = page.locator('[data-testid="config-banner"]')
    banner.wait_for(timeout=10000)
    assert "jobs.toml:2" in banner.inner_text() and "last good file" in banner.inner_text()
    assert card(page, "Still Here").count() == 1  # the jobs the daemon still runs


def test_the_page_shows_when_the_scheduler_is_stopped(page, server):
    server.add(name="Any", hour=1)
    page.goto(f"{server.base}/scheduler")
    card(page, "Any").wait_for()
    banner = page.locator('[data-testid="scheduler-paused-banner"]')
    assert banner.is_hidden()
    assert requests.post(f"{server.base}/api/scheduler/stop", timeout=5).status_code == 200
    banner.wait_for(timeout=10000)
    assert "scheduler is stopped" in banner.inner_text()
    assert requests.post(f"{server.base}/api/scheduler/start", timeout=5).status_code == 200
    banner.wait_for(state="hidden", timeout=10000)


def test_a_retrying_card_shows_its_next_retry_and_attempt(page, server):
    job_id = server.add(name="Flaky", hour=9, minute=5, max_retries=3, retry_delay=300)  # its URL refuses connections
    page.goto(f"{server.base}/scheduler")
    c = card(page, "Flaky")
    c.wait_for()
    assert c.locator('[data-field="next_retry"]').is_hidden()  # nothing pending: no row
    assert requests.post(f"{server.base}/api/scheduler/run-now", json={"job_id": job_id}, timeout=5).status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and next(j for j in server.jobs() if j["id"] == job_id)["status"] != "retrying":
        time.sleep(0.1)
    job = next(j for j in server.jobs() if j["id"] == job_id)
    assert job["status"] == "retrying" and job["attempt"] == 2
    retry = c.locator('[data-field="next_retry"]')
    retry.wait_for(state="visible", timeout=10000)
    assert retry.inner_text() == f"attempt 2 of 4, {job['next_retry']}"
