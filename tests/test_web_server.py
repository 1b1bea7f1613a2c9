"""The web server (crawlsched/web/server.py): the API token, and a start and close that print nothing."""

from __future__ import annotations

import os
import threading

import pytest

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
    # waitress.queue's "Task queue depth is 1" only says both threads were still busy (a loaded machine)
    assert not [r for r in caplog.records if "unhandled" in r.getMessage()
                or (r.levelno >= logging.WARNING and r.name != "waitress.queue")]
    assert not [t for t in threading.enumerate() if t.name == "crawlsched-web"]
