"""One attempt at a crawl: fetch URLs or run a command, and say what happened.

This is the only module that talks to crawl targets (SPEC §4). Everything it
returns is an :class:`Outcome`; it does not raise for anything a target or the
disk can do to it, so the daemon's retry loop stays a loop over outcomes.

Secrets (SPEC §7): URLs and header values are *templates* (``${VAR}``), expanded
only right before the request. Every message is built from the template (with a
userinfo password masked), never from the expanded URL, a header value or the
text of a ``requests`` exception (those quote the expanded URL); as a last
guard :func:`_scrub` blanks any expanded value that still slipped in.

``requests`` is imported inside :func:`fetch_urls`: the CLI imports this module
for :func:`redact_url` and :func:`run_stamp` and should not pay for it.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from crawlsched import procs, targets
from crawlsched.errors import MissingVariable
from crawlsched.urls import SECRET_PARAM_RE, redact_url  # noqa: F401 - redact_url is part of this module's API

MAX_MESSAGE = 300
CHUNK = 64 * 1024
MAX_REDIRECTS = 10
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
STAMP_RE = re.compile(r"^\d{8}T\d{6}(?:_\d{3})?Z")
#: What follows a run's key in a run-log name: ``-a2.log``, ``-a3-on_failure.log``.
ATTEMPT_SUFFIX_RE = re.compile(r"-a\d+(?:-on_failure)?$")
#: Spawn errors that a retry cannot fix; anything else (EAGAIN, ENOMEM, EMFILE, …) is retried.
PERMANENT_SPAWN_ERRORS = {errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR}
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@dataclass(frozen=True)
class Outcome:
    """What one attempt did. ``message`` is one line of at most 300 characters."""

    ok: bool
    message: str
    permanent: bool = False  #: retrying cannot help (4xx, malformed URL, missing ${VAR}, …)
    interrupted: bool = False  #: stopped by the cancel event (shutdown, job removed)
    http_status: int | None = None  #: the last HTTP status seen
    exit_code: int | None = None
    bytes: int | None = None  #: bytes of the bodies saved by this attempt
    output: str | None = None  #: the body file (one URL), the run's folder (several), or the command's log
    retry_after: float | None = None  #: seconds, from a Retry-After header

    def __post_init__(self) -> None:
        # Enforced here, not at each call site, so no path can put a multi-line
        # traceback or a megabyte of output into the state database.
        object.__setattr__(self, "message", _one_line(self.message))


def expand_vars(template: str, env: Mapping[str, str]) -> str:
    """Replace each ``${VAR}`` with ``env[VAR]``; other ``$`` text is left alone."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise MissingVariable(name)
        return env[name]

    return VAR_RE.sub(value, template)


def run_stamp(scheduled_for: datetime) -> str:
    """A run's folder / log name: ``20251108T020500Z`` (UTC, sorts by time, file-safe).

    A time with a fractional second (a manual fire, ``crawlsched run``) gets its
    milliseconds: ``20251108T020500_123Z``. The separator is ``_`` rather than
    ``.`` so that names still sort by time: ``_`` sorts after ``Z``, so the
    whole second ``…020500Z`` comes before ``…020500_123Z``.
    """
    if scheduled_for.tzinfo is None or scheduled_for.utcoffset() is None:
        raise ValueError(f"scheduled_for: {scheduled_for.isoformat()} has no time zone (an aware datetime is needed)")
    utc = scheduled_for.astimezone(timezone.utc)
    if utc.microsecond:
        return utc.strftime("%Y%m%dT%H%M%S") + f"_{utc.microsecond // 1000:03d}Z"
    return utc.strftime("%Y%m%dT%H%M%SZ")


def run_key(name: str) -> str:
    """The run an entry of a data or run-log folder belongs to: its name without ``-aN[-on_failure].log``."""
    return ATTEMPT_SUFFIX_RE.sub("", name.removesuffix(".log"))


