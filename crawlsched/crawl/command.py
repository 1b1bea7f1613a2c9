"""A command job's attempt: run the command in its own process group, its output to a log.

The command is an argument list (``shlex.split``), never given to a shell. It
runs in its own session, so its whole process group, grandchildren too, can be
stopped on timeout or cancel: SIGTERM, then SIGKILL ``kill_after`` seconds
later. With ``on_spawn`` it starts through :data:`GATE`, held until the runner
has recorded the group, so a daemon killed at any moment leaves no command the
next daemon does not know about. :func:`prepare_command` spawns it through the
gate ahead of time (an attempt handed out before its instant) and
:class:`Prepared` lets it go, runs it to its end, or abandons it unstarted.
The commands due at one instant can share a :class:`SharedGate`: one pipe all their
gates read, so that one write lets them all go (a write to each, measured, took
50–70 ms for 200 on 2 cores: each child woken preempted the writing thread).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from crawlsched import procs
from crawlsched.crawl.outcome import Outcome, disk_message, secs

#: Spawn errors that a retry cannot fix; anything else (EAGAIN, ENOMEM, EMFILE, …) is retried.
PERMANENT_SPAWN_ERRORS = {errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR}
#: How much of the end of a log is read for the last line (the Outcome's message).
TAIL = 64 * 1024


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
    started = _spawn(command, log_path, env, gated=on_spawn is not None)
    if isinstance(started, Outcome):
        return started
    if on_spawn is not None:
        try:
            _fault_pause()
            try:
                on_spawn(started.pgid)
            except Exception:  # noqa: BLE001 - a failed note must not fail the command
                pass
        except BaseException:  # Ctrl-C before the go-ahead: the command never runs
            started.abandon()
            raise
        started.go()
    return started.run(timeout=timeout, cancel=cancel, kill_after=kill_after)


def prepare_command(command: str, log_path: Path, *, env: Mapping[str, str],
                    gate: SharedGate | None = None) -> Prepared | Outcome:
    """Spawn ``command`` through :data:`GATE` now, held until :meth:`Prepared.go`: an attempt queued
    ahead of its instant has its process ready, so at the instant only the go-ahead is left. The
    caller records the group first (or :meth:`Prepared.abandon` s it: the command never runs).
    An Outcome when it cannot start (what :func:`run_command` would answer). With ``gate``, its
    gate reads that shared pipe: it is let go with the others by :meth:`SharedGate.open_all`."""
    held = _spawn(command, log_path, env, gated=True, shared=gate)
    if isinstance(held, Prepared):
        held.ident  # noqa: B018 - read now, not in the take-over's hurry at the instant
    return held


class SharedGate:
    """One pipe that the gates of several held commands read (each its own line): one write of
    as many lines lets them all go at once. Closed unwritten, or when this process dies, each
    gate reads its end and exits without running its command, as a gate of its own would.

    Every command still held at the gate when it opens must be among those let go (a line goes
    to whichever gate reads first): the gate is sealed first (a command spawned after that gets
    a gate of its own), and one spawned here that is not among them is evicted (killed at its
    gate, where nothing of it ran: its attempt spawns it again, the usual way)."""

    def __init__(self) -> None:
        self.read_end, self._write_end = os.pipe()
        self.lock = threading.Lock()  # a spawn reading `read_end` and a close never overlap (fds are reused)
        self.spawned: list[Prepared] = []
        self.sealed = False

    def seal(self) -> None:
        with self.lock:
            self.sealed = True

    def held_elsewhere(self, children: list[Prepared]) -> list[Prepared]:
        """The commands spawned here, still held, that are not in ``children``."""
        going = {id(c) for c in children}
        return [c for c in self.spawned if not c.released and id(c) not in going]

    def open_all(self, children: list[Prepared]) -> float:
        """Let ``children`` (held at this gate, not let go yet) go with one write, then close the
        gate (a command spawned after it gets a gate of its own); when (the wall clock)."""
        with self.lock:
            went = time.time()
            if children and self._write_end >= 0:
                try:
                    os.write(self._write_end, b"\n" * len(children))
                except OSError:
                    pass  # every reader is gone (stopped from outside): each child's wait sees its exit
            for child in children:
                child.released, child.went_at = True, went
            self._close()
        return went

    def close(self) -> None:
        """No more commands are held here: both ends closed (an unwritten gate's readers exit)."""
        with self.lock:
            self._close()

    def _close(self) -> None:
        for fd in (self.read_end, self._write_end):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.read_end = self._write_end = -1


class Prepared:
    """A command spawned and not yet running (gated), or running: its process, its log."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Any, start: int, output: str, gated: bool,
                 shared: SharedGate | None = None) -> None:
        self.proc, self._log, self._start, self.output, self.gated = proc, log, start, output, gated
        self.shared = shared  # the gate it reads with others, let go by SharedGate.open_all
        self.pgid = proc.pid  # start_new_session: the child leads its own group
        self.released = not gated  # the go-ahead was written
        self.went_at: float | None = None
        self._ident: str | None = None
        self.evicted = False  # killed at its shared gate before it was let go (SharedGate): spawn it again

    @property
    def ident(self) -> str | None:
        """The group leader's identity (crawlsched.procs), recorded with the group; read once."""
        if self._ident is None:
            self._ident = procs.identity(self.pgid)
        return self._ident

    def go(self) -> None:
        """Let the gated command start (see GATE); once. ``went_at``: when (the wall clock).
        One held at a shared gate is let go with the others (:meth:`SharedGate.open_all`)."""
        if not self.released:
            if self.shared is not None:  # a line of its own on a shared pipe could go to another gate
                raise RuntimeError("a command held at a shared gate is let go by SharedGate.open_all")
            self.released = True
            self.went_at = time.time()
            _go_ahead(self.proc)

    def abandon(self) -> None:
        """Never start it: the gate's pipe closes, it exits (111) without running the command. One
        held at a shared gate is killed there instead (its gate is all that runs: nothing began)."""
        if self.released:
            return
        self.released = True
        if self.shared is not None:
            procs.killpg(self.pgid, signal.SIGKILL)
        else:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
        self.proc.wait()
        self._close_log()

    def evict(self) -> None:
        """Killed at its shared gate, never let go (:class:`SharedGate`): ``evicted``, spawned again."""
        self.evicted = True  # first: whoever sees it released sees why
        self.abandon()

    def _close_log(self) -> None:
        try:
            empty = self._log.tell() == 0
            self._log.close()
            if empty:
                os.unlink(self.output)  # created for this attempt, which never ran
        except OSError:
            pass

    def run(self, *, timeout: float = 300, cancel: threading.Event | None = None, kill_after: float = 5.0) -> Outcome:
        """Wait for the command (started: :meth:`go` was called), stopping its group on timeout or cancel."""
        proc, log = self.proc, self._log
        with log:
            try:
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
                note = "interrupted" if stopped == "cancel" else f"timed out after {secs(timeout)}s"
                log.write(f"[crawlsched] {note}; process group stopped\n".encode())
                return Outcome(False, note, interrupted=stopped == "cancel", exit_code=proc.returncode,
                               output=self.output)
        code = proc.returncode
        message = _last_line(Path(self.output), self._start) or f"exit code {code}"
        return Outcome(code == 0, message, exit_code=code, output=self.output)


def _spawn(command: str, log_path: Path, env: Mapping[str, str], *, gated: bool,
           shared: SharedGate | None = None) -> Prepared | Outcome:
    output = str(log_path)
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return Outcome(False, f"command does not parse: {exc}", permanent=True, output=output)
    if not argv:
        return Outcome(False, "command is empty", permanent=True, output=output)
    if gated:
        refused = _spawn_check(argv[0], env, output)
        if refused is not None:
            return refused
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed by Prepared, after the child is gone
    except OSError as exc:
        return Outcome(False, disk_message(exc, f"cannot open log {log_path}"), output=output)
    start = log.seek(0, os.SEEK_END)
    if not gated:
        shared = None
    try:
        with shared.lock if shared is not None else contextlib.nullcontext():  # its pipe is not closed meanwhile
            if shared is not None and (shared.sealed or shared.read_end < 0):
                shared = None  # sealed, opened or closed already: a gate of its own
            stdin = subprocess.DEVNULL if not gated else shared.read_end if shared is not None else subprocess.PIPE
            proc = subprocess.Popen([*GATE, *argv] if gated else argv, stdin=stdin,
                                    stdout=log, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True,
                                    close_fds=True)
            prepared = Prepared(proc, log, start, output, gated, shared)
            if shared is not None:
                shared.spawned.append(prepared)
    except OSError as exc:
        log.close()
        if isinstance(exc, FileNotFoundError):
            return Outcome(False, f"command not found: {argv[0]}", permanent=True, output=output)
        if isinstance(exc, PermissionError):
            return Outcome(False, f"command is not executable: {argv[0]}", permanent=True, output=output)
        # Only what a retry cannot fix is permanent; EAGAIN, ENOMEM, EMFILE … pass.
        return Outcome(False, f"cannot start {argv[0]}: {exc.strerror or type(exc).__name__}",
                       permanent=exc.errno in PERMANENT_SPAWN_ERRORS, output=output)
    return prepared


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
    exited = _exit_waiter(proc)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            try:
                if exited is not None:
                    exited(min(0.1, left))
                    if proc.poll() is None:
                        raise subprocess.TimeoutExpired(proc.args, min(0.1, left))
                else:
                    proc.wait(timeout=min(0.1, left))
                return None
            except subprocess.TimeoutExpired:
                pass
            if cancel is not None and cancel.is_set():
                return "cancel"
    finally:
        if exited is not None:
            exited.close()  # type: ignore[attr-defined]


class _PidfdWait:
    """Wakes the moment the child exits (its pidfd turns readable), not at Popen.wait(timeout)'s
    next poll: that sleeps 0.5, 1, 2 ... up to 50 ms between looks, so a short command's end was
    seen milliseconds late (a no-op attempt spent more time waiting than its child ran)."""

    def __init__(self, fd: int) -> None:
        import select

        self.fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def __call__(self, seconds: float) -> None:
        self._poll.poll(max(0, int(seconds * 1000)))

    def close(self) -> None:
        os.close(self.fd)


def _exit_waiter(proc: subprocess.Popen[bytes]) -> _PidfdWait | None:
    """A pidfd waiter for ``proc`` (Linux 5.3+), or None: then Popen.wait's polling does."""
    try:
        return _PidfdWait(os.pidfd_open(proc.pid))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None  # no pidfd here, or the child was reaped already


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
            log.seek(max(start, end - TAIL))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""
