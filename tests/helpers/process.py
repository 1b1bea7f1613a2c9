"""The real daemon and CLI as subprocesses, with real signals; a deadline poller."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

CRAWLSCHED = [sys.executable, "-m", "crawlsched"]


def home_env(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with CRAWLSCHED_JOBS / CRAWLSCHED_HOME pointing at ``home``."""
    return {**os.environ, "CRAWLSCHED_JOBS": str(home / "jobs.toml"), "CRAWLSCHED_HOME": str(home), **(env or {})}


class DaemonProcess:
    """``crawlsched daemon`` as a child process in its own session, with real signals."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.args = list(args)
        self.env = home_env(home, env)
        self.proc: subprocess.Popen | None = None
        self.stderr_path = home / f"daemon-{time.monotonic_ns()}.stderr"

    def _popen(self, **kwargs: Any) -> subprocess.Popen:
        self.stderr = open(self.stderr_path, "wb")
        return subprocess.Popen(CRAWLSCHED + ["daemon", *self.args], env=self.env, stdout=self.stderr,
                                stderr=self.stderr, **kwargs)

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        self.proc = self._popen(start_new_session=True)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        assert self.proc is not None
        wait_for(lambda: "daemon ready" in self.output() or self.proc.poll() is not None, timeout, "daemon ready")
        assert self.proc.poll() is None, self.output()

    def output(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.stderr.close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.stderr.close()


class LimitedDaemon(DaemonProcess):
    """A daemon subprocess with a ``preexec_fn`` (resource limits, ignored signals)."""

    def __init__(self, home: Path, *args: str, preexec: Callable[[], None] | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(home, *args, env=env)
        self.preexec = preexec

    def start(self, wait_ready: bool = True) -> LimitedDaemon:
        def pre() -> None:
            os.setsid()
            if self.preexec:
                self.preexec()

        self.proc = self._popen(preexec_fn=pre)
        if wait_ready:
            self.wait_ready()
        return self


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             context: Callable[[], str] | None = None) -> Any:
    """Poll until ``predicate`` is truthy and return its value; a deadline, not a speed assertion.
    ``context`` (a process's output, say) is shown when the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    shown = f"\n{context()}" if context is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{shown}")


def cli(home: Path, *args: str, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``crawlsched ARGS…`` as a subprocess of ``home`` (the in-process one is conftest's ``cli`` fixture)."""
    result = subprocess.run(CRAWLSCHED + list(args), env=home_env(home, env), capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"crawlsched {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def pid_gone(pid: int) -> bool:
    """Gone or a zombie (dead, waiting to be reaped by init)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a child's whole process group and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The daemon with its wall clock moved to an instant (time-machine, ticking from there): the seed's
# examples are dated November 2025, and an end date in the past is refused.
TRAVELLING = ("import sys, datetime, time_machine; "
              "time_machine.travel(datetime.datetime.fromisoformat(sys.argv.pop(1)), tick=True).start(); "
              "from crawlsched.cli import main; sys.argv[0] = 'crawlsched'; main()")


class HttpDaemon:
    """``crawlsched daemon --http 127.0.0.1:PORT`` as a child process (TZ=UTC, no API token from this
    environment); ``at`` starts its wall clock at that ISO instant. ``wait_ready`` polls /healthz."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None, at: str | None = None,
                 stdout: Any = subprocess.PIPE) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environ = home_env(home, {"TZ": "UTC"})
        environ.pop("CRAWLSCHED_TOKEN", None)
        environ.update(env or {})
        program = [sys.executable, "-c", TRAVELLING, at] if at else CRAWLSCHED
        self.proc = subprocess.Popen([*program, "daemon", "--http", f"127.0.0.1:{self.port}", *args],
                                     env=environ, stdout=stdout, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 15) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError("daemon did not become healthy")

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL after 20 s); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def ctrl_c_as_in_a_terminal() -> None:
    """A child's SIGINT as a terminal gives it (``preexec_fn``): a shell starts background jobs
    with SIGINT ignored, and a test run from one (CI under ``nohup … &``) would pass that on."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
