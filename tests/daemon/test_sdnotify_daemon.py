"""A real `domctl run` under a NOTIFY_SOCKET of the test's own: READY=1 after the first full
pass, then STATUS= follows the domains ("2 domains, 2 ready"), as `systemctl status` shows it."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cleanup import scratch_dir
from tests.support.domains import domain
from tests.support.waiting import wait_until

from .conftest import controller_on


class Receiver:
    """systemd's side: a datagram socket collecting every notification line."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.lines: list[str] = []

    def received(self) -> list[str]:
        while True:
            try:
                self.lines += self.sock.recv(4096).decode().splitlines()
            except BlockingIOError:
                return self.lines


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    directory = scratch_dir("notify")
    receiver = Receiver(directory / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(directory / "notify.sock"))
    try:
        yield receiver
    finally:
        receiver.sock.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.qemu
def test_status_line_follows_the_domains(tmp_path: Path, receiver: Receiver) -> None:
    with controller_on(tmp_path) as ctl:
        wait_until(lambda: "READY=1" in receiver.received(), "READY=1")
        assert "STATUS=0 domains, 0 ready" in receiver.received()
        for prefix in ("first", "second"):  # shut off by their manifests: no process needed
            ctl.apply(domain(ctl.name(prefix), state="shutoff"))
        wait_until(lambda: "STATUS=2 domains, 2 ready" in receiver.received(),
                   "the status line to count both domains",
                   explain=lambda: "\n".join(receiver.received()))
        statuses = [line for line in receiver.received() if line.startswith("STATUS=")]
        assert len(statuses) == len(set(statuses))  # sent only when the text changes
