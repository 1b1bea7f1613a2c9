"""Notice changes of one file at once, without polling: Linux inotify through ctypes.

The daemon would otherwise stat jobs.toml every second, and on a small VM
each wake-up of an idle process costs about 0.01 % of a core by itself. The
folder is watched, not the file: editors and ``crawlsched`` replace the file by
a rename, which a watch on the file itself would lose. Where inotify is not
available (another OS), and on a network file system (NFS, SMB/CIFS, FUSE such
as sshfs, Ceph, AFS, 9p), where inotify sees local changes but never another
machine's, ``start`` returns None and the daemon polls the file every second.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import struct
import threading
from pathlib import Path
from typing import Callable

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_CLOEXEC = 0o2000000
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_EVENT = struct.Struct("iIII")

# statfs(2) f_type of file systems whose remote changes inotify never reports.
NETWORK_FS = {
    0x6969: "NFS",
    0x517B: "SMB",
    0xFF534D42: "CIFS",
    0xFE534D42: "SMB2",
    0x65735546: "FUSE",
    0x00C36400: "Ceph",
    0x5346414F: "AFS",
    0x01021997: "9p",
}

log = logging.getLogger("crawlsched")


class FileWatch:
    """Calls ``on_change()`` from a background thread whenever ``path`` may have changed."""

    def __init__(self, fd: int, name: str, on_change: Callable[[], None]) -> None:
        self.fd = fd
        self.name = os.fsencode(name)
        self.on_change = on_change
        self.thread = threading.Thread(target=self._run, name="watch-jobs", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except OSError:
                return  # closed
            if not data:
                return
            if self._concerns_us(data):
                self.on_change()

    def _concerns_us(self, data: bytes) -> bool:
        offset = 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW or name == self.name:
                return True
        return False

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def fs_type(libc: ctypes.CDLL, folder: bytes) -> int | None:
    """The statfs(2) f_type of ``folder`` (its first field, a C long), or None when unknown."""
    try:
        statfs = libc.statfs
    except AttributeError:
        return None
    buf = ctypes.create_string_buffer(256)  # larger than struct statfs on every Linux ABI
    if statfs(ctypes.c_char_p(folder), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def network_fs(libc: ctypes.CDLL, folder: bytes) -> str | None:
    """The name of the network file system ``folder`` is on, or None."""
    kind = fs_type(libc, folder)
    return NETWORK_FS.get(kind) if kind is not None else None


def start(path: Path, on_change: Callable[[], None]) -> FileWatch | None:
    """Watch ``path``'s folder for changes of ``path``; None when inotify cannot be used or
    would miss changes (a network file system): the daemon then polls every second."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        init = libc.inotify_init1
        add = libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    folder = os.fsencode(str(Path(path).resolve().parent))
    remote = network_fs(libc, folder)
    if remote is not None:
        log.info("%s is on a network file system (%s): inotify misses remote edits; polling it every second", path, remote)
        return None
    fd = init(IN_CLOEXEC)
    if fd < 0:
        return None
    if add(fd, ctypes.c_char_p(folder), ctypes.c_uint32(MASK)) < 0:
        os.close(fd)
        log.info("cannot watch %s with inotify (errno %d); polling it every second", path, ctypes.get_errno())
        return None
    watch = FileWatch(fd, Path(path).resolve().name, on_change)
    watch.thread.start()
    return watch
