"""The real guest (../shared/guest) on a volume and a cloud-init seed, through the driver.

Two boots, about 7 s each under tcg. The first boots an overlay on a base image made here,
reads the seed (GUEST-CIDATA with the domain's uuid and name, the user-data's marker) and
writes its boot mark on the overlay (`guest.diskmark=1`); the overlay is grown live, a shrink
is refused, and a fresh driver re-attaches (a controller restart) and shuts the guest down.
The second boot, with a changed user-data, finds the first boot's mark on the same overlay file,
the larger disk and the new marker; the base image stays byte-identical throughout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
from pathlib import Path

import pytest

from reconcilers.driver import ChangeKind
from reconcilers.errors import HostValidationError
from reconcilers.model import CloudInit, Disk, Domain, State
from reconcilers.storage.volumes import info
from tests.support.guest import IDLE_CMDLINE, GuestBuild, guest_domain
from tests.support.qemu import QemuEnv
from tests.support.waiting import async_wait_until

pytestmark = [pytest.mark.qemu, pytest.mark.guest]
MiB = 1 << 20
BOOT_TIMEOUT = 90.0


def guest_on_a_volume(guest: GuestBuild, base: Path, size: int, marker: str) -> Domain:
    vm = guest_domain("t-image", guest, cmdline=f"{IDLE_CMDLINE} guest.diskmark=1")
    assert vm.spec.qemu is not None
    qemu = dataclasses.replace(vm.spec.qemu, disks=(Disk("root", image=str(base), size=size),),
                               cloud_init=CloudInit(user_data=user_data(marker)))
    return dataclasses.replace(vm, spec=dataclasses.replace(vm.spec, qemu=qemu))


def user_data(marker: str) -> str:
    return f"#cloud-config\n#guestkit-marker: {marker}\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def boot_lines(log: Path, offset: int) -> list[str]:
    """The guest's lines after `offset` of its log, once it said GUEST-READY."""
    def lines() -> list[str]:
        return log.read_bytes()[offset:].decode(errors="replace").splitlines()
    await async_wait_until(lambda: "GUEST-READY" in (line.strip() for line in lines()),
                           "GUEST-READY", timeout=BOOT_TIMEOUT, interval=0.2,
                           explain=lambda: "\n".join(lines()[-15:]))
    return [line.strip() for line in lines() if line.startswith("GUEST-")]


async def test_a_guest_on_an_overlay_with_a_seed_keeps_its_disk_across_restarts(
        qemu_env: QemuEnv, guest_build: GuestBuild, tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), str(64 * MiB)],
                   check=True)
    pristine = sha256(base.read_bytes())
    first = guest_on_a_volume(guest_build, base, 64 * MiB, "alpha")
    uuid, log = first.metadata.uuid, qemu_env.context.log_dir / "t-image.log"
    overlay = qemu_env.context.state_dir / "pool" / "t-image" / "root.qcow2"
    driver = qemu_env.driver()
    live = await driver.start(first, paused=False, token="test")
    said = await boot_lines(log, 0)
    assert (f"GUEST-CIDATA instance-id={uuid} local-hostname=t-image "
            f"userdata-sha256={sha256(user_data('alpha').encode())}") in said
    assert "GUEST-MARKER alpha" in said and f"GUEST-DISK vda {64 * MiB}" in said
    assert not any(line.startswith("GUEST-DISKMARK") for line in said)  # a fresh overlay
    made = overlay.stat().st_ino

    grown = guest_on_a_volume(guest_build, base, 96 * MiB, "alpha")
    assert driver.classify(first.spec, grown.spec) == {"qemu.disks[0].size": ChangeKind.LIVE}
    await driver.apply_live("t-image", first.spec, grown.spec)  # QMP block_resize
    assert (await info(overlay)).virtual_size == 96 * MiB
    with pytest.raises(HostValidationError, match="never shrunk") as refused:
        await driver.apply_live("t-image", grown.spec, guest_on_a_volume(
            guest_build, base, 80 * MiB, "alpha").spec)
    assert refused.value.field == "spec.qemu.disks[0].size"

    await driver.close()  # the controller restarts; the guest runs on
    again = qemu_env.driver()
    assert live.record is not None and await again.reattach(live.record) is not None
    assert await again.shutdown("t-image", 30.0)  # ACPI: the guest powers off
    assert (await again.observe("t-image")).state is State.SHUTOFF

    second = guest_on_a_volume(guest_build, base, 96 * MiB, "beta")
    offset = log.stat().st_size
    await again.start(second, paused=False, token="test")
    said = await boot_lines(log, offset)
    assert "GUEST-DISKMARK boot=1" in said  # what the first boot wrote, on the same file
    assert overlay.stat().st_ino == made
    assert f"GUEST-DISK vda {96 * MiB}" in said
    assert "GUEST-MARKER beta" in said and "GUEST-MARKER alpha" not in said
    assert f"userdata-sha256={sha256(user_data('beta').encode())}" in " ".join(said)
    await again.destroy("t-image")
    assert sha256(base.read_bytes()) == pristine
    assert await again.release_storage("t-image", second.spec) == [str(overlay)]  # Retain
