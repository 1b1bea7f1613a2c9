"""Scenarios 15-16: hostile names, ids, paths and shell metacharacters; secrets kept out of every output.

Anchors: systemd ``ExecStart=`` (an argument list, never a shell unless you ask for one);
Kubernetes CronJob names (DNS-label validated before anything is created); curl and git
(``https://user:***@host`` when they print a URL); GitHub Actions secret masking.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers.files import snapshot
from helpers.history import runs
from helpers.jobs import write_jobs
from helpers.process import cli, DaemonProcess, wait_for

pytestmark = pytest.mark.slow


def _names(marker: Path, victim: Path) -> list[str]:
    return [
        "../../escape",
        "../../../../../../tmp/escape-abs",
        "/etc/passwd",
        f"$(touch {marker})",
        f"; rm -rf {victim}",
        f"`touch {marker}`",
        "|| touch pwned &&",
        "..",
        "." * 150,
        "ñame with ünicode ✓",
        "x" * 5000,  # refused: longer than 200
        "tab\tand\nnewline",  # refused: control characters
    ]


def test_hostile_names_write_nothing_outside_the_home_and_run_no_shell(tmp_path, target):
    home = tmp_path / "home"
    home.mkdir()
    marker, victim = tmp_path / "pwned", tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    write_jobs(home, "")
    before = snapshot(tmp_path, exclude=home)
    accepted = []
    for name in _names(marker, victim):
        result = cli(home, "add", name, "--every", "1h", "--url", target.url("/ok"), "--json")
        body = json.loads(result.stdout)
        if result.returncode == 0:
            accepted.append(body["job_id"])
        else:
            assert result.returncode == 2 and body["success"] is False
    assert len(accepted) == 10
    for job_id in accepted:
        assert (job_id == job_id.lower()) and "/" not in job_id and not job_id.startswith(".")
        assert cli(home, "run", job_id).returncode == 0
    assert sorted(p.name for p in (home / "data").iterdir()) == sorted(accepted)  # one folder each, in home
    assert snapshot(tmp_path, exclude=home) == before
    assert not marker.exists() and (victim / "keep").exists()


def test_a_command_with_shell_metacharacters_is_an_argument_list(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    marker, victim = tmp_path / "pwned", tmp_path / "victim"
    victim.mkdir()
    command = f"echo ${{HOME}} $(touch {marker}) ; rm -rf {victim} `touch {marker}` && touch {marker} | cat"
    assert cli(home, "add", "meta", "--every", "1h", "--command", command).returncode == 0
    before = snapshot(tmp_path, exclude=home)
    assert cli(home, "run", "meta").returncode == 0
    assert not marker.exists() and victim.exists()
    assert snapshot(tmp_path, exclude=home) == before
    message = runs(home)[0]["message"]
    assert message.startswith("${HOME} $(touch") and "; rm -rf" in message and "`touch" in message  # echo got them literally


@pytest.mark.parametrize("table, field", [
    ('id = "../escape"', "id"),
    ('id = "/abs"', "id"),
    ('id = "a\\u0000b"', "id"),
    ('id = "ok"\nname = "a\\u0000b"', "name"),
    ('id = "ok"\ntimezone = "../../../../etc/passwd"', "timezone"),
    ('id = "ok"\ntimezone = "Europe/../../../../etc/passwd"', "timezone"),
    ('id = "ok"\ncommand = "sleep\\u00001"', "command"),
    ('id = "ok"\nurl = "file:///etc/passwd"', "url"),
    ('id = "ok"\nurl = "http://x/\\u0000"', "url"),
    (f'id = "{"a" * 65}"', "id"),
], ids=["dotdot-id", "absolute-id", "nul-id", "nul-name", "dotdot-zone", "nested-dotdot-zone", "nul-command",
        "file-url", "nul-url", "long-id"])
def test_hand_written_hostile_values_are_refused_naming_the_line(home, table, field):
    body = f'[[jobs]]\n{table}\nevery = "1h"\n' + ("" if "command" in table or "url" in table else 'command = "true"\n')
    write_jobs(home, body)
    before = snapshot(home.parent)
    result = cli(home, "validate")
    assert result.returncode == 2
    assert "jobs.toml:" in result.stderr and field in result.stderr, result.stderr
    assert "\n" not in result.stderr.strip()
    assert snapshot(home.parent) == before


def test_hostile_url_paths_are_saved_under_home_with_short_safe_names(tmp_path, target):
    home = tmp_path / "home"
    home.mkdir()
    urls = [target.url("/../../../../etc/passwd"), target.url("/..%2f..%2f..%2fetc%2fshadow"),
            target.url("/" + "a" * 3000), target.url("/x?name=../../y")]
    args = [a for u in urls for a in ("--url", u)]
    assert cli(home, "add", "paths", "--every", "1h", *args).returncode == 0
    before = snapshot(tmp_path, exclude=home)
    assert cli(home, "run", "paths").returncode == 0
    bodies = [p for p in (home / "data").rglob("*") if p.is_file()]
    assert len(bodies) == 4 and all(len(p.name) <= 70 for p in bodies)
    assert all(home / "data" / "paths" in p.parents for p in bodies)
    assert snapshot(tmp_path, exclude=home) == before


# --- secrets ------------------------------------------------------------------------------

SECRETS = ["hunter2pw", "SuperSecretTok3n", "literal-k3y-value", "plainQueryS3cret"]


def _secret_home(home: Path, target) -> dict[str, str]:
    env = {"TOK": "SuperSecretTok3n", "TZ": "UTC"}
    write_jobs(home,
               f'[[jobs]]\nid = "env"\nname = "env"\nevery = "1h"\nurl = "http://alice:hunter2pw@127.0.0.1:{target.port}/fail?token=${{TOK}}"\n'
               'headers = { Authorization = "Bearer ${TOK}" }\nmax_retries = 0\n\n'
               f'[[jobs]]\nid = "lit"\nname = "lit"\nevery = "1h"\nurl = "{target.url("/fail")}?api_token=plainQueryS3cret"\n'
               'headers = { X-Api-Key = "literal-k3y-value", Authorization = "Basic literal-k3y-value" }\nmax_retries = 0\n')
    return env


def _outputs(home: Path, env: dict[str, str]) -> dict[str, str]:
    out = {}
    for args in (["list"], ["list", "--json"], ["show", "env"], ["show", "env", "--json"], ["show", "lit", "--json"],
                 ["history"], ["history", "--json"], ["status", "--json"], ["validate", "--json"]):
        result = cli(home, *args, env=env)
        out[" ".join(args)] = result.stdout + result.stderr
    for path in home.rglob("*"):
        if path.parent.name == ".cache":
            # The parse cache is the job file itself, pickled: as private as jobs.toml, never shown.
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
            continue
        if path.is_file() and path.name != "jobs.toml" and not path.name.startswith("crawlsched.db"):
            out[str(path.relative_to(home))] = path.read_text(errors="replace")
    con = sqlite3.connect(home / "crawlsched.db")
    out["database"] = "\n".join(con.iterdump())
    con.close()
    return out


def test_secrets_never_appear_in_any_output_log_message_or_the_database(home, target):
    env = _secret_home(home, target)
    for job in ("env", "lit"):
        result = cli(home, "run", job, env=env)
        assert result.returncode == 1
        assert not [s for s in SECRETS if s in result.stdout + result.stderr], result.stderr
    d = DaemonProcess(home, env=env).start()
    try:
        wait_for(lambda: len(runs(home)) >= 4, 15, "the daemon's attempts")
    finally:
        d.stop()
    assert any("token=SuperSecretTok3n" in path for path in target.hits)  # it was sent ...
    assert any(h.get("X-Api-Key") == "literal-k3y-value" for h in target.headers_seen)
    leaks = {where: [s for s in SECRETS if s in text] for where, text in _outputs(home, env).items()}
    assert {k: v for k, v in leaks.items() if v} == {}  # ... and shown nowhere
    assert "Bearer ${TOK}" in (home / "jobs.toml").read_text()  # the template stays unexpanded


def test_a_refused_url_with_a_password_does_not_echo_it(home):
    write_jobs(home, "")
    for url in ("ftp://bob:pw-in-error@host/x", "http://bob:pw-in-error@", "https://bob:pw-in-error@host:notaport/"):
        result = cli(home, "add", "x", "--every", "1h", "--url", url)
        assert result.returncode == 2 and "pw-in-error" not in result.stderr, result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_secrets_never_appear_in_the_web_api(home, target):
    try:
        import crawlsched.web  # noqa: F401
    except ImportError:
        pytest.skip("crawlsched/web.py (the HTTP API) is not in the tree yet; this test covers it once it lands")
    env = _secret_home(home, target)
    port = _free_port()
    d = DaemonProcess(home, "--http", f"127.0.0.1:{port}", env=env).start()
    try:
        wait_for(lambda: len(runs(home)) >= 2, 15, "the daemon's attempts")
        bodies = []
        for path in ("/api/scheduler/jobs", "/api/scheduler/job/env", "/api/scheduler/job/lit", "/api/scheduler/status",
                     "/metrics", "/scheduler"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                bodies.append(response.read().decode(errors="replace"))
    finally:
        d.stop()
    assert not [s for s in SECRETS for b in bodies if s in b]


# --- the web API under attack -------------------------------------------------------------------


def _web_daemon(home: Path, target, *args: str, env: dict[str, str] | None = None) -> tuple[DaemonProcess, str]:
    port = _free_port()
    d = DaemonProcess(home, "--http", f"127.0.0.1:{port}", *args, env={"TZ": "UTC", **(env or {})}).start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{base}/healthz") == 200, 15, "the web API")
    return d, base


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


ATTACKER_PAGE = """<!doctype html><title>cat pictures</title><script>
const api = "%(api)s";
window.sent = Promise.all([
  fetch(api + "/api/scheduler/stop", {method: "POST", mode: "no-cors"}),
  fetch(api + "/api/scheduler/run-now", {method: "POST", mode: "no-cors"}),
  fetch(api + "/api/scheduler/run-now", {method: "POST", mode: "no-cors", body: '{"job_id": "default"}',
                                         headers: {"Content-Type": "text/plain"}}),
  fetch(api + "/api/scheduler/job/default/pause", {method: "POST", mode: "no-cors"}),
]).then(rs => rs.map(r => r.type).join(","), e => "error: " + e);
</script>"""


def test_a_page_on_another_origin_can_neither_pause_nor_run_jobs(home, target):
    """Real Chromium on a second origin (another port of 127.0.0.1, so the same site) against the real daemon."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("CRAWLSCHED_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium}")
    write_jobs(home, f'[[jobs]]\nid = "default"\nname = "default"\nat = "03:00"\nurl = "{target.url("/ok")}"\n')
    d, base = _web_daemon(home, target)
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _page_handler(ATTACKER_PAGE % {"api": base}))
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
                assert page.evaluate("window.sent") == "opaque,opaque,opaque,opaque"  # all four were sent
            finally:
                browser.close()
        time.sleep(1.5)  # a run-now that got through would have fired by now
        with urllib.request.urlopen(f"{base}/api/scheduler/jobs", timeout=5) as response:
            jobs = json.loads(response.read())["jobs"]
        assert [(j["id"], j["status"]) for j in jobs] == [("default", "active")]
        assert runs(home) == [] and target.hits["/ok"] == 0
    finally:
        attacker.shutdown()
        attacker.server_close()
        assert d.stop() == 0


