import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
import socket
import tempfile
import uuid

import pytest

from crawlsched import systemd


@pytest.fixture
def receiver(monkeypatch):
    """A real datagram socket standing in for systemd's notify socket.

    Bound in a short temp dir: a Unix socket path must fit in 108 bytes,
    which pytest's tmp_path does not always do.
    """
    with tempfile.TemporaryDirectory(prefix="sd") as folder:
        path = os.path.join(folder, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(2)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            yield sock


def received(sock) -> str:
    return sock.recv(4096).decode()


def test_notify_without_socket_returns_false(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.ready() is False


def test_notify_sends_the_message(receiver):
    assert systemd.notify("READY=1") is True
    assert received(receiver) == "READY=1"


@pytest.mark.parametrize(
    "call, expected",
    [
        (systemd.ready, "READY=1"),
        (systemd.stopping, "STOPPING=1"),
        (systemd.watchdog, "WATCHDOG=1"),
        (lambda: systemd.status("3 jobs, next 09:05"), "STATUS=3 jobs, next 09:05"),
        (lambda: systemd.ready("3 jobs"), "READY=1\nSTATUS=3 jobs"),
    ],
    ids=["ready", "stopping", "watchdog", "status", "ready-with-status"],
)
def test_helpers_send_their_assignment(receiver, call, expected):
    assert call() is True
    assert received(receiver) == expected


def test_status_text_cannot_inject_assignments(receiver):
    systemd.status("bad\nREADY=1")
    assert received(receiver) == "STATUS=bad READY=1"


def test_reloading_carries_monotonic_usec(receiver):
    systemd.reloading()
    first, second = received(receiver).split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=") and int(second.split("=")[1]) > 0


def test_abstract_namespace_address(monkeypatch):
    name = f"crawlsched-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1") is True
        assert received(sock) == "READY=1"


def test_socket_errors_return_false(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.notify("READY=1") is False


def test_unsupported_address_returns_false(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.notify("READY=1") is False


@pytest.mark.parametrize(
    "usec, pid, expected",
    [
        ("60000000", None, 30.0),
        ("60000000", "self", 30.0),
        ("60000000", "other", None),
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
        ("60000000", "x", None),
    ],
    ids=["half", "our-pid", "other-pid", "unset", "zero", "garbage", "garbage-pid"],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            pids = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}
            monkeypatch.setenv(name, pids.get(value, value))
    assert systemd.watchdog_interval() == expected


# --- the unit file as shipped ------------------------------------------------------

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "crawlsched.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian: apt-get install systemd)")


def _exec_start() -> str:
    [line] = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    return line.split("=", 1)[1].split()[0]


@needs_analyze
def test_unit_file_passes_systemd_analyze_verify():
    """As shipped. Where the binary it starts is not installed (a test machine), a private mount
    namespace lends a stand-in at that path, so the check covers everything else too."""
    binary = _exec_start()
    command = [ANALYZE, "verify", str(UNIT)]
    if not os.access(binary, os.X_OK):
        stand_in = (f"mount -t tmpfs none {shlex.quote(os.path.dirname(binary))} && printf '#!/bin/sh\\n' > {shlex.quote(binary)}"
                    f" && chmod +x {shlex.quote(binary)} && exec {shlex.join(command)}")
        command = ["unshare", "--mount", "sh", "-c", stand_in]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if not os.access(binary, os.X_OK) and result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"{binary} is not installed and no mount namespace can stand in for it: {result.stderr.strip()}")
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@needs_analyze
def test_unit_file_scores_at_most_3_in_systemd_analyze_security():
    result = subprocess.run([ANALYZE, "security", "--offline=true", str(UNIT)], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for crawlsched\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 3.0, result.stdout


def test_unit_file_says_why_each_left_out_hardening_is_left_out():
    text = UNIT.read_text()
    for setting in ("CapabilityBoundingSet=", "SystemCallFilter=@system-service", "SystemCallArchitectures=native",
                    "ProtectProc=invisible", "PrivateMounts=yes", "RemoveIPC=yes", "NoNewPrivileges=yes"):
        assert f"\n{setting}\n" in text, setting
    left_out = text.split("# Deliberately not set:", 1)[1]
    for setting in ("ProcSubset", "MemoryDenyWriteExecute", "IPAddressDeny", "PrivateNetwork", "@privileged"):
        assert setting in left_out, setting


def test_install_steps_create_the_binary_the_unit_starts():
    """Debian refuses pip into the system Python, and ProtectHome= hides a venv under /home: the
    documented steps install into /opt/crawlsched/venv and link the path ExecStart names."""
    binary = _exec_start()
    readme = (UNIT.parent.parent / "README.md").read_text()
    for text in (UNIT.read_text(), readme):
        assert "python3 -m venv /opt/crawlsched/venv" in text
        assert f"ln -s /opt/crawlsched/venv/bin/crawlsched {binary}" in text


# --- the unit file (contrib/crawlsched.service) ------------------------------------------------


def test_the_units_cli_hint_names_the_home_the_daemon_uses():
    from pathlib import Path

    unit = (Path(__file__).resolve().parent.parent / "contrib" / "crawlsched.service").read_text()
    hints = [line for line in unit.splitlines() if line.startswith("#") and "sudo -u crawlsched" in line]
    assert hints and all("CRAWLSCHED_HOME=/var/lib/crawlsched" in h and "CRAWLSCHED_JOBS=/etc/crawlsched/jobs.toml" in h
                         for h in hints)
    assert "Environment=CRAWLSCHED_JOBS=/etc/crawlsched/jobs.toml CRAWLSCHED_HOME=/var/lib/crawlsched" in unit


# --- the worker's unit file (contrib/crawlsched-worker.service) --------------------------------

WORKER_UNIT = UNIT.parent / "crawlsched-worker.service"


@needs_analyze
def test_worker_unit_file_passes_systemd_analyze_verify(tmp_path):
    """As shipped, with stand-ins for the binary and the environment file where a test machine has neither."""
    binary = _exec_start()
    command = [ANALYZE, "verify", str(WORKER_UNIT)]
    if not os.access(binary, os.X_OK):
        stand_in = (f"mount -t tmpfs none {shlex.quote(os.path.dirname(binary))} && printf '#!/bin/sh\\n' > {shlex.quote(binary)}"
                    f" && chmod +x {shlex.quote(binary)} && exec {shlex.join(command)}")
        command = ["unshare", "--mount", "sh", "-c", stand_in]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if not os.access(binary, os.X_OK) and result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"{binary} is not installed and no mount namespace can stand in for it: {result.stderr.strip()}")
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@needs_analyze
def test_worker_unit_file_scores_at_most_3_in_systemd_analyze_security():
    result = subprocess.run([ANALYZE, "security", "--offline=true", str(WORKER_UNIT)], capture_output=True, text=True,
                            timeout=60)
    match = re.search(r"Overall exposure level for crawlsched-worker\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 3.0, result.stdout


def test_worker_unit_keeps_the_state_url_out_of_the_unit():
    """`systemctl show` prints a unit's Environment= to any user: the DSN (with its password) comes
    from a root-owned EnvironmentFile, and the worker runs the same binary as the daemon's unit."""
    text = WORKER_UNIT.read_text()
    assert "\nEnvironmentFile=/etc/crawlsched/worker.env\n" in text
    assert not any(line.startswith("Environment=") for line in text.splitlines())
    [start] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert start.split("=", 1)[1].split()[:2] == [_exec_start(), "worker"]