def body_name(index: int, url_template: str) -> str:
    """The final file name of URL number ``index``: ``00-example.com-news.body``.

    Built from the *template* (never the expanded URL, which may hold a secret)
    and from host + path only (a query may hold one too). Deterministic, so a
    retry of the same run finds what an earlier attempt saved.
    """
    rest = url_template.partition("://")[2] or url_template
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    host, _, path = rest.partition("/")
    host = host.rpartition("@")[2]  # drop user:password@
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{host}/{path}")
    slug = re.sub(r"[-.]{2,}", "-", slug).strip("-.")[:60].rstrip("-.")
    return f"{index:02d}-{slug or 'url'}.body"


def url_output(urls: Sequence[str], run_dir: Path) -> str:
    """A URL run's ``output``: the body file when the job fetches one URL, else the run's folder."""
    return str(run_dir / body_name(0, urls[0])) if len(urls) == 1 else str(run_dir)


def _drop_if_empty(run_dir: Path) -> None:
    """An attempt that saved nothing leaves no empty ``data/<job>/<run>/`` behind (a retry makes it again)."""
    try:
        run_dir.rmdir()  # only succeeds on an empty folder
    except OSError:
        pass


def bodies_complete(urls: Sequence[str], run_dir: Path) -> bool:
    """True when every URL's final body file is in ``run_dir`` (the rename is the commit point)."""
    return all((run_dir / body_name(i, url)).is_file() for i, url in enumerate(urls))


def remove_partial_bodies(run_dir: Path) -> int:
    """Delete the ``.<body>.part`` files of a run whose chain ended: no attempt will finish them.

    An attempt removes its own part file on any error; only a process killed mid-body leaves
    one, and the next attempt of the same run overwrites it. Returns how many were removed.
    """
    removed = 0
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".body.part"):
            try:
                entry.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def prune_runs(job_dir: Path, keep: int) -> int:
    """Delete all but the newest ``keep`` runs (body folders and ``.log`` files) in ``job_dir``.

    Runs are ordered by name, which starts with the run stamp. Only entries
    whose name starts with a run stamp are touched, so nothing else a person
    put there is lost. Every file of one run counts once: a folder, and the
    logs of each attempt and of ``on_failure`` (``<stamp>-a1.log``,
    ``<stamp>-a2.log``, ``<stamp>-a2-on_failure.log``). Returns the number of
    entries deleted.
    """
    if keep < 0:
        raise ValueError(f"keep: {keep} must be 0 or more")
    try:
        entries = [p for p in job_dir.iterdir() if STAMP_RE.match(p.name)]
    except FileNotFoundError:
        return 0
    runs = sorted({run_key(p.name) for p in entries if p.is_dir() or p.name.endswith(".log")})
    doomed = set(runs[: max(len(runs) - keep, 0)])
    deleted = 0
    for entry in entries:
        if run_key(entry.name) not in doomed:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.endswith(".log"):
            entry.unlink(missing_ok=True)
        else:
            continue
        deleted += 1
    return deleted


# --- URL jobs -----------------------------------------------------------------


