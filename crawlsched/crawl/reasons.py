"""Why a request failed, in words that never quote the URL.

``requests`` and ``urllib3`` put the (expanded, possibly secret-bearing) URL into
their exceptions' text, so messages are never built from ``str(exc)``. These
functions walk the exception's causes for the part that names no URL: the OS
reason ("Connection refused") or the TLS verify message.
"""

from __future__ import annotations


def tls_reason(exc: BaseException) -> str:
    """The TLS failure's own words ("certificate verify failed: …"), else "handshake failed"."""
    import ssl  # noqa: PLC0415

    for cause in exception_chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
            return f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError) and cause.reason:
            return str(cause.reason)
    return "handshake failed"


def os_reason(exc: BaseException) -> str:
    """The innermost OS-level reason ("Connection refused"): it never quotes the URL."""
    reason = None
    for cause in exception_chain(exc):
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
    return reason or type(exc).__name__


def exception_chain(exc: BaseException) -> list[BaseException]:
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
