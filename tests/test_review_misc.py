"""Fixes from the review: anchored validators, the API token, the web server's shutdown, bulk store edits."""

from __future__ import annotations

import os
import threading

import pytest

from crawlsched.errors import InvalidValue
from crawlsched.validate import check_headers, check_id, parse_at

# --- validators match the whole text (no "$" before a final newline) --------------------


@pytest.mark.parametrize("bad", ["daily\n", "daily\r\n", "\ndaily"])
def test_check_id_refuses_a_trailing_newline(bad):
    with pytest.raises(InvalidValue):
        check_id(bad)
    assert check_id("daily") == "daily"


@pytest.mark.parametrize("bad", ["09:05\n", "9:05\n"])
def test_parse_at_refuses_a_trailing_newline(bad):
    with pytest.raises(InvalidValue):
        parse_at(bad)
    assert parse_at("9:05") == "09:05"


def test_check_headers_refuses_a_header_name_with_a_trailing_newline():
    with pytest.raises(InvalidValue):
        check_headers({"X-Api\n": "v"})
    assert check_headers({"X-Api": "v"}) == {"X-Api": "v"}


def test_toml_keys_with_a_trailing_newline_are_quoted():
    import tomllib

    from crawlsched.tomledit import _toml_inline

    text = "h = " + _toml_inline({"a\n": "v"})
    assert tomllib.loads(text) == {"h": {"a\n": "v"}}


# --- the API token ----------------------------------------------------------------------


def test_load_token_removes_the_token_from_the_environment():
    from crawlsched.web import load_token

    environ = {"CRAWLSCHED_TOKEN": " s3cret ", "PATH": "/bin"}
    assert load_token(None, environ) == "s3cret"
    assert "CRAWLSCHED_TOKEN" not in environ and environ["PATH"] == "/bin"


def test_load_token_defaults_to_os_environ_and_pops_it(monkeypatch):
    from crawlsched.web import load_token

    monkeypatch.setenv("CRAWLSCHED_TOKEN", "s3cret")
    assert load_token(None) == "s3cret"
    assert "CRAWLSCHED_TOKEN" not in os.environ


def test_load_token_pops_the_environment_even_when_a_file_wins(tmp_path):
    from crawlsched.web import load_token

    path = tmp_path / "token"
    path.write_text("from-file\n")
    environ = {"CRAWLSCHED_TOKEN": "from-env"}
    assert load_token(path, environ) == "from-file"
    assert environ == {}


def test_token_file_is_the_whole_content_stripped(tmp_path):
    from crawlsched.errors import WebConfigError
    from crawlsched.web import read_token_file

    path = tmp_path / "token"
    path.write_text("\n  tok3n  \n\n")
    assert read_token_file(path) == "tok3n"
    path.write_text("first\nsecond\n")  # two lines are not one token (the old reader took the first)
    with pytest.raises(WebConfigError):
        read_token_file(path)
    path.write_text(" \n\n")
    with pytest.raises(WebConfigError, match="empty"):
        read_token_file(path)
    with pytest.raises(WebConfigError, match="cannot read"):
        read_token_file(tmp_path / "missing")


def test_read_token_file_raises_the_callers_error(tmp_path):
    from crawlsched.errors import Refused
    from crawlsched.web import read_token_file

    path = tmp_path / "token"
    path.write_text("")
    with pytest.raises(Refused):
        read_token_file(path, Refused)


# --- the web server stops through waitress's public close ---------------------------------


def _hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]


def test_web_server_start_and_close_prints_nothing(capfd, caplog):
    import logging

    import requests
    import waitress

    from crawlsched.web.server import WebServer

    caplog.set_level(logging.DEBUG)
    for _ in range(2):
        server = waitress.create_server(_hello, host="127.0.0.1", port=0, threads=2)
        handle = WebServer(server, "127.0.0.1", int(server.effective_port))
        handle.thread.start()
        session = requests.Session()  # keeps a connection open across the close
        assert session.get(f"{handle.url}/", timeout=5).text == "hi"
        handle.close()
        assert not handle.thread.is_alive()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{handle.url}/", timeout=2)
        session.close()
    out, err = capfd.readouterr()
    assert "unhandled" not in out + err and "Traceback" not in out + err, out + err
    assert not [r for r in caplog.records if "unhandled" in r.getMessage() or r.levelno >= logging.WARNING]
    assert not [t for t in threading.enumerate() if t.name == "crawlsched-web"]


# --- bulk store edits: one pass over the file ------------------------------------------------


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
    import tomllib

    from crawlsched.store import JobStore

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
    from datetime import datetime, timezone

    from crawlsched.store import JobStore

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


# --- one definition each -------------------------------------------------------------------


def test_shared_helpers_have_one_definition():
    import crawlsched.cli as cli
    import crawlsched.model as model
    import crawlsched.store as store
    import crawlsched.web.api as api
    import crawlsched.web.payload as payload
    import crawlsched.web.responses as responses
    from crawlsched import render

    assert payload._num is render._num and not hasattr(cli, "_num")
    assert not hasattr(api, "ADDED") and render.ADDED == "✅ Job '{name}' berhasil ditambahkan"
    assert not hasattr(model, "_redacted") and render.mask_url("https://u:p@h/") == "https://u:***@h/"
    assert not hasattr(store.JobStore, "load_with_key") and not hasattr(store, "today")
    assert not hasattr(responses, "Unauthorized") and not hasattr(responses, "UnsupportedMediaType")


# --- the benchmark keeps its CLI cache in its work folder and reports cold and warm --------------


def test_bench_cli_uses_the_work_folders_cache_and_reports_cold(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "bench"))
    import crawlsched_bench

    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent/user-cache")
    env = crawlsched_bench.crawlsched_env(tmp_path, tmp_path / "jobs.toml")
    assert env["XDG_CACHE_HOME"] == str(tmp_path / "xdg-cache")
    r = crawlsched_bench._time_cmd([sys.executable, "-c", "pass"], env, 2)
    assert r["cold_ms"] > 0 and len(r["ms"]) == 2 and r["median_ms"] > 0


def test_the_units_cli_hint_names_the_home_the_daemon_uses():
    from pathlib import Path

    unit = (Path(__file__).resolve().parent.parent / "contrib" / "crawlsched.service").read_text()
    hints = [line for line in unit.splitlines() if line.startswith("#") and "sudo -u crawlsched" in line]
    assert hints and all("CRAWLSCHED_HOME=/var/lib/crawlsched" in h and "CRAWLSCHED_JOBS=/etc/crawlsched/jobs.toml" in h
                         for h in hints)
    assert "Environment=CRAWLSCHED_JOBS=/etc/crawlsched/jobs.toml CRAWLSCHED_HOME=/var/lib/crawlsched" in unit