class _Fail(Exception):
    """Ends the fetch of one URL; carries the Outcome fields of the failure."""

    def __init__(self, message: str, *, permanent: bool = False, interrupted: bool = False,
                 retry_after: float | None = None, stop: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.interrupted = interrupted
        self.retry_after = retry_after
        self.stop = stop  #: the other URLs cannot fare better (deadline, disk, cancel)


@dataclass
class _Attempt:
    """The settings and running totals shared by the URLs of one attempt."""

    session: Any
    headers: Any  # requests' CaseInsensitiveDict
    timeout: float
    deadline: float
    max_bytes: int
    verify: bool | str
    cancel: threading.Event | None
    status: int | None = None
    saved: int = 0
    failures: list[_Fail] = field(default_factory=list)

    def remaining(self, shown: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Fail(f"{shown}: timed out after {_secs(self.timeout)}s", stop=True)
        return left

    def check_cancel(self, shown: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise _Fail(f"{shown}: interrupted", interrupted=True, stop=True)


def fetch_urls(urls: Sequence[str], run_dir: Path, *, headers: Mapping[str, str] | None = None,
               timeout: float = 300, max_bytes: int = 100 * 1024 * 1024, verify: bool | str = True,
               user_agent: str = "crawlsched/0.1.0", env: Mapping[str, str] | None = None,
               cancel: threading.Event | None = None, public_only: bool = False) -> Outcome:
    """GET each URL template into ``run_dir``; URLs saved by an earlier attempt are skipped.

    ``public_only`` (``http_targets = "public"``): every connection, redirects included, must
    reach a public address (``crawlsched.targets``), checked once connected, before sending.

    The attempt succeeds when every body is saved. It goes on past a failed
    URL (so a retry has less to do) unless the failure dooms the rest too:
    the deadline, a full disk, or the cancel event.
    """
    env = os.environ if env is None else env
    output = url_output(urls, run_dir) if urls else str(run_dir)
    try:
        targets = [expand_vars(url, env) for url in urls]
        extra = {name: expand_vars(value, env) for name, value in (headers or {}).items()}
    except MissingVariable as exc:
        return Outcome(False, str(exc), permanent=True, output=output)
    secrets = [*_expanded_values(urls, env), *_expanded_values((headers or {}).values(), env), *extra.values()]
    if isinstance(verify, str) and not os.path.exists(verify):
        return Outcome(False, f"verify: CA bundle {verify} does not exist", permanent=True, output=output)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Outcome(False, _disk_message(exc, f"cannot create {run_dir}"), output=None)

    import requests  # noqa: PLC0415 - only the run path pays for it
    from requests.structures import CaseInsensitiveDict  # noqa: PLC0415

    sent = CaseInsensitiveDict({"User-Agent": user_agent})
    sent.update(extra)  # a user's User-Agent wins
    with requests.Session() as session:  # trust_env stays True: proxies come from the environment
        if public_only:
            adapter = _public_only_adapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        att = _Attempt(session, sent, timeout, time.monotonic() + timeout, max_bytes, verify, cancel)
        skipped = 0
        for index, (template, url) in enumerate(zip(urls, targets)):
            final = run_dir / body_name(index, template)
            if final.is_file():
                skipped += 1
                continue
            shown = redact_url(template)
            try:
                _fetch_one(att, url, shown, final)
            except _Fail as fail:
                att.failures.append(fail)
                if fail.stop:
                    break
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the daemon; its text may hold secrets
                att.failures.append(_Fail(f"{shown}: unexpected error ({type(exc).__name__})"))
    if created:
        _drop_if_empty(run_dir)
    if not run_dir.exists() or len(urls) == 1 and not Path(output).is_file():
        output = None  # nothing saved: no body, no folder to point at
    return _url_outcome(att, len(urls), skipped, output, secrets, urls)


def _url_outcome(att: _Attempt, total: int, skipped: int, output: str | None, secrets: list[str],
                 urls: Sequence[str]) -> Outcome:
    common = {"http_status": att.status, "bytes": att.saved, "output": output}
    if att.failures:
        first = att.failures[0]
        message = first.message
        if len(att.failures) > 1:
            message = f"{len(att.failures)} of {total} URLs failed; first: {message}"
        waits = [f.retry_after for f in att.failures if f.retry_after is not None]
        return Outcome(False, _scrub(message, secrets), permanent=any(f.permanent for f in att.failures),
                       interrupted=any(f.interrupted for f in att.failures),
                       retry_after=max(waits) if waits else None, **common)
    if total == 1 and not skipped:
        message = f"HTTP {att.status}, {att.saved} bytes from {redact_url(urls[0])}"
    else:
        message = f"saved {total - skipped} of {total} URLs, {att.saved} bytes"
        if skipped:
            message += f" ({skipped} saved by an earlier attempt)"
    return Outcome(True, _scrub(message, secrets), **common)


def _fetch_one(att: _Attempt, url: str, shown: str, final: Path) -> None:
    """Fetch one expanded ``url`` into ``final``; raises :class:`_Fail` on any failure."""
    _check_url(url, shown)
    response = _get_following_redirects(att, url, shown)
    with response:
        length = _content_length(response)
        if length is not None and length > att.max_bytes:
            raise _Fail(f"{shown}: body larger than max_bytes ({att.max_bytes} bytes): Content-Length is {length}")
        att.saved += _stream_to_file(att, response, shown, final, length)


def _check_url(url: str, shown: str) -> None:
    from urllib.parse import urlsplit  # noqa: PLC0415

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _Fail(f"{shown}: malformed URL", permanent=True) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _Fail(f"{shown}: malformed URL (only http and https are fetched)", permanent=True)
    if not parts.hostname:
        raise _Fail(f"{shown}: malformed URL (no host)", permanent=True)


def _get_following_redirects(att: _Attempt, url: str, shown: str) -> Any:
    """GET ``url``, following at most 10 redirects ourselves; returns a streaming 2xx response.

    Redirects are followed here rather than by ``requests`` so that every hop
    is checked: a ``file:`` or other non-http(s) target is refused (permanent),
    and credentials are not handed to another host.
    """
    from urllib.parse import urljoin, urlsplit  # noqa: PLC0415

    headers = att.headers.copy()
    for _hop in range(MAX_REDIRECTS + 1):
        att.check_cancel(shown)
        response = _request(att, url, headers, shown)
        att.status = response.status_code
        target = att.session.get_redirect_target(response)
        if target is None:
            if 200 <= response.status_code < 300:
                return response
            response.close()
            raise _status_failure(response, shown)
        response.close()
        nxt = urljoin(url, target)
        scheme = urlsplit(nxt).scheme.lower()
        if scheme not in ("http", "https"):
            raise _Fail(f"{shown}: redirect to a {scheme or 'schemeless'} URL refused (only http and https)",
                        permanent=True)
        if _leaves_origin(url, nxt):
            # Like curl without --location-trusted, but stricter: every header the user
            # configured (Authorization, X-Api-Key: ${KEY}, Cookie, …) is for the origin it was
            # written for. Another host or port, or https → http (clear text), gets none of them.
            headers = type(headers)({"User-Agent": att.headers.get("User-Agent", "")})
        url = nxt
    raise _Fail(f"{shown}: more than {MAX_REDIRECTS} redirects")


def _leaves_origin(url: str, nxt: str) -> bool:
    """A redirect from ``url`` to ``nxt`` changes host or port, or downgrades https to http."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    old, new = urlsplit(url), urlsplit(nxt)
    defaults = {"http": 80, "https": 443}

    def port(parts: Any) -> int | None:
        try:
            return parts.port or defaults.get(parts.scheme.lower())
        except ValueError:
            return None

    if (old.hostname or "").lower() != (new.hostname or "").lower() or port(old) != port(new):
        return True
    return old.scheme.lower() == "https" and new.scheme.lower() != "https"


def _request(att: _Attempt, url: str, headers: Any, shown: str) -> Any:
    import requests  # noqa: PLC0415

    left = att.remaining(shown)
    connect, read = min(CONNECT_TIMEOUT, left), min(READ_TIMEOUT, left)
    try:
        return att.session.get(url, headers=headers, stream=True, allow_redirects=False,
                               timeout=(connect, read), verify=att.verify)
    except requests.exceptions.ConnectTimeout:
        raise _Fail(f"{shown}: connect timed out after {_secs(connect)}s") from None
    except requests.exceptions.Timeout:
        raise _timeout_failure(att, read, shown) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
            requests.exceptions.URLRequired):
        raise _Fail(f"{shown}: malformed URL", permanent=True) from None
    except requests.exceptions.InvalidHeader:
        raise _Fail(f"{shown}: a header value is not allowed (line break or leading space)", permanent=True) from None
    except requests.exceptions.SSLError as exc:
        raise _Fail(f"{shown}: TLS error: {_tls_reason(exc)}") from None
    except requests.exceptions.ProxyError as exc:
        raise _Fail(f"{shown}: proxy error: {_os_reason(exc)}") from None
    except requests.exceptions.ConnectionError as exc:
        refused = next((c for c in _chain(exc) if isinstance(c, targets.NonPublicAddress)), None)
        if refused is not None:
            raise _Fail(f"{shown}: refused: {refused}", permanent=True) from None
        raise _Fail(f"{shown}: connection failed: {_os_reason(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise _Fail(f"{shown}: request failed ({type(exc).__name__})") from None


_PUBLIC_ONLY: list[Any] = []  # the adapter class, built once on first use (requests is imported lazily)


def _public_only_adapter() -> Any:
    """A requests adapter whose connections refuse, once connected and before sending, a non-public peer.

    The peer is checked on the socket itself, so what DNS answered at that moment (rebinding)
    and where a redirect led are both covered. Through a proxy the peer is the proxy.
    """
    if not _PUBLIC_ONLY:
        from requests.adapters import HTTPAdapter  # noqa: PLC0415
        from urllib3.connection import HTTPConnection, HTTPSConnection  # noqa: PLC0415
        from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool  # noqa: PLC0415

        def checked(base: type) -> type:
            class Checked(base):  # type: ignore[misc, valid-type]
                def _new_conn(self) -> Any:
                    sock = super()._new_conn()
                    try:
                        address = str(sock.getpeername()[0])
                    except OSError:
                        address = ""
                    if not targets.is_public(address):
                        sock.close()
                        raise targets.NonPublicAddress(str(self.host), address)
                    return sock

            return Checked

        class Pool(HTTPConnectionPool):
            ConnectionCls = checked(HTTPConnection)

        class TLSPool(HTTPSConnectionPool):
            ConnectionCls = checked(HTTPSConnection)

        pools = {"http": Pool, "https": TLSPool}

        class PublicOnly(HTTPAdapter):
            def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                super().init_poolmanager(*args, **kwargs)
                self.poolmanager.pool_classes_by_scheme = pools

            def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
                manager = super().proxy_manager_for(proxy, **kwargs)
                manager.pool_classes_by_scheme = pools
                return manager

        _PUBLIC_ONLY.append(PublicOnly)
    return _PUBLIC_ONLY[0]()


def _status_failure(response: Any, shown: str) -> _Fail:
    code = response.status_code
    permanent = 400 <= code < 500 and code not in (408, 429)
    return _Fail(f"HTTP {code} from {shown}", permanent=permanent,
                 retry_after=parse_retry_after(response.headers.get("Retry-After")))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime  # noqa: PLC0415

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means it said "-0000"
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def _content_length(response: Any) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _stream_to_file(att: _Attempt, response: Any, shown: str, final: Path, length: int | None) -> int:
    """Stream the body to ``.<final>.part``, fsync, rename; returns its size. No partial file survives."""
    part = final.with_name(f".{final.name}.part")
    written = 0
    try:
        with open(part, "wb") as out:
            while True:
                # Checked per chunk: a server dripping a byte a second never trips the read timeout.
                att.check_cancel(shown)
                att.remaining(shown)
                chunk = _read_chunk(att, response, shown, length)
                if not chunk:
                    break
                written += len(chunk)
                if written > att.max_bytes:
                    raise _Fail(f"{shown}: body larger than max_bytes ({att.max_bytes} bytes)")
                out.write(chunk)
            received = response.raw.tell()  # bytes on the wire, before any gzip decoding
            if length is not None and received < length:
                raise _Fail(f"{shown}: body cut short: got {received} of {length} bytes")
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        part.unlink(missing_ok=True)
        disk_full = exc.errno in DISK_FULL
        raise _Fail(f"{shown}: {_disk_message(exc, f'cannot write {final.name}')}", stop=disk_full) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written


def _read_chunk(att: _Attempt, response: Any, shown: str, length: int | None) -> bytes:
    """Up to CHUNK bytes, as soon as *any* arrive (``read1``), so the deadline check runs often."""
    import requests  # noqa: PLC0415
    import urllib3  # noqa: PLC0415

    try:
        return response.raw.read1(CHUNK, decode_content=True)
    except (urllib3.exceptions.ReadTimeoutError, requests.exceptions.Timeout):
        raise _timeout_failure(att, READ_TIMEOUT, shown) from None
    except urllib3.exceptions.DecodeError:
        raise _Fail(f"{shown}: body could not be decoded (bad Content-Encoding)") from None
    except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException):
        received = response.raw.tell()
        if length is not None and received < length:
            raise _Fail(f"{shown}: body cut short: got {received} of {length} bytes") from None
        raise _Fail(f"{shown}: connection broken while reading the body") from None


def _timeout_failure(att: _Attempt, read: float, shown: str) -> _Fail:
    if att.deadline - time.monotonic() <= 0.5:
        return _Fail(f"{shown}: timed out after {_secs(att.timeout)}s", stop=True)
    return _Fail(f"{shown}: timed out after {_secs(read)}s without data (read timeout)")


def _tls_reason(exc: BaseException) -> str:
    import ssl  # noqa: PLC0415

    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
            return f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError) and cause.reason:
            return str(cause.reason)
    return "handshake failed"


def _os_reason(exc: BaseException) -> str:
    """The innermost OS-level reason ("Connection refused"): it never quotes the URL."""
    reason = None
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
    return reason or type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes/contexts and urllib3's ``reason`` attributes, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop(0)
        if cur is None or any(cur is s for s in seen) or len(seen) > 20:
            continue
        seen.append(cur)
        todo += [getattr(cur, "reason", None) if isinstance(getattr(cur, "reason", None), BaseException) else None,
                 cur.__cause__, cur.__context__]
        todo += [a for a in cur.args if isinstance(a, BaseException)]
    return seen


def _disk_message(exc: OSError, what: str) -> str:
    if exc.errno in DISK_FULL:
        return f"disk full ({errno.errorcode.get(exc.errno, exc.errno)}): {what}"
    return f"{what}: {exc.strerror or type(exc).__name__}"


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable: it is the commit point after a crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _expanded_values(templates: Any, env: Mapping[str, str]) -> list[str]:
    return [env[name] for t in templates for name in VAR_RE.findall(t) if name in env]


def _scrub(message: str, secrets: list[str]) -> str:
    """Last guard: blank any expanded value that reached a message (short ones would blank noise)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return message


# --- command jobs -------------------------------------------------------------


#: What a command is started through when its group must be recorded first: ``sh`` waits for
#: one line on its stdin (the runner's go-ahead, written once the group is in the database),
#: then becomes the command. The command's words are ``sh``'s arguments ("$@"), never parsed
#: by it. When the daemon dies before the go-ahead, the pipe ends and the command never runs.
GATE = ("/bin/sh", "-c", 'read -r _ || exit 111; exec "$@" </dev/null', "crawlsched-gate")


def run_command(command: str, log_path: Path, *, env: Mapping[str, str], timeout: float = 300,
                cancel: threading.Event | None = None, kill_after: float = 5.0,
                on_spawn: Callable[[int], object] | None = None) -> Outcome:
    """Run ``command`` as an argument list (never a shell), output appended to ``log_path``.

    It gets its own session, so its whole process group (grandchildren too)
    can be stopped on timeout or cancel: SIGTERM, then SIGKILL ``kill_after``
    seconds later if anything in the group is still alive. With ``on_spawn(pgid)``
    the command does not start until that call returned: the runner records the
    group there, so a daemon killed at any moment leaves either no command, or
    one whose group the next daemon knows and stops (:data:`GATE`).
    """
    output = str(log_path)
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return Outcome(False, f"command does not parse: {exc}", permanent=True, output=output)
    if not argv:
        return Outcome(False, "command is empty", permanent=True, output=output)
    gated = on_spawn is not None
    if gated:
        refused = _spawn_check(argv[0], env, output)
        if refused is not None:
            return refused
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed below, after the child is gone
    except OSError as exc:
        return Outcome(False, _disk_message(exc, f"cannot open log {log_path}"), output=output)
    with log:
        start = log.seek(0, os.SEEK_END)
        try:
            proc = subprocess.Popen([*GATE, *argv] if gated else argv, stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True,
                                    close_fds=True)
        except FileNotFoundError:
            return Outcome(False, f"command not found: {argv[0]}", permanent=True, output=output)
        except PermissionError:
            return Outcome(False, f"command is not executable: {argv[0]}", permanent=True, output=output)
        except OSError as exc:
            # Only what a retry cannot fix is permanent; EAGAIN, ENOMEM, EMFILE … pass.
            return Outcome(False, f"cannot start {argv[0]}: {exc.strerror or type(exc).__name__}",
                           permanent=exc.errno in PERMANENT_SPAWN_ERRORS, output=output)
        try:
            if on_spawn is not None:
                _fault_pause()
                try:
                    on_spawn(proc.pid)
                except Exception:  # noqa: BLE001 - a failed note must not fail the command
                    pass
                _go_ahead(proc)
            stopped = _wait(proc, timeout, cancel)
        except BaseException:
            # Ctrl-C, SIGTERM turned into an exception, a bug: the child runs in its own
            # session, so nobody else would stop it. Stop its group, note it, re-raise.
            _stop_group(proc, kill_after)
            try:
                log.write(b"[crawlsched] interrupted; process group stopped\n")
            except OSError:
                pass
            raise
        if stopped:
            _stop_group(proc, kill_after)
            note = "interrupted" if stopped == "cancel" else f"timed out after {_secs(timeout)}s"
            log.write(f"[crawlsched] {note}; process group stopped\n".encode())
            return Outcome(False, note, interrupted=stopped == "cancel", exit_code=proc.returncode, output=output)
    code = proc.returncode
    message = _last_line(log_path, start) or f"exit code {code}"
    return Outcome(code == 0, message, exit_code=code, output=output)


def _spawn_check(program: str, env: Mapping[str, str], output: str) -> Outcome | None:
    """What Popen would say of a program that cannot start, said before the gate execs it."""
    if "/" in program:
        if not os.path.exists(program):
            return Outcome(False, f"command not found: {program}", permanent=True, output=output)
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            return Outcome(False, f"command is not executable: {program}", permanent=True, output=output)
        return None
    if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        return Outcome(False, f"command not found: {program}", permanent=True, output=output)
    return None


def _go_ahead(proc: subprocess.Popen[bytes]) -> None:
    """Let the gated command start (see GATE)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"\n")
        proc.stdin.close()
    except OSError:
        pass  # it is gone already (stopped from outside): _wait sees its exit


def _fault_pause() -> None:
    """A test hook: ``CRAWLSCHED_FAULT_SPAWN_PAUSE`` seconds between spawning a command and
    recording its group, so that a test can kill the daemon in that window."""
    pause = os.environ.get("CRAWLSCHED_FAULT_SPAWN_PAUSE")
    if pause:
        time.sleep(float(pause))


def _wait(proc: subprocess.Popen[bytes], timeout: float, cancel: threading.Event | None) -> str | None:
    """Wait for the child; returns "timeout" or "cancel" when it has to be stopped, else None."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        try:
            proc.wait(timeout=min(0.1, left))
            return None
        except subprocess.TimeoutExpired:
            pass
        if cancel is not None and cancel.is_set():
            return "cancel"


def _stop_group(proc: subprocess.Popen[bytes], kill_after: float) -> None:
    """SIGTERM the group, give it ``kill_after`` s, then SIGKILL whatever is left."""
    pgid = proc.pid  # start_new_session: the child leads its own group
    procs.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + kill_after
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or its zombie keeps the group "alive"
        if not procs.group_alive(pgid):
            break
        time.sleep(0.05)
    else:
        procs.killpg(pgid, signal.SIGKILL)
    proc.wait()


def _last_line(log_path: Path, start: int) -> str:
    """The last non-empty line this run wrote to the log (only its last 64 KiB are read)."""
    try:
        with open(log_path, "rb") as log:
            end = log.seek(0, os.SEEK_END)
            log.seek(max(start, end - CHUNK))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- small helpers --------------------------------------------------------------


def _secs(value: float) -> str:
    return f"{value:g}"


def _one_line(text: str) -> str:
    """Collapse to one line of at most MAX_MESSAGE characters (control characters removed)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
