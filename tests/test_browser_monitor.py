"""The monitoring page in real headless Chromium, on the real daemon with real runs against a flaky target.

One daemon (``--http``) runs a job every 2 s against a local target that answers,
request after request, 503, 200, 503, 503, 200 … (max_retries 1): runs that succeed
on their second attempt, runs that fail twice, runs that succeed at once. Its 200
answer is an HTML page with a ``<script>``. Once a few runs are done the job is
paused, and the page is compared with ``crawlsched history --json``.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from test_browser import ARGS, CHROMIUM, Server, browser, server  # noqa: F401 -- the shared fixtures

sync_api = pytest.importorskip("playwright.sync_api")
requests = pytest.importorskip("requests")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PATTERN = (503, 200, 503, 503, 200)
BODY = b"<html><body><script>window.__xss = 1</script><p>news</p></body></html>"
COLOURS = {"success": "--o-success", "failed": "--o-failed"}


class Flaky:
    """A loopback target answering in ``PATTERN``'s order; 200s carry an HTML body with a script."""

    def __init__(self) -> None:
        self.count = 0
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    code = PATTERN[outer.count % len(PATTERN)]
                    outer.count += 1
                body = BODY if code == 200 else b"busy"
                self.send_response(code)
                self.send_header("Content-Type", "text/html" if code == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/news"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Site:
    def __init__(self, home: Path, server: Server, job_id: str) -> None:
        self.home = home
        self.server = server
        self.job_id = job_id

    @property
    def base(self) -> str:
        return self.server.base

    def history(self) -> list[dict[str, Any]]:
        env = {**os.environ, "CRAWLSCHED_JOBS": str(self.home / "jobs.toml"), "CRAWLSCHED_HOME": str(self.home), "TZ": "UTC"}
        out = subprocess.run([sys.executable, "-m", "crawlsched", "history", self.job_id, "--json", "--limit", "1000"],
                             env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def runs_of_history(self) -> list[dict[str, Any]]:
        """``history --json`` grouped into runs (fires), newest first: each run's outcome is its last attempt's."""
        groups: dict[Any, list[dict[str, Any]]] = {}
        for row in self.history()["runs"]:
            key = row["scheduled_for_iso"] if row["attempt"] else ("row", row["id"])
            groups.setdefault(key, []).append(row)
        runs = [{"status": max(g, key=lambda r: r["attempt"])["status"], "rows": sorted(g, key=lambda r: r["attempt"]),
                 "newest": max(r["id"] for r in g)} for g in groups.values()]  # fmt: skip
        return sorted(runs, key=lambda r: r["newest"], reverse=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("monitor")
    flaky = Flaky()
    (home / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\n')
    server = Server(home)
    try:
        job_id = server.add(name="Flaky News", every="2s", url=flaky.url, max_retries=1, retry_delay=0.5)
        deadline = time.monotonic() + 60
        site = Site(home, server, job_id)
        while time.monotonic() < deadline:
            runs = site.runs_of_history()
            if len(runs) >= 6 and {"success", "failed"} <= {r["status"] for r in runs}:
                break
            time.sleep(0.5)
        requests.post(f"{server.base}/api/scheduler/job/{job_id}/pause", timeout=5).raise_for_status()
        deadline = time.monotonic() + 15  # let a running or retrying chain end
        while time.monotonic() < deadline and any(r["status"] in ("running",) for r in site.history()["runs"]):
            time.sleep(0.3)
        while time.monotonic() < deadline and requests.get(f"{server.base}/api/scheduler/jobs", timeout=5).json()["jobs"][0]["status"] in ("running", "retrying"):
            time.sleep(0.3)
        yield site
    finally:
        server.stop()
        flaky.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.messages = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.messages.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: pg.messages.append(f"pageerror: {e}"))
    yield pg
    context.close()


def errors(page: Any) -> list[str]:
    return [m for m in page.messages if m.startswith(("error", "pageerror"))]


def test_the_strip_shows_each_runs_outcome_in_order(page, site):
    expected = [r["status"] for r in site.runs_of_history()][:20][::-1]  # oldest first, as the strip reads
    page.goto(f"{site.base}/scheduler")
    strip = page.locator('[data-testid="run-strip"]')
    page.wait_for_function("n => document.querySelectorAll('[data-testid=run-strip] .cell').length === n", arg=len(expected))
    assert strip.get_attribute("data-statuses").split() == expected
    colours = page.evaluate("""() => {
        const style = getComputedStyle(document.documentElement);
        return [...document.querySelectorAll('[data-testid=run-strip] .cell')].map(c => [c.dataset.status, getComputedStyle(c).backgroundColor]);
    }""")
    by_status = {status: {c for s, c in colours if s == status} for status, _ in colours}
    assert all(len(c) == 1 for c in by_status.values())  # one colour per outcome …
    assert by_status["success"] != by_status["failed"]  # … and different outcomes differ
    tip = page.locator('[data-testid="run-strip"] .cell').last.get_attribute("title")
    newest = site.runs_of_history()[0]
    assert newest["rows"][0]["scheduled_for"] in tip and f"attempts: {len(newest['rows'])} of 2" in tip
    assert page.locator('[data-testid="job-id"]').inner_text() == f"id {site.job_id}"
    assert not errors(page)


def test_the_jobs_page_lists_every_attempt_with_its_message(page, site):
    history = site.runs_of_history()
    page.goto(f"{site.base}/scheduler#job/{site.job_id}")
    runs = page.locator('[data-testid="run"]')
    runs.first.wait_for()
    page.wait_for_function("n => document.querySelectorAll('[data-testid=run]').length === n", arg=min(20, len(history)))
    for i, expected in enumerate(history[:5]):
        run = runs.nth(i)
        assert run.get_attribute("data-status") == expected["status"]
        messages = run.locator('[data-testid="attempt-message"]').all_inner_texts()
        assert messages == [r["message"] for r in expected["rows"]]
    assert "HTTP 503" in " ".join(runs.locator('[data-testid="attempt-message"]').all_inner_texts())
    assert not errors(page)


def test_the_outcome_filter_keeps_only_failed_runs(page, site):
    failed = [r for r in site.runs_of_history() if r["status"] in ("failed", "interrupted")]
    page.goto(f"{site.base}/scheduler#job/{site.job_id}")
    page.locator('[data-testid="run"]').first.wait_for()
    page.select_option('[data-testid="runs-status"]', "failed,interrupted")
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=run]')].every(r => r.dataset.status === 'failed')")
    assert page.locator('[data-testid="run"]').count() == min(20, len(failed))


def test_a_body_opens_as_text_and_its_script_never_runs(page, site):
    page.goto(f"{site.base}/scheduler#job/{site.job_id}")
    page.locator('[data-testid="open-body"]').first.click()
    viewer = page.locator('[data-testid="viewer-text"]')
    page.wait_for_function("() => document.querySelector('[data-testid=viewer-text]').textContent.length > 0")
    assert viewer.inner_text() == BODY.decode()
    assert "text/html" in page.locator('[data-testid="viewer-meta"]').inner_text()
    assert page.locator('[data-testid="viewer"] script').count() == 0
    href = page.locator('[data-testid="viewer-whole"]').get_attribute("href")
    whole = page.context.new_page()
    whole.goto(site.base + href)
    assert whole.evaluate("() => document.contentType") == "text/plain"
    assert whole.evaluate("() => document.body.innerText") == BODY.decode()
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert whole.evaluate("() => typeof window.__xss") == "undefined"


def test_the_settings_form_changes_the_job_file(page, site):
    jobs_file = site.home / "jobs.toml"
    page.goto(f"{site.base}/scheduler#job/{site.job_id}")
    page.wait_for_function("() => document.getElementById('e-name').value === 'Flaky News'")
    page.fill("#e-timeout", "45")
    page.click('[data-testid="edit-save"]')
    page.wait_for_function("() => !document.getElementById('edit-saved').hidden")
    assert "timeout = 45" in jobs_file.read_text()
    assert "updated" in page.locator("#edit-saved").inner_text()


def test_a_bad_value_in_the_settings_form_shows_the_fields_error_and_changes_nothing(page, site):
    jobs_file = site.home / "jobs.toml"
    page.goto(f"{site.base}/scheduler#job/{site.job_id}")
    page.wait_for_function("() => document.getElementById('e-name').value === 'Flaky News'")
    before = jobs_file.read_bytes()
    page.select_option("#e-kind", "at")
    page.fill("#e-schedule", "25:00")
    page.click('[data-testid="edit-save"]')
    error = page.locator("#e-schedule-error")
    error.wait_for()
    assert error.inner_text().startswith("at: ") and "25:00" in error.inner_text()
    assert page.locator("#e-schedule").get_attribute("aria-invalid") == "true"
    assert page.evaluate("() => document.activeElement.id") == "e-schedule"
    assert jobs_file.read_bytes() == before


def test_the_charts_totals_equal_historys(page, site):
    history = site.history()
    runs = site.runs_of_history()
    page.goto(f"{site.base}/scheduler#job/{site.job_id}")
    rates = page.locator('[data-testid="chart-rates"]')
    rates.wait_for()
    assert int(rates.get_attribute("data-runs")) == len(runs)
    finished = [r for r in history["runs"] if r["attempt"] and r["status"] in ("success", "failed", "interrupted")]
    assert int(rates.get_attribute("data-attempts")) == len(finished)
    for status in {r["status"] for r in runs}:
        expected = sum(1 for r in runs if r["status"] == status)
        assert page.locator(f'[data-testid="chart-total-{status}"]').inner_text() == f"{status} {expected}"
    assert f"attempt success {round(history['success_rate'] * 100)}%" in rates.inner_text()
    if history.get("run_success_rate") is not None:
        assert f"run success {round(history['run_success_rate'] * 100)}%" in rates.inner_text()
    assert page.locator('[data-testid="chart"] svg rect').count() >= 1


# --- looks right everywhere ---------------------------------------------------------------------

AXE_PATHS = [os.environ.get("CRAWLSCHED_AXE", ""), "node_modules/axe-core/axe.min.js", "/usr/share/javascript/axe-core/axe.min.js"]


def axe_source() -> str:
    for candidate in AXE_PATHS:
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text()
    pytest.skip("axe-core not found (npm install axe-core, or set CRAWLSCHED_AXE to its axe.min.js)")


def audit(browser: Any, url: str, ready: str, viewport: dict[str, int], scheme: str) -> list[dict[str, Any]]:
    source = axe_source()
    context = browser.new_context(viewport=viewport, color_scheme=scheme, bypass_csp=True)  # axe is injected; the page's own CSP stays as served
    try:
        pg = context.new_page()
        pg.goto(url)
        pg.locator(ready).first.wait_for()
        pg.wait_for_timeout(500)
        pg.evaluate(source)
        result = pg.evaluate("""() => axe.run(document, {runOnly: {type: 'tag', values:
            ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})""")
        return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]} for v in result["violations"]]
    finally:
        context.close()


