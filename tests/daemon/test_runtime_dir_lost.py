"""The runtime dir (QMP sockets, pidfiles) removed while the controller is down: the next
controller must never start a second qemu beside the one that still runs on the disks."""

from __future__ import annotations

import shutil

import pytest

from reconcilers.qemu import process
from reconcilers.qemu.layout import domain_files
from tests.support.cleanup import kill
from tests.support.domains import domain

from .conftest import Controller, alive

pytestmark = pytest.mark.qemu


def qemus_of(controller: Controller, name: str) -> list[int]:
    return process.running_pids(domain_files(controller.runtime, controller.logs, name))


def test_a_lost_runtime_dir_never_yields_a_second_qemu(controller: Controller) -> None:
    name = controller.name("orphan")
    controller.apply(domain(name))
    pid = controller.wait_state(name, "running", "booted")["pid"]
    try:
        assert controller.stop() == 0
        shutil.rmtree(controller.runtime)
        controller.runtime.mkdir()
        controller.start()
        after = len(controller.log_lines())
        controller.wait_left_alone({name}, after)  # passes that touch nothing, two rescans
        assert qemus_of(controller, name) == [pid] and alive(pid)
        status = controller.status(name)
        assert status is not None and status["state"] == "nostate", status
    finally:  # its pidfile went with the runtime dir: the sweep cannot find it by that
        kill([pid, *qemus_of(controller, name)])
