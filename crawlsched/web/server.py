"""The server: the address and the token it is given, and waitress in a background thread."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, MutableMapping

from crawlsched.errors import CrawlschedError, _show
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
        raise WebConfigError(f"--http: {_show(text)} is not HOST:PORT (e.g. 127.0.0.1:5000)")
    return parsed[0], parsed[1]


def read_token_file(token_file: str | Path, error: type[CrawlschedError] | None = None) -> str:
    """The token in ``token_file``: the file's whole content, stripped; an empty file is refused.

    The one reading of ``--token-file`` (the ``daemon`` command and the web server share it).
    Raises ``error`` (default ``WebConfigError``, exit 2) if unreadable, empty or not one word.
    """
    err = error or WebConfigError
    try:
        text = Path(token_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise err(f"--token-file: cannot read {str(token_file)!r} ({reason})") from None
    token = text.strip()
    if not token:
        raise err(f"--token-file: {str(token_file)!r} is empty")
    try:
        return check_token(token, f"--token-file {token_file}")
    except WebConfigError as exc:
        raise err(str(exc)) from None


def load_token(token_file: str | Path | None, environ: MutableMapping[str, str] | None = None) -> str | None:
    """The API token: ``--token-file PATH`` (see ``read_token_file``), else ``$CRAWLSCHED_TOKEN``, else None.

    ``CRAWLSCHED_TOKEN`` is removed from ``environ`` (default ``os.environ``) once read, whichever
    source wins, so crawl commands started later never inherit the API token.
    """
    env = os.environ if environ is None else environ
    from_env = env.pop("CRAWLSCHED_TOKEN", None)
    if token_file:
        return read_token_file(token_file)
    if from_env is not None and from_env.strip():  # set but empty counts as not set, as in the CLI
        return check_token(from_env.strip(), "CRAWLSCHED_TOKEN")
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
        self._timeout = 5.0
        self.thread = threading.Thread(target=self.run, name="crawlsched-web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    def run(self) -> None:
        """waitress's loop, one pass at a time so ``close()`` can make it return; then shut down here.

        The shutdown runs in this thread (the loop's own), after the loop has returned, through
        waitress's public ``close()``: no channel is closed under a running ``select``.
        """
        from waitress import wasyncore

        server = self.server
        try:
            while not self._closing:
                wasyncore.loop(timeout=server.adj.asyncore_loop_timeout, map=self._socket_map,
                               use_poll=server.adj.asyncore_use_poll, count=1)
        except Exception:
            if not self._closing:
                logging.getLogger("crawlsched").exception("web server stopped")
        finally:
            self._shutdown()

    @property
    def _socket_map(self) -> dict:
        return getattr(self.server, "map", None) or self.server._map  # MultiSocketServer / TcpWSGIServer

    def _shutdown(self) -> None:
        from waitress import wasyncore

        socket_map = self._socket_map
        try:
            # The loop has returned, so nothing new is accepted. Let requests being serviced
            # finish first: a finishing task pulls the server's trigger, and a trigger closed
            # under it logs "Exception when servicing … Bad file descriptor". Bounded by the timeout.
            self.server.task_dispatcher.shutdown(timeout=self._timeout)
        finally:
            self.server.close()  # the listening socket(s) and the trigger
            wasyncore.close_all(socket_map, ignore_all=True)  # the open connections

    def close(self, timeout: float = 5.0) -> None:
        self._timeout = timeout
        self._closing = True
        if self.thread.is_alive():
            try:
                self.server.pull_trigger()  # wake the loop's select so it sees _closing
            except OSError:
                pass
            self.thread.join(timeout)
        else:
            self._shutdown()


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
