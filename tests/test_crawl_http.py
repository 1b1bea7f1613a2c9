"""crawl/http.py: fetch_urls against real servers on 127.0.0.1; no mocks.

The HTTP server is a ThreadingHTTPServer whose handler picks a behaviour from
the path (``/ok``, ``/status/503``, ``/drip``, ``/redirect``, …).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crawlsched.crawl.bodies import bodies_complete, body_name
from crawlsched.crawl.http import fetch_urls, leaves_origin, parse_retry_after

SECRET = "s3cr3t-T0KEN-value"
BIG = b"x" * 5000
REPO = Path(__file__).resolve().parents[1]


class Handler(BaseHTTPRequestHandler):
    """One behaviour per path; every request's path and headers are recorded on the server."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: C901 - a dispatch table written out
        server = self.server
        server.hits.append(self.path)
        server.seen_headers.append(dict(self.headers))
        path = self.path.split("?")[0]
        if path in ("/ok", "/a", "/b") or path.startswith("/secret/"):
            self.reply(200, b"hello world")
        elif path == "/toggle":
            self.reply(500 if server.failing else 200, b"toggle")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            extra = {"Retry-After": server.retry_after} if server.retry_after else {}
            self.reply(code, b"nope", extra)
        elif path == "/headers":
            self.reply(200, json.dumps(dict(self.headers)).encode())
        elif path == "/big-cl":
            self.reply(200, BIG)
        elif path == "/big-nocl":
            self.send_response(200)
            self.end_headers()  # HTTP/1.0 without Content-Length: the body ends when the connection does
            self.wfile.write(BIG)
        elif path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"only ten b")
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass  # the client gave up, as it should
        elif path == "/to-file":
            self.reply(302, b"", {"Location": "file:///etc/passwd"})
        elif path == "/to-ok":
            self.reply(302, b"", {"Location": "/ok"})
        elif path == "/redirect":
            self.reply(302, b"", {"Location": server.location})
        elif path == "/to-other-host":
            self.reply(302, b"", {"Location": f"http://localhost:{server.server_port}/headers"})
        else:
            self.reply(404, b"no such path")

    def reply(self, code, body, headers=None):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)



@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # requests honours proxy variables (as it should); the test servers are local.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")


def start_server() -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.hits, srv.seen_headers, srv.failing, srv.retry_after, srv.location = [], [], False, None, ""
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_port}"
    return srv


@pytest.fixture
def server():
    srv = start_server()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def other_server():
    """A second server: another port, so another origin."""
    srv = start_server()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A socket that accepts connections (kernel backlog) and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


def parts_left(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.iterdir() if p.name.endswith(".part")] if run_dir.exists() else []


# --- URL jobs -----------------------------------------------------------------


def test_200_body_is_saved_with_its_size(server, tmp_path):
    run = tmp_path / "data" / "news" / "20251108T020500Z"
    out = fetch_urls([f"{server.url}/ok"], run)
    assert out.ok and out.http_status == 200 and out.bytes == 11
    assert out.output == str(run / body_name(0, f"{server.url}/ok"))  # one URL: the body file itself
    assert (run / body_name(0, f"{server.url}/ok")).read_bytes() == b"hello world"
    assert bodies_complete([f"{server.url}/ok"], run)
    assert parts_left(run) == []


def test_retry_fetches_only_the_urls_not_yet_saved(server, tmp_path):
    urls = [f"{server.url}/a", f"{server.url}/toggle"]
    server.failing = True
    first = fetch_urls(urls, tmp_path)
    assert not first.ok and not first.permanent
    assert first.message == f"HTTP 500 from {server.url}/toggle"
    assert not bodies_complete(urls, tmp_path)
    server.failing, server.hits[:] = False, []
    second = fetch_urls(urls, tmp_path)
    assert second.ok and server.hits == ["/toggle"]
    assert second.bytes == len(b"toggle")
    assert "1 saved by an earlier attempt" in second.message
    assert bodies_complete(urls, tmp_path)


