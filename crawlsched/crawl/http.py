"""A URL job's attempt: GET each URL into the run's folder, within its limits, and say what happened.

One :func:`fetch_urls` call is one attempt. Its limits: a total deadline
(``timeout``) checked between chunks, connect and read timeouts, ``max_bytes``,
at most 10 redirects, each hop checked (only http and https; configured headers
never leave their origin), and, with ``public_only``, no private peer
(:mod:`crawlsched.crawl.public_only`). What it returns is an :class:`Outcome`;
nothing a target or the disk does raises out of it.

Messages name the URL by its *template* with a password masked, never by the
expanded URL or the text of a ``requests`` exception (which quotes it); see
:mod:`crawlsched.crawl.secrets`. ``requests`` is imported inside the functions:
the CLI imports this package and should not pay for it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from crawlsched import targets
from crawlsched.crawl.bodies import body_name, drop_if_empty, save_body, url_output
from crawlsched.crawl.outcome import DISK_FULL, Outcome, disk_message, secs
from crawlsched.crawl.public_only import public_only_adapter
from crawlsched.crawl.reasons import exception_chain, os_reason, tls_reason
from crawlsched.crawl.secrets import MissingVariable, expand_vars, expanded_values, redact_url, scrub

CHUNK = 64 * 1024
MAX_REDIRECTS = 10
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0


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
            raise _Fail(f"{shown}: timed out after {secs(self.timeout)}s", stop=True)
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
    secrets = [*expanded_values(urls, env), *expanded_values((headers or {}).values(), env), *extra.values()]
    if isinstance(verify, str) and not os.path.exists(verify):
        return Outcome(False, f"verify: CA bundle {verify} does not exist", permanent=True, output=output)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Outcome(False, disk_message(exc, f"cannot create {run_dir}"), output=None)

    import requests  # noqa: PLC0415 - only the run path pays for it
    from requests.structures import CaseInsensitiveDict  # noqa: PLC0415

    sent = CaseInsensitiveDict({"User-Agent": user_agent})
    sent.update(extra)  # a user's User-Agent wins
    with requests.Session() as session:  # trust_env stays True: proxies come from the environment
        if public_only:
            adapter = public_only_adapter()
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
        drop_if_empty(run_dir)
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
        return Outcome(False, scrub(message, secrets), permanent=any(f.permanent for f in att.failures),
                       interrupted=any(f.interrupted for f in att.failures),
                       retry_after=max(waits) if waits else None, **common)
    if total == 1 and not skipped:
        message = f"HTTP {att.status}, {att.saved} bytes from {redact_url(urls[0])}"
    else:
        message = f"saved {total - skipped} of {total} URLs, {att.saved} bytes"
        if skipped:
            message += f" ({skipped} saved by an earlier attempt)"
    return Outcome(True, scrub(message, secrets), **common)


def _fetch_one(att: _Attempt, url: str, shown: str, final: Path) -> None:
    """Fetch one expanded ``url`` into ``final``; raises :class:`_Fail` on any failure."""
    _check_url(url, shown)
    response = _get_following_redirects(att, url, shown)
    with response:
        length = _content_length(response)
        if length is not None and length > att.max_bytes:
            raise _Fail(f"{shown}: body larger than max_bytes ({att.max_bytes} bytes): Content-Length is {length}")
        att.saved += _save(att, response, shown, final, length)


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
        if leaves_origin(url, nxt):
            # Like curl without --location-trusted, but stricter: every header the user
            # configured (Authorization, X-Api-Key: ${KEY}, Cookie, …) is for the origin it was
            # written for. Another host or port, or https → http (clear text), gets none of them.
            headers = type(headers)({"User-Agent": att.headers.get("User-Agent", "")})
        url = nxt
    raise _Fail(f"{shown}: more than {MAX_REDIRECTS} redirects")


def leaves_origin(url: str, nxt: str) -> bool:
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
        raise _Fail(f"{shown}: connect timed out after {secs(connect)}s") from None
    except requests.exceptions.Timeout:
        raise _timeout_failure(att, read, shown) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
            requests.exceptions.URLRequired):
        raise _Fail(f"{shown}: malformed URL", permanent=True) from None
    except requests.exceptions.InvalidHeader:
        raise _Fail(f"{shown}: a header value is not allowed (line break or leading space)", permanent=True) from None
    except requests.exceptions.SSLError as exc:
        raise _Fail(f"{shown}: TLS error: {tls_reason(exc)}") from None
    except requests.exceptions.ProxyError as exc:
        raise _Fail(f"{shown}: proxy error: {os_reason(exc)}") from None
    except requests.exceptions.ConnectionError as exc:
        refused = next((c for c in exception_chain(exc) if isinstance(c, targets.NonPublicAddress)), None)
        if refused is not None:
            raise _Fail(f"{shown}: refused: {refused}", permanent=True) from None
        raise _Fail(f"{shown}: connection failed: {os_reason(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise _Fail(f"{shown}: request failed ({type(exc).__name__})") from None


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


def _save(att: _Attempt, response: Any, shown: str, final: Path, length: int | None) -> int:
    """Save the response's body as ``final`` (see :func:`bodies.save_body`); returns its size."""

    def disk_error(exc: OSError) -> _Fail:
        return _Fail(f"{shown}: {disk_message(exc, f'cannot write {final.name}')}", stop=exc.errno in DISK_FULL)

    return save_body(final, _chunks(att, response, shown, length), disk_error)


def _chunks(att: _Attempt, response: Any, shown: str, length: int | None) -> Iterator[bytes]:
    """The body, chunk by chunk, within the attempt's limits: deadline, cancel, max_bytes, Content-Length."""
    written = 0
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
        yield chunk
    received = response.raw.tell()  # bytes on the wire, before any gzip decoding
    if length is not None and received < length:
        raise _Fail(f"{shown}: body cut short: got {received} of {length} bytes")


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
        return _Fail(f"{shown}: timed out after {secs(att.timeout)}s", stop=True)
    return _Fail(f"{shown}: timed out after {secs(read)}s without data (read timeout)")
