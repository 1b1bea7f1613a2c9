import os
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