@pytest.mark.parametrize("where, ready", [("", '[data-testid="run-strip"] .cell'), ("#job/flaky-news", '[data-testid="run"]')],
                         ids=["list", "job-page"])
@pytest.mark.parametrize("viewport, scheme", [({"width": 1280, "height": 900}, "light"), ({"width": 1280, "height": 900}, "dark"),
                                              ({"width": 390, "height": 844}, "light")], ids=["desktop", "desktop-dark", "phone"])
def test_an_accessibility_audit_finds_nothing(browser, site, where, ready, viewport, scheme):  # noqa: F811
    """axe-core's WCAG 2.1 A/AA and best-practice rules (npm's axe-core, injected into Debian's chromium)."""
    violations = audit(browser, f"{site.base}/scheduler{where}", ready, viewport, scheme)
    assert violations == [], json.dumps(violations, indent=1)


def test_on_a_phone_the_job_list_comes_before_the_add_form(browser, site):  # noqa: F811
    context = browser.new_context(viewport={"width": 390, "height": 844})
    pg = context.new_page()
    pg.goto(f"{site.base}/scheduler")
    pg.locator('[data-testid="job-card"]').first.wait_for()
    jobs = pg.locator('[data-testid="job-list"]').bounding_box()
    form = pg.locator('[data-testid="add-form"]').bounding_box()
    context.close()
    assert jobs["y"] < form["y"]


