"""Writing the job file safely (SPEC §7): one writer at a time, and a reader sees the old file or the new one.

- ``locked``: an exclusive ``flock`` on a separate lock file next to the file (a lock
  on jobs.toml itself is lost when the file is replaced by a rename).
- ``write_text``: temp file in the same folder, fsync, rename, fsync the folder. A
  job file that is a symbolic link (as configuration management deploys it) stays
  one: the lock, the temp file and the rename are next to the file it points at.
  A UTF-8 byte-order mark the file had is written again.
- ``write_copy``: the daemon's last good copy, temp file and rename.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from crawlsched.jobfile import BOM

__all__ = ["BOM_BYTES", "lock_path", "locked", "target", "write_copy", "write_text"]

BOM_BYTES = BOM.encode("utf-8")


def target(path: Path) -> Path:
    """The file that holds the jobs: ``path``, or the file its symbolic links lead to (it may not exist yet)."""
    return Path(os.path.realpath(path))


def lock_path(path: Path) -> Path:
    where = target(path)
    return where.with_name("." + where.name + ".lock")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the write lock of ``path``: one writer at a time across processes.

    The lock file sits next to the link's target, so writers through the
    link and writers of the target itself share it. Should the link be
    pointed elsewhere while we waited, the lock of the new target is taken.
    """
    for _ in range(10):
        lock = lock_path(path)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if lock_path(path) == lock:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Temp file, fsync, rename, fsync the folder: a reader sees the old file or the new one.

    Through a symbolic link the new file replaces the link's target, in its folder,
    so the link stays. A byte-order mark the file had is written again.
    """
    where = target(path)
    folder = where.parent
    try:
        with open(where, "rb") as fh:
            if fh.read(len(BOM_BYTES)) == BOM_BYTES:
                text = BOM + text
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + where.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.chmod(tmp, os.stat(where).st_mode & 0o777)
        except FileNotFoundError:
            os.chmod(tmp, 0o644)
        os.replace(tmp, where)
    except BaseException:
        _unlink(tmp)
        raise
    dirfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def write_copy(path: Path, data: bytes) -> None:
    """Keep ``data`` at ``path`` (temp file and rename, so a reader sees a whole copy)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the job file's contents
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-last-good-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