def test_several_urls_have_the_run_folder_as_output(server, tmp_path):
    run = tmp_path / "data" / "news" / "20251108T020500Z"
    out = fetch_urls([f"{server.url}/a", f"{server.url}/b"], run)
    assert out.ok and out.output == str(run)


def test_a_failed_attempt_leaves_no_empty_run_folder(server, tmp_path):
    run = tmp_path / "data" / "news" / "20251108T020500Z"
    out = fetch_urls([f"{server.url}/status/503"], run)
    assert not out.ok and out.output is None
    assert not run.exists() and (tmp_path / "data" / "news").is_dir()
    half = fetch_urls([f"{server.url}/a", f"{server.url}/status/503"], run)  # one body saved: the folder stays
    assert not half.ok and half.output == str(run) and run.is_dir()


def test_404_is_permanent(server, tmp_path):
    out = fetch_urls([f"{server.url}/status/404"], tmp_path)
    assert not out.ok and out.permanent and out.http_status == 404
    assert out.message == f"HTTP 404 from {server.url}/status/404"


@pytest.mark.parametrize("code", [500, 503, 408, 429])
def test_5xx_408_and_429_are_retryable(server, tmp_path, code):
    out = fetch_urls([f"{server.url}/status/{code}"], tmp_path)
    assert not out.ok and not out.permanent and out.http_status == code
    assert list(tmp_path.iterdir()) == []


def test_429_retry_after_seconds(server, tmp_path):
    server.retry_after = "7"
    out = fetch_urls([f"{server.url}/status/429"], tmp_path)
    assert out.retry_after == 7 and not out.permanent


def test_503_retry_after_http_date(server, tmp_path):
    server.retry_after = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120), usegmt=True)
    out = fetch_urls([f"{server.url}/status/503"], tmp_path)
    assert 100 < out.retry_after <= 120


@pytest.mark.parametrize("value, expected", [
    ("7", 7.0), (" 120 ", 120.0), ("Sat, 08 Nov 2025 02:06:00 GMT", 60.0),
    ("Sat, 08 Nov 2025 02:00:00 GMT", 0.0), ("soon", None), ("", None), (None, None),
], ids=["seconds", "spaces", "date", "past-date", "garbage", "empty", "absent"])
def test_parse_retry_after(value, expected):
    now = datetime(2025, 11, 8, 2, 5, tzinfo=timezone.utc)
    assert parse_retry_after(value, now) == expected


def test_slow_drip_is_stopped_by_the_total_deadline(server, tmp_path):
    start = time.monotonic()
    out = fetch_urls([f"{server.url}/drip"], tmp_path, timeout=2)
    assert time.monotonic() - start < 10
    assert not out.ok and "timed out after 2s" in out.message
    assert parts_left(tmp_path) == [] and not bodies_complete([f"{server.url}/drip"], tmp_path)


def test_server_that_never_answers_times_out(silent_port, tmp_path):
    start = time.monotonic()
    out = fetch_urls([f"http://127.0.0.1:{silent_port}/x"], tmp_path, timeout=2)
    assert time.monotonic() - start < 10
    assert not out.ok and not out.permanent and "timed out" in out.message


@pytest.mark.parametrize("path", ["/big-cl", "/big-nocl"], ids=["content-length", "no-content-length"])
def test_body_over_max_bytes_fails(server, tmp_path, path):
    out = fetch_urls([f"{server.url}{path}"], tmp_path, max_bytes=1000)
    assert not out.ok and "body larger than max_bytes (1000 bytes)" in out.message
    assert list(tmp_path.iterdir()) == []


def test_body_shorter_than_content_length_fails(server, tmp_path):
    out = fetch_urls([f"{server.url}/short"], tmp_path)
    assert not out.ok and not out.permanent
    assert "body cut short: got 10 of 100 bytes" in out.message
    assert list(tmp_path.iterdir()) == []