def test_the_page_is_usable_by_keyboard_and_writes_24_hour_times(page, site):
    page.goto(f"{site.base}/scheduler")
    page.locator('[data-testid="open-job"]').first.wait_for()
    for _ in range(60):  # Tab until the card's link has focus, then Enter opens the job's page
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.dataset.testid") == "open-job":
            break
    page.keyboard.press("Enter")
    page.locator('[data-testid="run"]').first.wait_for()
    assert page.evaluate("() => location.hash") == f"#job/{site.job_id}"
    assert page.evaluate("() => document.activeElement.id") == "jv-title"
    live = page.locator('[data-testid="live-status"]').inner_text()
    assert __import__("re").fullmatch(r"Updated \d\d:\d\d:\d\d", live), live
    started = page.locator('[data-testid="run"]').first.locator("td").nth(3).inner_text()
    assert __import__("re").fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", started), started
    page.go_back()
    page.locator('[data-testid="job-card"]').first.wait_for()
    # back on the list, the card can be there a moment before its period is (CI under load): wait for it
    page.wait_for_function("() => (document.querySelector('[data-field=period]') || {}).textContent")
    period = page.locator('[data-field="period"]').inner_text()
    assert period.endswith(" → no end"), period


def test_the_schedulers_switch_stops_and_starts_the_whole_scheduler(page, server):  # noqa: F811
    server.add(name="Own Pause", hour=1)
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{server.base}/scheduler")
    button = page.locator('[data-testid="scheduler-button"]')
    button.wait_for()
    assert button.inner_text() == "Stop scheduler"
    assert page.locator("#scheduler-state").inner_text() == "running"
    button.click()
    page.wait_for_function("() => document.getElementById('scheduler-state').textContent === 'stopped'")
    assert page.locator('[data-testid="scheduler-paused-banner"]').is_visible()
    assert button.inner_text() == "Start scheduler"
    assert requests.get(f"{server.base}/api/scheduler/jobs", timeout=5).json()["scheduler_paused"] is True
    button.click()
    page.wait_for_function("() => document.getElementById('scheduler-state').textContent === 'running'")
    assert requests.get(f"{server.base}/api/scheduler/jobs", timeout=5).json()["scheduler_paused"] is False


