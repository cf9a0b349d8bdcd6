"""sd_notify against real AF_UNIX datagram sockets: a path in tmp_path and an abstract name."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.service import sdnotify


class Listener:
    """systemd's side: a bound datagram socket and the environment that points at it."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": notify_socket}

    def received(self) -> str:
        return self.sock.recv(4096).decode()

    def nothing_received(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(5)
        return False


@pytest.fixture
def path_listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify"
    if len(str(path)) >= 108:  # sun_path's limit
        pytest.skip(f"tmp_path too long for a Unix socket: {path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield Listener(sock, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"domctl-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield Listener(sock, "@" + name)


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Listener:
    found: Listener = request.getfixturevalue(f"{request.param}_listener")
    return found


def test_notify_sends_one_datagram(listener: Listener) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=hello", listener.env) is True
    assert listener.received() == "READY=1\nSTATUS=hello"


def test_helpers_send_the_protocol_strings(listener: Listener) -> None:
    sent = [
        (sdnotify.ready(env=listener.env), "READY=1"),
        (sdnotify.ready("3 domains", env=listener.env), "READY=1\nSTATUS=3 domains"),
        (sdnotify.status("reconciling", env=listener.env), "STATUS=reconciling"),
        (sdnotify.ping(env=listener.env), "WATCHDOG=1"),
        (sdnotify.stopping(env=listener.env), "STOPPING=1"),
        (sdnotify.extend_timeout(90, env=listener.env), "EXTEND_TIMEOUT_USEC=90000000"),
    ]
    for ok, message in sent:
        assert ok is True
        assert listener.received() == message


def test_status_cannot_smuggle_other_assignments(listener: Listener) -> None:
    sdnotify.status("start failed:\nREADY=1", env=listener.env)
    assert listener.received() == "STATUS=start failed: READY=1"


def test_unset_socket_is_a_quiet_no() -> None:
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False
    assert sdnotify.ready(env={}) is False
    assert sdnotify.ping(env={}) is False


def test_missing_socket_and_unsupported_address_return_false(tmp_path: Path) -> None:
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_default_environment_is_read_at_call_time(path_listener: Listener,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.env["NOTIFY_SOCKET"])
    assert sdnotify.ready() is True
    assert path_listener.received() == "READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.ping() is False
    assert path_listener.nothing_received()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "500000"}, 0.5),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "thirty"}, None),
    ({"WATCHDOG_PID": str(os.getpid())}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == expected
