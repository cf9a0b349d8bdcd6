"""`domctl console`: a terminal joined to a real guest's serial port through the controller."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from reconcilers.model import LxcSpec, SerialMode
from tests.support.domains import TCG_PC, domain
from tests.support.qemu import boot_sector

from .conftest import DOMCTL, Controller

# A boot sector that echoes every byte received on COM1 (polling the line status register).
ECHO_CODE = bytes.fromhex("BAF803" "B068EE" "B069EE"  # print "hi"
                          "BAFD03" "EC" "A801" "74F8"  # wait for a received byte
                          "BAF803" "EC" "EE" "EBF1")  # read it, send it back, loop


def read_until(stream: int, wanted: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            chunk = os.read(stream, 4096)
            if not chunk:
                break
            seen += chunk
    return seen


@pytest.mark.qemu
def test_console_relays_a_serial_socket_both_ways(controller: Controller,
                                                  tmp_path: Path) -> None:
    name = controller.name("echo")
    image = boot_sector(tmp_path / "echo.img", ECHO_CODE)
    socket_serial = dataclasses.replace(TCG_PC, serial=SerialMode.SOCKET)
    controller.apply(domain(name, image=image, qemu=socket_serial))
    controller.wait_state(name, "running")
    proc = subprocess.Popen([str(DOMCTL), "--socket", str(controller.socket), "console", name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"ping-42\n")
        proc.stdin.flush()
        echoed = read_until(proc.stdout.fileno(), b"ping-42", timeout=30)
        assert b"ping-42" in echoed, echoed
        proc.stdin.write(b"\x1d")  # Ctrl-] ends the session
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.qemu
def test_console_of_a_log_serial_says_where_the_output_is(controller: Controller) -> None:
    name = controller.name("logserial")
    controller.apply(domain(name, state="shutoff"))  # serial: log, the default
    controller.wait_state(name, "shutoff")
    result = controller.domctl("console", name)
    assert result.returncode == 1
    assert "spec.qemu.serial is log" in result.stderr and "domctl logs -f" in result.stderr


@pytest.mark.lxc
def test_console_of_a_container_is_lxc_console(controller: Controller) -> None:
    """`domctl console` becomes lxc-console on the container's /dev/console (it needs a tty)."""
    name = controller.name("conct")
    controller.apply(domain(name, "lxc", lxc=LxcSpec(init=(
        "/bin/sh", "-c", "while read l; do echo got-$l; done </dev/console >/dev/console 2>&1;"
        " exec sleep infinity"))))
    controller.wait_state(name, "running")
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the CLI on a pseudo-terminal, as a user would run it
        os.execv(str(DOMCTL), [str(DOMCTL), "--socket", str(controller.socket), "console", name])
    try:
        assert b"Connected to tty 0" in read_until(terminal, b"Connected to tty 0", timeout=10)
        seen = b""
        for _ in range(10):  # init's shell may not be reading its console yet: type again
            os.write(terminal, b"hello-ct\r")
            seen += read_until(terminal, b"got-hello-ct", timeout=1)
            if b"got-hello-ct" in seen:
                break
        assert b"got-hello-ct" in seen, seen
        os.write(terminal, b"\x01q")  # Ctrl-a q leaves lxc-console
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(terminal)
