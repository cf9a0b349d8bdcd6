"""QemuDriver.display against a real qemu: the VNC server as qemu reports it, an automatic
port included (`domctl vncdisplay`)."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from reconcilers.driver import VNC_BASE_PORT
from reconcilers.model import Vnc
from tests.support.domains import TCG_PC, domain
from tests.support.qemu import QemuEnv

pytestmark = pytest.mark.qemu


async def test_an_automatic_vnc_port_is_the_one_qemu_listens_on(qemu_env: QemuEnv) -> None:
    driver = qemu_env.driver()
    vm = domain("vnc-vm", qemu=dataclasses.replace(TCG_PC, vnc=Vnc()))
    await driver.start(vm, paused=False, token="test")
    try:
        display = await driver.display(vm.name)
        assert display is not None and display.host == "127.0.0.1"
        assert display.port >= VNC_BASE_PORT
        assert display.vnc == f"127.0.0.1:{display.port - VNC_BASE_PORT}"
        with socket.create_connection((display.host, display.port), timeout=5) as conn:
            assert conn.recv(12).startswith(b"RFB ")  # a VNC server greets first
    finally:
        await driver.destroy(vm.name)
