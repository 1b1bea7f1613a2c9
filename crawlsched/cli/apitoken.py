"""The API token's way into ``crawlsched daemon`` without staying in its environment.

``CRAWLSCHED_TOKEN`` in the environment is visible in ``/proc/<pid>/environ`` to every
command job (same user): the daemon starts again (same pid) without it, the token
crossing the ``execve`` in an anonymous file (memfd) named by ``CRAWLSCHED_TOKEN_FD``,
read and closed at once, before any job runs.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TOKEN_FD", "_reexec_without_token", "_token_handed_over"]

TOKEN_FD = "CRAWLSCHED_TOKEN_FD"  # set only across the daemon's own re-exec: the fd its token is in


def _reexec_without_token() -> None:
    """With ``CRAWLSCHED_TOKEN`` in the environment, start again (same pid) without it.

    Removing it from ``os.environ`` is not enough: ``/proc/<pid>/environ`` shows the
    environment the process was started with, and a command job runs as the same user,
    so ``cat /proc/$PPID/environ`` would print the token. The token crosses the
    ``execve`` in an anonymous file (memfd) whose number is in ``CRAWLSCHED_TOKEN_FD``;
    it is read and closed at once, before any job runs. The pid stays the same, so
    systemd's main pid and ``NOTIFY_SOCKET`` are unaffected.
    """
    import sys

    token = os.environ.get("CRAWLSCHED_TOKEN")
    if token is None or Path(sys.argv[0]).name not in ("crawlsched", "__main__.py"):
        return  # nothing to hide, or not the program itself (a test calling the command in-process)
    environ = {k: v for k, v in os.environ.items() if k not in ("CRAWLSCHED_TOKEN", TOKEN_FD)}
    fd = None
    try:
        fd = os.memfd_create("crawlsched-token", 0)  # no MFD_CLOEXEC: it must cross the exec
        os.write(fd, token.encode())
        os.lseek(fd, 0, os.SEEK_SET)
        environ[TOKEN_FD] = str(fd)
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
    except (OSError, AttributeError) as exc:  # no memfd (not Linux) or no exec: the old way, said plainly
        if fd is not None:
            os.close(fd)
        print(f"crawlsched: warning: could not restart without CRAWLSCHED_TOKEN in the environment ({exc});"
              " commands can read it from /proc; prefer --token-file", file=sys.stderr)


def _token_handed_over() -> str | None:
    """The token the re-exec passed in ``CRAWLSCHED_TOKEN_FD`` (read once, fd closed), else None."""
    number = os.environ.pop(TOKEN_FD, None)
    if number is None or not number.isdigit():
        return None
    fd = int(number)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