def _page_handler(html: str) -> type[BaseHTTPRequestHandler]:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Page


@pytest.mark.parametrize("token", ["a", "0123456789abcdef0123456789abcde", "only-twenty-one-chars"])
def test_a_weak_token_on_a_non_loopback_address_is_refused_at_start(home, token):
    write_jobs(home, "")
    result = cli(home, "daemon", "--http", f"0.0.0.0:{_free_port()}", env={"CRAWLSCHED_TOKEN": token})
    assert result.returncode == 2, result.stderr
    assert "128 bits" in result.stderr and "32 hex characters" in result.stderr and "Traceback" not in result.stderr
    assert len(token) < 5 or token not in result.stderr
    token_file = home / "token"
    token_file.write_text(token + "\n")
    result = cli(home, "daemon", "--http", f"0.0.0.0:{_free_port()}", "--token-file", str(token_file))
    assert result.returncode == 2 and "--token-file" in result.stderr and "128 bits" in result.stderr


def test_a_token_guesser_gets_429_fast_is_logged_once_and_blocks_nobody_else(home, target):
    import requests

    token = "f3a9c1d2e4b5a6978877665544332211"  # 32 hex characters: 128 bits
    write_jobs(home, "")
    d, base = _web_daemon(home, target, env={"CRAWLSCHED_TOKEN": token})
    try:
        started = time.monotonic()
        with requests.Session() as s:
            codes = [s.get(f"{base}/api/scheduler/jobs", headers={"Authorization": f"Bearer guess{i:04d}"},
                           timeout=5).status_code for i in range(300)]
        took = time.monotonic() - started
        assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
        assert took < 15, f"300 guesses took {took:.1f} s: the refusals must be fast"
        # The guesser holds no thread: healthz and the other routes still answer at once.
        assert _get(f"{base}/healthz", timeout=2) == 200
        assert _get(f"{base}/scheduler", timeout=2) == 200
    finally:
        assert d.stop() == 0
    log = d.output()
    warnings = [line for line in log.splitlines() if "wrong token" in line]
    assert len(warnings) == 2 and all("127.0.0.1" in w for w in warnings), warnings
    assert "guess0" not in log and token not in log


