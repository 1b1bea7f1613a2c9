"""crawl.py against real servers on 127.0.0.1 and real processes; no mocks.

The HTTP server is a ThreadingHTTPServer whose handler picks a behaviour from
the path (``/ok``, ``/status/503``, ``/drip``, …). Commands are real ``sh``
processes; process-group checks read /proc, so those tests are Linux-only.
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

from crawlsched import crawl
from crawlsched.crawl import (
    Outcome,
    bodies_complete,
    body_name,
    expand_vars,
    fetch_urls,
    parse_retry_after,
    prune_runs,
    redact_url,
    run_command,
    run_stamp,
)
from crawlsched.errors import MissingVariable

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


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.hits, srv.seen_headers, srv.failing, srv.retry_after = [], [], False, None
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_port}"
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


@pytest.mark.parametrize("url", [
    "https://example.com/../../etc/passwd", "http://h/a b/c\\d/%00/é?x=1", "http://../..", "https://" + "x" * 500,
], ids=["dotdot", "odd-chars", "only-dots", "long"])
def test_body_name_is_a_safe_file_name(url):
    name = body_name(0, url)
    assert name.startswith("00-") and name.endswith(".body") and len(name) <= 70
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert ".." not in name
    assert body_name(0, url) == name


# --- templates, redaction, stamps, pruning ----------------------------------------


def test_expand_vars():
    assert expand_vars("Bearer ${T}, $HOME ${T}", {"T": "x"}) == "Bearer x, $HOME x"
    with pytest.raises(MissingVariable) as err:
        expand_vars("${NOPE}", {})
    assert err.value.name == "NOPE" and isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("url, shown", [
    ("https://user:pass@host/x?token=abc&page=2", "https://user:***@host/x?token=***&page=2"),
    ("https://user@host/x", "https://user@host/x"),
    ("https://u:${PASS}@${HOST}/x?api_key=${KEY}", "https://u:***@${HOST}/x?api_key=${KEY}"),
    ("http://h/p?a=1#frag", "http://h/p?a=1#frag"),
    ("https://h/a@b", "https://h/a@b"),
], ids=["password-and-token", "user-only", "templates-kept", "plain", "at-in-path"])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_run_stamp_is_utc_and_sortable():
    wib = timezone(timedelta(hours=7))
    assert run_stamp(datetime(2025, 11, 8, 9, 5, tzinfo=wib)) == "20251108T020500Z"
    with pytest.raises(ValueError):
        run_stamp(datetime(2025, 11, 8, 9, 5))


def test_prune_runs_keeps_the_newest_and_nothing_else_is_touched(tmp_path):
    for stamp in ["20251101T000000Z", "20251102T000000Z", "20251103T000000Z"]:
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / "00-x.body").write_text("x")
    (tmp_path / "20251104T000000Z.log").write_text("log")
    (tmp_path / "notes.txt").write_text("mine")
    assert prune_runs(tmp_path, 2) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20251103T000000Z", "20251104T000000Z.log", "notes.txt"]
    assert prune_runs(tmp_path, 2) == 0
    assert prune_runs(tmp_path / "missing", 1) == 0


def test_outcome_message_is_one_short_line():
    assert Outcome(False, "a\nb\r\n" + "c" * 400).message.startswith("a b c")
    assert len(Outcome(False, "x" * 1000).message) == 300


# --- command jobs ---------------------------------------------------------------


def env_with(**extra):
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


def test_command_success_appends_to_its_log(tmp_path):
    log = tmp_path / "logs" / "run.log"
    out = run_command("sh -c 'echo first; echo done'", log, env=env_with())
    assert out.ok and out.exit_code == 0 and out.message == "done" and out.output == str(log)
    run_command("echo again", log, env=env_with())
    assert log.read_text() == "first\ndone\nagain\n"


def test_command_failure_reports_its_last_line(tmp_path):
    out = run_command("sh -c 'echo one; echo last words >&2; echo; exit 3'", tmp_path / "r.log", env=env_with())
    assert not out.ok and not out.permanent and out.exit_code == 3 and out.message == "last words"


def test_command_without_output_reports_exit_code(tmp_path):
    out = run_command("sh -c 'exit 4'", tmp_path / "r.log", env=env_with())
    assert out.message == "exit code 4"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_timeout_kills_the_whole_group_even_what_ignores_sigterm(tmp_path):
    log = tmp_path / "r.log"
    start = time.monotonic()
    # The trap makes sh and both sleeps ignore SIGTERM (ignored signals are inherited);
    # the first sleep is a backgrounded grandchild.
    out = run_command("""sh -c 'trap "" TERM; sleep 100 & echo "$$ $!"; sleep 100'""", log,
                      env=env_with(), timeout=1, kill_after=1)
    assert time.monotonic() - start < 8
    assert not out.ok and out.message == "timed out after 1s" and out.exit_code == -9
    leader, grandchild = map(int, log.read_text().split()[:2])
    time.sleep(0.1)
    assert not alive(grandchild) and not alive(leader)
    assert group_members(leader) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_timeout_needs_no_sigkill_when_sigterm_is_enough(tmp_path):
    log = tmp_path / "r.log"
    start = time.monotonic()
    out = run_command("""sh -c 'sleep 100 & echo "$$"; sleep 100'""", log, env=env_with(), timeout=0.5,
                      kill_after=30)
    assert time.monotonic() - start < 5
    assert out.exit_code == -15 and "timed out" in out.message
    assert group_members(int(log.read_text().split()[0])) == []


def test_cancel_stops_a_command(tmp_path):
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    out = run_command("sleep 100", tmp_path / "r.log", env=env_with(), cancel=cancel)
    assert out.interrupted and not out.ok


def test_command_not_found_is_permanent(tmp_path):
    out = run_command("no-such-command-xyz --flag", tmp_path / "r.log", env=env_with())
    assert not out.ok and out.permanent and out.message == "command not found: no-such-command-xyz"


def test_command_gets_exactly_the_env_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAWLSCHED_LEAK", "leaked")
    out = run_command("""sh -c 'echo "$CRAWLSCHED_JOB_ID/$CRAWLSCHED_LEAK/"'""", tmp_path / "r.log",
                      env=env_with(CRAWLSCHED_JOB_ID="news"))
    assert out.message == "news//"


def test_command_is_never_given_to_a_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    out = run_command("echo $HOME; rm -rf x", tmp_path / "r.log", env=env_with(HOME="/home/h"))
    assert out.ok and out.message == "$HOME; rm -rf x"
    assert (tmp_path / "x").is_dir()


def test_unparsable_command_is_permanent(tmp_path):
    out = run_command("echo 'unclosed", tmp_path / "r.log", env=env_with())
    assert out.permanent and "does not parse" in out.message


def test_module_does_not_import_requests():
    code = "import sys, crawlsched.crawl; print('requests' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.strip() == "False", proc.stderr
    assert crawl.fetch_urls is fetch_urls