def test_a_removed_jobs_page_still_shows_its_runs_and_says_it_was_removed(page, site):
    gone = site.server.add(name="Gone Soon", at="23:59", url="http://127.0.0.1:9/unreachable", max_retries=0)
    requests.post(f"{site.base}/api/scheduler/run-now", json={"job_id": gone}, timeout=10).raise_for_status()
    deadline = time.monotonic() + 20
    runs: list[Any] = []
    while time.monotonic() < deadline:
        runs = requests.get(f"{site.base}/api/scheduler/job/{gone}/runs", timeout=5).json()["runs"]
        if runs and runs[0]["status"] == "failed":
            break
        time.sleep(0.3)
    assert runs and runs[0]["status"] == "failed"
    requests.delete(f"{site.base}/api/scheduler/job/{gone}", timeout=5).raise_for_status()
    page.goto(f"{site.base}/scheduler#job/{gone}")
    page.locator('[data-testid="run"]').first.wait_for()
    page.wait_for_function("() => document.querySelector('[data-testid=jv-status]').textContent === 'removed'")
    assert "no longer in the job file" in page.locator('[data-testid="jv-summary"]').inner_text()
    assert page.locator('[data-testid="run"]').first.get_attribute("data-status") == "failed"
    assert page.locator('[data-testid="attempt-message"]').first.inner_text() == runs[0]["attempts"][-1]["message"]
    assert not page.locator('[data-testid="edit-form"]').is_visible()
    assert page.locator('[data-testid="jv-error"]').is_hidden()
    # The one error is the browser's note of the page asking for the job itself (404: not in the file).
    assert [m for m in errors(page) if "status of 404" not in m] == []
    assert len(errors(page)) == 1


def test_the_strips_past_the_first_screen_get_their_tooltips_too(page, site):
    from crawlsched.state import State

    ids = [site.server.add(name=f"Many {i:02d}", at="23:59", url="http://127.0.0.1:9/many", max_retries=0) for i in range(45)]
    at = time.time() - 3600
    state = State(site.home / "crawlsched.db").open()
    try:
        for job_id in ids:  # one finished attempt each, written as the daemon writes them
            run_id = state.start_attempt(job_id, at, 1, 1, trigger="schedule", started_at=at, pid=os.getpid())
            state.finish_attempt(run_id, status="failed", finished_at=at + 1, message=f"HTTP 503 for {job_id}")
    finally:
        state.close()
    page.goto(f"{site.base}/scheduler")
    last = f'[data-job-id="{ids[-1]}"] [data-testid="run-strip"] .cell'
    page.wait_for_function("sel => { const c = document.querySelector(sel); return c && c.title; }", arg=last)
    assert f"HTTP 503 for {ids[-1]}" in page.locator(last).get_attribute("title")
    for job_id in ids:
        requests.delete(f"{site.base}/api/scheduler/job/{job_id}", timeout=5).raise_for_status()
    assert not errors(page)
