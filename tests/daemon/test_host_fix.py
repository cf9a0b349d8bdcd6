"""A domain refused by host validation starts once the host is fixed, with no manifest edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Controller, alive, condition, qemu_manifest

LOOP_CODE = bytes.fromhex("EBFE")  # jmp $


@pytest.mark.qemu
def test_a_missing_disk_image_stalls_until_it_appears(controller: Controller,
                                                      tmp_path: Path) -> None:
    name = controller.name("late-disk")
    image = tmp_path / "late.img"
    # the qemu section ends the manifest: one more line of it adds the disk
    manifest = qemu_manifest(name) + f"    disks: [{{name: boot, source: {image}, bus: ide}}]\n"
    controller.write_manifest(f"{name}.yaml", manifest)
    stalled = controller.wait_status(
        name, "Stalled by host validation",
        lambda s: (condition(s, "Stalled") or {}).get("reason") == "HostValidation")
    assert stalled["state"] == "shutoff"
    assert f"spec.qemu.disks[0].source: {image} does not exist" in condition(
        stalled, "Stalled")["message"]  # type: ignore[index]
    image.write_bytes(LOOP_CODE + bytes(508) + b"\x55\xaa")
    running = controller.wait_state(name, "running", "booted")
    assert alive(running["pid"])
    assert (condition(running, "Stalled") or {}).get("status") == "False"
