"""The server: the address and the token it is given, and waitress in a background thread."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, MutableMapping

from crawlsched.errors import CrawlschedError, WebConfigError, _show
from crawlsched.web.app import create_app
from crawlsched.web.guards import _url_host, is_loopback, split_host

if TYPE_CHECKING:
    from crawlsched.control import SchedulerView
    from crawlsched.state import State
    from crawlsched.store import JobStore

SERVER_MAX_BODY = 1024 * 1024  # waitress cuts anything larger before Flask sees it
# A token on a non-loopback address has at least 128 bits (SPEC §7), judged by length and
# characters: hex digits only carry 4 bits each (32 needed), anything else at least 6, as
# base64 does (22 needed). `openssl rand -hex 16` and `secrets.token_urlsafe(16)` both pass.
HEX_TOKEN_RE = re.compile(r"[0-9A-Fa-f]+")
MIN_HEX_TOKEN = 32
MIN_TOKEN = 22
# Idle and half-open connections (slowloris) must not stop a normal request (SPEC §7: 500 of
# them). waitress stops accepting at ``connection_limit`` (default 100) until its cleanup closes
# channels idle for ``channel_timeout`` (default 120 s); a half-open request holds no thread
# (waitress buffers it), only a file descriptor. So: poll() instead of select() (select cannot
# watch descriptors above 1024), the soft descriptor limit raised to the hard one, a connection
# limit of what the descriptors allow after a reserve for the daemon's own files, crawls and
# commands, and idle channels closed after 30 s, looked for every 5 s.
MAX_CONNECTIONS = 4096
FD_RESERVE = 256
CHANNEL_TIMEOUT = 30
CLEANUP_INTERVAL = 5
ACCEPT_BATCH = 64  # connections accepted, and near the limit idle ones closed, per pass of the loop
TOKEN_RULE = (f"at least 128 bits: {MIN_HEX_TOKEN} hex characters, or {MIN_TOKEN} characters when it uses "
              "other letters, digits or symbols (base64); make one with `openssl rand -hex 16`")


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


def check_token_strength(token: str, bind: str, where: str = "the token") -> None:
    """Refuse (``WebConfigError``, exit 2) a token under 128 bits; never shows the token."""
    need = MIN_HEX_TOKEN if HEX_TOKEN_RE.fullmatch(token) else MIN_TOKEN
    if len(token) < need:
        raise WebConfigError(f"--http {bind}: {where} is too weak for a non-loopback address "
                             f"({len(token)} characters); it needs {TOKEN_RULE}")


def check_bind(bind: str, token: str | None, where: str = "the token") -> tuple[str, int]:
    """``--http`` with its token: a non-loopback address needs one of at least 128 bits (exit 2)."""
    host, port = parse_bind(bind)
    if is_loopback(host):
        return host, port
    if token is None:
        raise WebConfigError(
            f"--http {bind}: refusing to serve the API on a non-loopback address without a token "
            "(anyone who reaches it could add and run jobs); give --token-file PATH or set "
            "CRAWLSCHED_TOKEN, or bind 127.0.0.1")
    check_token_strength(token, bind, where)
    return host, port


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


def connection_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (at most 65536); the connections it leaves room for."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError):
            pass
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(100, min(MAX_CONNECTIONS, soft - FD_RESERVE))


def _accept_under_load(server: Any) -> None:
    """Accept up to ``ACCEPT_BATCH`` waiting connections per pass of the loop, and make room near the limit.

    waitress accepts one connection each time the listening socket is readable, and each pass
    of its loop visits every open channel: with n connections queued that is n passes of O(n)
    each, and a normal request queued behind 2,000 half-open ones waited over 10 s. Each accept
    still goes through waitress's own ``handle_accept`` (its options, errors and channel).
    Near the limit, ``_shedding_readable`` closes the longest-idle connections.
    """
    from waitress.server import BaseWSGIServer

    listeners = [server] if isinstance(server, BaseWSGIServer) else [
        s for s in server.map.values() if isinstance(s, BaseWSGIServer)]  # MultiSocketServer
    for listener in listeners:
        one = listener.handle_accept

        def handle_accept(one: Any = one, listener: Any = listener) -> None:
            for _ in range(ACCEPT_BATCH):
                before = len(listener._map)
                one()
                if len(listener._map) == before or len(listener._map) >= listener.adj.connection_limit:
                    return

        listener.handle_accept = handle_accept
        listener.readable = _shedding_readable(listener, listener.readable)


def _shedding_readable(listener: Any, readable: Any) -> Any:
    """Near the connection limit, close the longest-idle connections first, so a new one is accepted.

    Without this, past ``connection_limit`` (e.g. 5,000 half-open connections) waitress stops
    accepting until its cleanup closes channels idle for ``channel_timeout``: 30 s without an
    answer. A connection with a request being served, or output to send, is never chosen.
    """
    import heapq

    last_warning = [0.0]

    def shedding() -> bool:
        if listener.accepting and len(listener._map) + ACCEPT_BATCH >= listener.adj.connection_limit:
            channels = list(listener.active_channels.values())
            if sum(1 for c in channels if c.will_close) < ACCEPT_BATCH:
                idle = [c for c in channels if not (c.requests or c.will_close or c.total_outbufs_len)]
                for channel in heapq.nsmallest(ACCEPT_BATCH, idle, key=lambda c: c.last_activity):
                    channel.will_close = True
                now = time.monotonic()
                if now - last_warning[0] >= 60:
                    last_warning[0] = now
                    logging.getLogger("crawlsched").warning(
                        "web API: %d connections open (limit %d); closing the longest idle ones",
                        len(channels), listener.adj.connection_limit)
        return readable()

    return shedding


def start_server(store: JobStore, state: State, scheduler: SchedulerView, bind: str, *, home: Path,
                 log: logging.Logger, token: str | None = None) -> WebServer:
    """Serve the page and API on ``HOST:PORT`` (waitress, 4 threads) in a background thread, over
    the job store, the state and the scheduler's view (``create_app``).

    Refuses (``WebConfigError``, exit 2) a non-loopback address without a token, or with one
    under 128 bits (``check_bind``).
    ``token`` None falls back to ``$CRAWLSCHED_TOKEN``.
    """
    import waitress

    parse_bind(bind)
    token = check_token(token) if token is not None else load_token(None)
    host, port = check_bind(bind, token)
    listen_host = "127.0.0.1" if host == "localhost" else host  # one socket, one port
    app = create_app(store, state, scheduler, home=home, log=log, token=token, bind_host=host, bind_port=port)
    try:
        server = waitress.create_server(app, host=listen_host, port=port, threads=4, ident="crawlsched",
                                        max_request_body_size=SERVER_MAX_BODY, asyncore_use_poll=True,
                                        connection_limit=connection_limit(), channel_timeout=CHANNEL_TIMEOUT,
                                        cleanup_interval=CLEANUP_INTERVAL)
    except OSError as exc:
        raise CrawlschedError(f"--http {bind}: cannot listen there ({exc.strerror or exc})") from None
    _accept_under_load(server)
    real_port = int(server.effective_port)
    app.config["CRAWLSCHED_BIND"] = (host, real_port)
    handle = WebServer(server, host, real_port)
    handle.thread.start()
    app.config["CRAWLSCHED_MONITOR"].warm()  # the cards' strips, read once in the background
    log.info("web API on %s/scheduler%s", handle.url, " (token required)" if token else "")
    return handle
