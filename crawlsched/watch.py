"""Notice changes of one file at once, without polling: Linux inotify through ctypes.

The daemon would otherwise stat jobs.toml every second, and on a small VM
each wake-up of an idle process costs about 0.01 % of a core by itself. The
folder is watched, not the file: editors and ``crawlsched`` replace the file by
a rename, which a watch on the file itself would lose. A job file that is a
symbolic link is watched along its whole chain (SPEC §7): the link's folder
(the link pointed elsewhere), the target's folder (the target rewritten, as
``crawlsched`` and configuration management do), and the folder of any linked
folder on the way (a Kubernetes ConfigMap swaps its ``..data`` link); after
each change the chain is followed again, so a new target is watched too. Where inotify is not
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


def watch_points(path: Path) -> set[tuple[bytes, bytes]]:
    """(folder, name) of every entry whose change may change what ``path`` reads: the path,
    each symbolic link met while resolving it (the file's and its folders'), and the target."""
    points: set[tuple[bytes, bytes]] = set()
    current = Path(os.path.abspath(path))
    for _ in range(40):  # the kernel's own limit of links followed
        for entry in (current, *current.parents):
            if entry.name and entry.is_symlink():
                points.add((os.fsencode(str(entry.parent.resolve())), os.fsencode(entry.name)))
        folder = current.parent.resolve()
        points.add((os.fsencode(str(folder)), os.fsencode(current.name)))
        candidate = folder / current.name
        if not candidate.is_symlink():
            break
        try:
            current = folder / os.readlink(candidate)  # relative to the link's folder; absolute as is
        except OSError:
            break
    return points


class FileWatch:
    """Calls ``on_change()`` from a background thread whenever ``path`` may have changed."""

    def __init__(self, fd: int, path: Path, on_change: Callable[[], None], add: Callable[[int, bytes], int]) -> None:
        self.fd = fd
        self.path = path
        self.on_change = on_change
        self._add = add
        self.names: dict[int, set[bytes]] = {}  # watch descriptor -> names in that folder that matter
        self.thread = threading.Thread(target=self._run, name="watch-jobs", daemon=True)

    def arm(self) -> bool:
        """Watch the folders of the current chain of links (again); False when not even one can be watched."""
        names: dict[int, set[bytes]] = {}
        for folder, name in watch_points(self.path):
            wd = self._add(self.fd, folder)
            if wd >= 0:
                names.setdefault(wd, set()).add(name)
        if names:
            self.names = names  # a folder no longer on the chain keeps its watch; its events no longer count
        return bool(names)

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except OSError:
                return  # closed
            if not data:
                return
            if self._concerns_us(data):
                self.arm()  # a link may now lead elsewhere
                self.on_change()

    def _concerns_us(self, data: bytes) -> bool:
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW or name in self.names.get(wd, ()):
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
    """Watch the folders that hold ``path`` and the links it goes through; None when inotify
    cannot be used or would miss changes (a network file system): the daemon then polls every second."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        init = libc.inotify_init1
        add_watch = libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    for folder, _name in watch_points(path):
        remote = network_fs(libc, folder)
        if remote is not None:
            log.info("%s is on a network file system (%s): inotify misses remote edits; polling it every second", path, remote)
            return None
    fd = init(IN_CLOEXEC)
    if fd < 0:
        return None

    def add(fd: int, folder: bytes) -> int:
        return add_watch(fd, ctypes.c_char_p(folder), ctypes.c_uint32(MASK))

    watch = FileWatch(fd, Path(path), on_change, add)
    if not watch.arm():
        os.close(fd)
        log.info("cannot watch %s with inotify (errno %d); polling it every second", path, ctypes.get_errno())
        return None
    watch.thread.start()
    return watch
