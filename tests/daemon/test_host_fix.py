"""A domain refused by host validation starts once the host is fixed, with no manifest edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.domains import domain
from tests.support.qemu import LOOP_CODE, boot_sector

from .conftest import Controller, alive, condition


@pytest.mark.qemu
def test_a_missing_disk_image_stalls_until_it_appears(controller: Controller,
                                                      tmp_path: Path) -> None:
    name = controller.name("late-disk")
    image = tmp_path / "late.img"
    controller.apply(domain(name, image=image))
    stalled = controller.wait_status(
        name, "Stalled by host validation",
        lambda s: condition(s, "Stalled").get("reason") == "HostValidation")
    assert stalled["state"] == "shutoff"
    assert f"spec.qemu.disks[0].source: {image} does not exist" in condition(
        stalled, "Stalled")["message"]
    boot_sector(image, LOOP_CODE)
    running = controller.wait_state(name, "running", "booted")
    assert alive(running["pid"])
    assert condition(running, "Stalled").get("status") == "False"
