"""Processes by identity, not by number: is the process that wrote a row still that process?

A pid alone is not enough: after a reboot, or on a busy machine, an unrelated
process gets the same number, and a ``running`` row would look alive (its job
skipped until the stranger exits), or a stranger's group would be signalled.
An identity is ``<boot id>/<start time in clock ticks since boot>``, read from
``/proc``; two processes share one only if they are the same process. Where
``/proc`` cannot tell (not Linux, a hidden pid), checks fall back to the pid.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["group_alive", "identity", "killpg", "pid_alive", "stop_orphan_group"]

_BOOT_ID: str | None = None


def _boot_id() -> str | None:
    global _BOOT_ID
    if _BOOT_ID is None:
        try:
            _BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            _BOOT_ID = ""
    return _BOOT_ID or None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after ``(comm)`` (state is [0], pgid [2], starttime [19])."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return raw.rpartition(b")")[2].decode(errors="replace").split()


def identity(pid: int | None) -> str | None:
    """``<boot id>/<start ticks>`` of a live process; None when /proc cannot tell."""
    if not pid:
        return None
    fields = _stat_fields(pid)
    return None if fields is None else _identity_of(fields)


def _identity_of(fields: list[str]) -> str | None:
    boot = _boot_id()
    if boot is None or len(fields) < 20:
        return None
    return f"{boot}/{fields[19]}"


def pid_alive(pid: int | None, ident: str | None = None) -> bool:
    """Is ``pid`` running (a zombie is not), and, when ``ident`` is given, still that process?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc: the pid is all we have
    if fields[:1] == ["Z"]:
        return False
    now = _identity_of(fields)
    if ident and now is not None and now != ident:
        return False  # the number was reused, by another boot or a later process
    return True


def group_alive(pgid: int) -> bool:
    """Is any process of the group still running (zombies, which are already dead, do not count)?"""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():  # not Linux: a zombie child of init is reaped soon anyway
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_orphan_group(pgid: int | None, ident: str | None, kill_after: float = 5.0) -> bool:
    """Stop what is left of a command's process group whose parent died (SIGKILL, power cut).

    Only when it is provably that group: the same boot, and its leader either
    gone or the very process that was started (``ident``). The kernel does not
    hand out a number while a group still uses it, so a group with the number
    and no leader is the old one. SIGTERM, then SIGKILL ``kill_after`` seconds
    later. Returns True when a group was found and stopped.
    """
    if not pgid or not ident or pgid <= 1:
        return False
    boot, _, _ = ident.partition("/")
    if boot != _boot_id():
        return False  # another boot: nothing of it survived
    leader = identity(pgid)
    if leader is not None and leader != ident:
        return False  # the number belongs to another process now
    if not group_alive(pgid):
        return False
    killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + kill_after
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.05)
    killpg(pgid, signal.SIGKILL)
    return True