@pytest.mark.parametrize("count", [500, 2000, 5000])
def test_half_open_connections_do_not_stop_a_normal_request(home, target, count):
    """Slowloris: connections that send half a request and then nothing (SPEC: 500; 2,000 as a margin;
    5,000 is past the connection limit of 4,096: the longest-idle ones are closed to make room)."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        pytest.skip(f"ulimit -n is {soft}: this test opens {count} sockets")
    write_jobs(home, "")
    d, base = _web_daemon(home, target)
    port = int(base.rsplit(":", 1)[1])
    sockets = []
    try:
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow-{i}: ".encode())
            sockets.append(s)
        started = time.monotonic()
        assert _get(f"{base}/healthz", timeout=5) == 200
        assert _get(f"{base}/api/scheduler/jobs", timeout=5) == 200
        took = time.monotonic() - started
        assert took < 5, f"a normal request took {took:.1f} s beside {count} half-open connections"
    finally:
        for s in sockets:
            s.close()
        assert d.stop() == 0
    assert "Traceback" not in d.output()


def test_the_api_cannot_make_the_daemon_send_its_environment(home, target):
    import requests

    write_jobs(home, "", defaults='timezone = "UTC"\nallow_http_env = ["PUBLIC_REGION"]\n')
    d, base = _web_daemon(home, target, env={"PUBLIC_REGION": "eu", "SECRET_KEY": "k3y-in-the-env"})
    try:
        before = (home / "jobs.toml").read_bytes()
        leak = requests.post(f"{base}/api/scheduler/job/add", timeout=5, json={
            "name": "leak", "every": "1h", "url": target.url("/ok?home=${HOME}&key=${SECRET_KEY}")})
        assert leak.status_code == 422 and leak.json()["error"].startswith("url: \"${HOME}\" is an environment variable"), leak.text
        header = requests.post(f"{base}/api/scheduler/job/add", timeout=5, json={
            "name": "leak", "every": "1h", "url": target.url("/ok"), "headers": {"X-K": "${SECRET_KEY}"}})
        assert header.status_code == 422 and header.json()["error"].startswith("headers: \"${SECRET_KEY}\"")
        start = requests.post(f"{base}/api/scheduler/start", timeout=5, json={
            "mode": "interval", "seconds": 1, "url": target.url("/ok?p=${PATH}")})
        assert start.status_code == 422 and start.json()["error"].startswith("url: \"${PATH}\"")
        assert (home / "jobs.toml").read_bytes() == before
        allowed = requests.post(f"{base}/api/scheduler/job/add", timeout=5, json={
            "name": "region", "every": "1h", "url": target.url("/ok?region=${PUBLIC_REGION}")})
        assert allowed.status_code == 200, allowed.text
        # Its first fire is at once (its anchor: SPEC §3), a run-now meanwhile is refused as busy
        wait_for(lambda: target.hits["/ok?region=eu"], 10, "the allowed job's request")
    finally:
        assert d.stop() == 0
    assert [p for p in target.hits if "k3y" in p or "home=" in p] == []


# --- SSRF: http_targets = "public" ------------------------------------------------------------


def test_with_http_targets_public_no_crawl_reaches_a_loopback_address(home, target):
    """Even a job written into the file (the API refuses it at once): every connection is checked."""
    write_jobs(home, f'[[jobs]]\nid = "local"\nname = "local"\nevery = "1h"\nurl = "{target.url("/ok")}"\n'
                     'max_retries = 3\n\n'
                     f'[[jobs]]\nid = "byname"\nname = "byname"\nevery = "1h"\nurl = "http://localhost:{target.port}/ok"\n',
               defaults='timezone = "UTC"\nhttp_targets = "public"\n')
    for job in ("local", "byname"):
        result = cli(home, "run", job)
        assert result.returncode == 1
    rows = runs(home)
    assert [r["job_id"] for r in rows].count("local") == 1  # refused is permanent: no retry
    assert all(r["status"] == "failed" and "refused" in r["message"] and "loopback address" in r["message"]
               and 'http_targets = "public"' in r["message"] for r in rows), rows
    assert target.hits == {}
    write_jobs(home, f'[[jobs]]\nid = "local"\nname = "local"\nevery = "1h"\nurl = "{target.url("/ok")}"\n')
    assert cli(home, "run", "local").returncode == 0  # the default ("any") fetches it, as before


def test_a_dns_answer_that_changes_to_loopback_after_the_add_is_refused_at_connect(tmp_path, target, monkeypatch):
    """DNS rebinding: public when the API checks, 127.0.0.1 when the crawl connects (DNS is the one fake)."""
    from crawlsched import crawl
    from crawlsched.model import Defaults
    from crawlsched.web.payload import refuse_private_targets

    real = socket.getaddrinfo
    answers = iter(["93.184.216.34", "127.0.0.1"])

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.example":
            address = next(answers, "127.0.0.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://rebind.example:{target.port}/ok"
    refuse_private_targets([url], Defaults(http_targets="public"))  # accepted: it answered a public address
    outcome = crawl.fetch_urls([url], tmp_path / "run", public_only=True, timeout=10)
    assert not outcome.ok and outcome.permanent
    assert "rebind.example is 127.0.0.1, a loopback address" in outcome.message
    assert target.hits == {}


def test_a_redirect_to_a_non_public_address_is_refused_before_it_is_requested(tmp_path, monkeypatch):
    """127.0.0.1 plays the public server here, 127.0.0.2 the private one it redirects to."""
    from crawlsched import crawl, targets

    hits: list[str] = []

    def serve(address: str, location: str | None) -> ThreadingHTTPServer:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                hits.append(f"{address}{self.path}")
                self.send_response(302 if location else 200)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((address, 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    try:
        private = serve("127.0.0.2", None)
    except OSError:
        pytest.skip("127.0.0.2 cannot be bound here")
    public = serve("127.0.0.1", f"http://127.0.0.2:{private.server_address[1]}/latest/meta-data/")
    monkeypatch.setattr(targets, "is_public", lambda address: address == "127.0.0.1")
    try:
        outcome = crawl.fetch_urls([f"http://127.0.0.1:{public.server_address[1]}/go"], tmp_path / "run",
                                   public_only=True, timeout=10)
    finally:
        for server in (public, private):
            server.shutdown()
            server.server_close()
    assert not outcome.ok and outcome.permanent and "127.0.0.2" in outcome.message
    assert hits == ["127.0.0.1/go"]  # the private server was never sent a request
