"""One daemon per home: an exclusive ``flock`` on ``control.lock_path(home)`` holding its pid.

The kernel drops the lock when the process dies, however it dies (SIGKILL
included), so a stale lock never keeps a new daemon from starting.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from crawlsched.control import lock_path
from crawlsched.errors import DaemonLockError

__all__ = ["HomeLock"]


class HomeLock:
    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.fd: int | None = None

    def acquire(self, pid: int) -> None:
        """Take the lock, or refuse naming the pid that holds it (``DaemonLockError``)."""
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(self.home), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DaemonLockError(f"another crawlsched daemon (pid {holder}) is running for home {self.home}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