def test_redirect_to_file_scheme_is_refused_and_permanent(server, tmp_path):
    out = fetch_urls([f"{server.url}/to-file"], tmp_path)
    assert not out.ok and out.permanent and "redirect to a file URL refused" in out.message
    assert "passwd" not in out.message and list(tmp_path.iterdir()) == []


def test_redirect_within_http_is_followed(server, tmp_path):
    out = fetch_urls([f"{server.url}/to-ok"], tmp_path)
    assert out.ok and server.hits == ["/to-ok", "/ok"]


def test_authorization_is_dropped_when_a_redirect_changes_host(server, tmp_path):
    out = fetch_urls([f"{server.url}/to-other-host"], tmp_path, headers={"Authorization": "Bearer x"})
    assert out.ok
    assert server.seen_headers[0].get("Authorization") == "Bearer x"
    assert "Authorization" not in server.seen_headers[1]


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://", "not a url", "http://h:99999999/"],
                         ids=["ftp", "no-host", "no-scheme", "bad-port"])
def test_malformed_url_is_permanent(tmp_path, url):
    out = fetch_urls([url], tmp_path)
    assert not out.ok and out.permanent and "malformed URL" in out.message


def test_missing_ca_bundle_is_permanent(server, tmp_path):
    out = fetch_urls([f"{server.url}/ok"], tmp_path, verify=str(tmp_path / "no-ca.pem"))
    assert not out.ok and out.permanent and "CA bundle" in out.message and server.hits == []


def test_cancel_event_stops_the_download(server, tmp_path):
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    start = time.monotonic()
    out = fetch_urls([f"{server.url}/drip"], tmp_path, timeout=60, cancel=cancel)
    assert time.monotonic() - start < 5
    assert out.interrupted and not out.ok and parts_left(tmp_path) == []


def test_user_agent_default_and_override(server, tmp_path):
    fetch_urls([f"{server.url}/headers"], tmp_path / "1", user_agent="crawlsched/9")
    fetch_urls([f"{server.url}/headers"], tmp_path / "2", headers={"user-agent": "mine"})
    sent = [{k.lower(): v for k, v in h.items()} for h in server.seen_headers]
    assert sent[0]["user-agent"] == "crawlsched/9"
    assert sent[1]["user-agent"] == "mine"


def test_vars_are_expanded_in_url_and_headers(server, tmp_path):
    env = {"TOKEN": SECRET, "BASE": server.url}
    out = fetch_urls(["${BASE}/secret/${TOKEN}"], tmp_path, env=env,
                     headers={"Authorization": "Bearer ${TOKEN}"})
    assert out.ok and server.hits == [f"/secret/{SECRET}"]
    assert server.seen_headers[0]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in out.message and "${BASE}/secret/${TOKEN}" in out.message
    assert [p.name for p in tmp_path.iterdir()] == ["00-BASE-secret-TOKEN.body"]


@pytest.mark.parametrize("path, kwargs", [
    ("/status/500?token=${TOKEN}", {}),
    ("/status/404?token=${TOKEN}", {}),
    ("/big-nocl?key=${TOKEN}", {"max_bytes": 10}),
    ("/big-cl?key=${TOKEN}", {"max_bytes": 10}),
    ("/short?${TOKEN}", {}),
    ("/drip?${TOKEN}", {"timeout": 1}),
    ("/to-file?${TOKEN}", {}),
    ("REFUSED/x?token=${TOKEN}", {}),
    ("SILENT/${TOKEN}", {"timeout": 1}),
], ids=["500", "404", "too-big", "too-big-cl", "cut-short", "deadline", "bad-redirect", "refused", "silent"])
def test_secret_never_appears_in_a_failure_message(server, closed_port, silent_port, tmp_path, path, kwargs):
    if path.startswith("REFUSED"):
        url = f"http://user:${{TOKEN}}@127.0.0.1:{closed_port}{path.removeprefix('REFUSED')}"
    elif path.startswith("SILENT"):
        url = f"http://127.0.0.1:{silent_port}{path.removeprefix('SILENT')}"
    else:
        url = f"{server.url}{path}"
    out = fetch_urls([url], tmp_path, env={"TOKEN": SECRET},
                     headers={"Authorization": "Bearer ${TOKEN}", "X-Api-Key": "literal-key-123"}, **kwargs)
    assert not out.ok
    assert SECRET not in out.message and "literal-key-123" not in out.message
    assert len(out.message) <= 300 and "\n" not in out.message


