"""The server: the address and the token it is given, and waitress in a background thread."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from crawlsched.errors import CrawlschedError
from crawlsched.web.app import create_app
from crawlsched.web.guards import _url_host, is_loopback, split_host

if TYPE_CHECKING:
    from crawlsched.daemon import Daemon

SERVER_MAX_BODY = 1024 * 1024  # waitress cuts anything larger before Flask sees it


class WebConfigError(CrawlschedError):
    """``--http`` cannot be served as asked (non-loopback without a token, a bad address): exit 2."""

    exit_code = 2


def parse_bind(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5000"``, ``"[::1]:5000"``, ``"localhost:0"`` → (host, port)."""
    parsed = split_host(text) if text and text.strip() else None
    if parsed is None or parsed[1] is None or not parsed[0] or parsed[1] > 65535:
        raise WebConfigError(f"--http: {text!r} is not HOST:PORT (e.g. 127.0.0.1:5000)")
    return parsed[0], parsed[1]


def load_token(token_file: str | Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The API token: ``--token-file PATH`` (first line), else ``$CRAWLSCHED_TOKEN``, else None."""
    env = os.environ if environ is None else environ
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WebConfigError(f"--token-file: cannot read {token_file} ({exc})") from None
        lines = text.strip().splitlines()
        return check_token(lines[0].strip() if lines else "", f"--token-file {token_file}")
    if env.get("CRAWLSCHED_TOKEN", "").strip():  # set but empty counts as not set, as in the CLI
        return check_token(env["CRAWLSCHED_TOKEN"].strip(), "CRAWLSCHED_TOKEN")
    return None


def check_token(token: str, where: str = "token") -> str:
    if not token:
        raise WebConfigError(f"{where}: the token is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise WebConfigError(f"{where}: the token must be one word of printable characters")
    return token


class WebServer:
    """The running web server: ``port`` is the real one (``:0`` picks a free port); ``close()`` stops it."""

    def __init__(self, server: Any, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._closing = False
        self.thread = threading.Thread(target=self.run, name="crawlsched-web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    def run(self) -> None:
        try:
            self.server.run()
        except Exception:
            if not self._closing:
                logging.getLogger("crawlsched").exception("web server stopped")

    def close(self, timeout: float = 5.0) -> None:
        self._closing = True
        server = self.server
        # Close the listening socket and every connection; the loop ends when its map is empty.
        while server._map:
            for channel in list(server._map.values()):
                try:
                    channel.handle_close()
                except Exception:
                    server._map.pop(getattr(channel, "_fileno", None), None)
        server.task_dispatcher.shutdown(timeout=timeout)
        self.thread.join(timeout)


def start_server(daemon: Daemon, bind: str, token: str | None = None) -> WebServer:
    """Serve the page and API on ``HOST:PORT`` (waitress, 4 threads) in a background thread.

    Refuses (``WebConfigError``, exit 2) a non-loopback address without a token.
    ``token`` None falls back to ``$CRAWLSCHED_TOKEN``.
    """
    import waitress

    host, port = parse_bind(bind)
    token = check_token(token) if token is not None else load_token(None)
    if token is None and not is_loopback(host):
        raise WebConfigError(
            f"--http {bind}: refusing to serve the API on a non-loopback address without a token "
            "(anyone who reaches it could add and run jobs); give --token-file PATH or set "
            "CRAWLSCHED_TOKEN, or bind 127.0.0.1")
    listen_host = "127.0.0.1" if host == "localhost" else host  # one socket, one port
    app = create_app(daemon, token, host, port)
    try:
        server = waitress.create_server(app, host=listen_host, port=port, threads=4, ident="crawlsched",
                                        max_request_body_size=SERVER_MAX_BODY)
    except OSError as exc:
        raise CrawlschedError(f"--http {bind}: cannot listen there ({exc.strerror or exc})") from None
    real_port = int(server.effective_port)
    app.config["CRAWLSCHED_BIND"] = (host, real_port)
    handle = WebServer(server, host, real_port)
    handle.thread.start()
    daemon.log.info("web API on %s/scheduler%s", handle.url, " (token required)" if token else "")
    return handle
