"""The sd_notify protocol, without a dependency.

Under systemd (``Type=notify``) the manager passes a Unix datagram socket in
``$NOTIFY_SOCKET``; the daemon sends ``KEY=VALUE`` lines to it: ``READY=1`` once
the jobs are loaded, ``STOPPING=1`` on SIGTERM, ``WATCHDOG=1`` periodically,
``STATUS=...`` for ``systemctl status``. Outside systemd every call is a cheap
no-op returning False, so the daemon calls these unconditionally.

Notification is best effort: a socket error is swallowed (returns False),
because losing a status line must never take the scheduler down.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = [
    "notify",
    "ready",
    "reloading",
    "stopping",
    "status",
    "watchdog",
    "watchdog_interval",
]

# A datagram send blocks only when systemd's receive queue is full; never let
# that stall the scheduler for long.
_SEND_TIMEOUT = 1.0


def _address() -> str | None:
    """``$NOTIFY_SOCKET`` as a socket address, or None when not usable.

    ``@name`` is Linux's abstract namespace, spelled with a leading NUL in the
    address. Other forms (``vsock:``) are not supported.
    """
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if addr.startswith("@"):
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    return None


def notify(message: str) -> bool:
    """Send ``message`` (``KEY=VALUE`` lines) to systemd.

    Returns True when the datagram was sent, False when ``$NOTIFY_SOCKET`` is
    unset or unusable or the send failed. Never raises on socket errors.
    """
    addr = _address()
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT)
            sock.sendto(message.encode("utf-8"), addr)
    except OSError:
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """``READY=1``: start-up is done (for ``Type=notify`` units), and after a
    reload to say it is over."""
    if status_text is None:
        return notify("READY=1")
    return notify("READY=1\n" + _status_line(status_text))


def reloading() -> bool:
    """``RELOADING=1`` (with the ``MONOTONIC_USEC`` newer systemd wants): a
    SIGHUP reload has begun; send :func:`ready` when it is done."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> bool:
    """``STOPPING=1``: shutdown has begun (running attempts get their grace)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """``STATUS=<text>``: one line shown by ``systemctl status``."""
    return notify(_status_line(text))


def watchdog() -> bool:
    """``WATCHDOG=1``: the keep-alive ping; send every :func:`watchdog_interval`."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings, or None when no watchdog is asked for.

    ``$WATCHDOG_USEC`` is the timeout systemd enforces (``WatchdogSec=``);
    we ping at half of it, as sd_watchdog_enabled(3) advises. When
    ``$WATCHDOG_PID`` is set and names another process, the watchdog is
    meant for that process, not for us.
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000 / 2


def _status_line(text: str) -> str:
    # The protocol is newline-separated assignments: a newline in the text
    # would end the status early and be read as another (bogus) assignment.
    return "STATUS=" + " ".join(text.splitlines())