def test_connection_refused_is_retryable_with_a_clear_message(closed_port, tmp_path):
    out = fetch_urls([f"http://127.0.0.1:{closed_port}/x"], tmp_path)
    assert not out.ok and not out.permanent
    assert out.message == f"http://127.0.0.1:{closed_port}/x: connection failed: Connection refused"


def test_missing_variable_is_permanent_and_fetches_nothing(server, tmp_path):
    out = fetch_urls([f"{server.url}/ok"], tmp_path, env={}, headers={"Authorization": "Bearer ${NEWS_TOKEN}"})
    assert not out.ok and out.permanent and "NEWS_TOKEN" in out.message
    assert server.hits == []


DISK_FULL_SCRIPT = """
import json, resource, signal, sys
from pathlib import Path
from crawlsched.crawl import fetch_urls
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write() fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
out = fetch_urls([sys.argv[1]], Path(sys.argv[2]))
print(json.dumps({"ok": out.ok, "message": out.message}))
"""


def test_disk_full_fails_cleanly_and_leaves_no_partial_file(server, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", DISK_FULL_SCRIPT, f"{server.url}/big-nocl", str(run)],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert not out["ok"] and "disk full" in out["message"]
    assert not run.exists()  # no partial file, and no empty run folder either


# --- redirects: configured headers never leave their origin-----------------------------------------


def test_redirect_to_another_port_drops_every_configured_header(server, other_server, tmp_path, monkeypatch):
    a, b = server, other_server
    a.location = f"{b.url}/ok"
    monkeypatch.setenv("TOK", SECRET)
    monkeypatch.setenv("KEY", "key-SECRET-1234")
    out = fetch_urls([f"{a.url}/redirect"], tmp_path / "run",
                     headers={"Authorization": "Bearer ${TOK}", "X-Api-Key": "${KEY}", "Cookie": "s=1"},
                     user_agent="crawlsched/test")
    assert out.ok, out.message
    first, = a.seen_headers
    assert first["Authorization"] == f"Bearer {SECRET}" and first["X-Api-Key"] == "key-SECRET-1234"
    second, = b.seen_headers
    assert "Authorization" not in second and "X-Api-Key" not in second and "Cookie" not in second, second
    assert second["User-Agent"] == "crawlsched/test"


def test_redirect_within_the_origin_keeps_the_headers(server, tmp_path, monkeypatch):
    a = server
    a.location = f"{a.url}/ok"
    monkeypatch.setenv("KEY", "key-SECRET-1234")
    out = fetch_urls([f"{a.url}/redirect"], tmp_path / "run", headers={"X-Api-Key": "${KEY}"})
    assert out.ok, out.message
    assert [h.get("X-Api-Key") for h in a.seen_headers] == ["key-SECRET-1234"] * 2


@pytest.mark.parametrize(("old", "new", "leaves"), [
    ("https://h.example/a", "http://h.example/b", True),  # downgrade: clear text
    ("https://h.example/a", "https://h.example:8443/b", True),
    ("https://h.example/a", "https://other.example/b", True),
    ("https://h.example/a", "https://H.EXAMPLE:443/b", False),
    ("http://h.example/a", "http://h.example:80/b", False),
])
def test_a_redirect_leaves_the_origin_on_another_host_or_port_or_a_downgrade_to_http(old, new, leaves):
    assert leaves_origin(old, new) is leaves
