"""A qemu domain's storage without a guest: its argv (golden), which of its changes are live,
its host check, and a real UEFI qemu reaching OVMF's boot manager with its volumes made, kept,
listed and released as their deletePolicy says."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconcilers.diff import Apply, classify_changes
from reconcilers.driver import ChangeKind
from reconcilers.errors import HostValidationError
from reconcilers.model import (
    FIRMWARE_UEFI,
    Accel,
    CloudInit,
    DeletePolicy,
    Disk,
    DiskBus,
    DiskFormat,
    Domain,
    QemuSpec,
)
from reconcilers.qemu import changes, hostcheck
from reconcilers.qemu.argv import build_argv
from reconcilers.qemu.layout import domain_files
from reconcilers.storage import firmware
from reconcilers.storage.firmware import Ovmf
from reconcilers.storage.pool import Pool
from tests.qemu.test_host import CAPS
from tests.support.domains import domain
from tests.support.qemu import QemuEnv
from tests.support.waiting import async_wait_until

GOLDEN = Path(__file__).parent.parent / "golden" / "qemu" / "storage"
MiB = 1 << 20
USER_DATA = "#cloud-config\n#guestkit-marker: alpha\n"


def with_qemu(base: Domain, **changed: Any) -> Domain:
    assert base.spec.qemu is not None
    qemu = dataclasses.replace(base.spec.qemu, **changed)
    return dataclasses.replace(base, spec=dataclasses.replace(base.spec, qemu=qemu))


def storage_vm(machine: str) -> Domain:
    """Every kind of disk: a source, an overlay, an empty volume; a cdrom, a seed, UEFI."""
    qemu = QemuSpec(machine=machine, accel=Accel.TCG, firmware=FIRMWARE_UEFI,
                    cdrom="/srv/install.iso", cloud_init=CloudInit(user_data=USER_DATA),
                    disks=(Disk("root", image="/srv/images/debian-12.qcow2", size=20 << 30),
                           Disk("data", size=1 << 30, bus=DiskBus.SCSI),
                           Disk("old", source="/srv/old.raw", format=DiskFormat.RAW,
                                bus=DiskBus.SATA)))
    return domain("vm", qemu=qemu)


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_golden_argv_of_volumes_seed_and_uefi(machine: str) -> None:
    files = dataclasses.replace(
        domain_files(Path("/run/domctl"), Path("/var/log/domctl"), "vm"),
        pool=Pool(Path("/var/lib/domctl/pool")).of("vm"),
        ovmf=Ovmf(Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")))
    argv = build_argv(storage_vm(machine), "qemu-system-x86_64", Accel.TCG, files)
    golden = GOLDEN / f"{machine}.argv"
    if os.environ.get("DOMCTL_REGEN_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text("\n".join(argv) + "\n")
    assert argv == golden.read_text().splitlines()


def grown(vm: Domain, index: int, **changed: Any) -> Domain:
    assert vm.spec.qemu is not None
    disks = list(vm.spec.qemu.disks)
    disks[index] = dataclasses.replace(disks[index], **changed)
    return with_qemu(vm, disks=tuple(disks))


@pytest.mark.parametrize("change,expected", [
    (lambda vm: grown(vm, 0, size=30 << 30), {"qemu.disks[0].size": Apply.LIVE}),
    (lambda vm: grown(vm, 1, size=512 * MiB), {"qemu.disks[1].size": Apply.LIVE}),
    (lambda vm: grown(vm, 0, size=30 << 30, image="/srv/images/debian-13.qcow2"),
     {"qemu.disks[0].image": Apply.RESTART, "qemu.disks[0].size": Apply.RESTART}),
    (lambda vm: grown(vm, 0, delete_policy=DeletePolicy.DELETE),
     {"qemu.disks[0].delete_policy": Apply.RESTART}),
    (lambda vm: with_qemu(vm, disks=vm.spec.qemu.disks[:2]), {"qemu.disks": Apply.RESTART}),
    (lambda vm: with_qemu(vm, cloud_init=CloudInit(user_data="#!/bin/sh\n")),
     {"qemu.cloud_init.user_data": Apply.RESTART}),
    (lambda vm: with_qemu(vm, cloud_init=None), {"qemu.cloud_init": Apply.RESTART}),
    (lambda vm: with_qemu(vm, firmware="bios"), {"qemu.firmware": Apply.RESTART}),
])
def test_a_volume_size_is_live_the_rest_of_storage_waits_for_a_restart(
        change: Any, expected: dict[str, Apply]) -> None:
    """As `domctl diff` shows them (reconcilers/diff.py over the driver's classification)."""
    old = storage_vm("pc").spec
    new = change(storage_vm("pc")).spec
    shown = classify_changes(old, new, changes.classify(old, new))
    assert {change.path: change.apply for change in shown} == expected
    if Apply.LIVE in expected.values():
        assert set(changes.classify(old, new).values()) == {ChangeKind.LIVE}


@pytest.mark.parametrize("field,change", [
    ("spec.qemu.disks[0].image", lambda t: [Disk("root", image=str(t / "missing.qcow2"))]),
    ("spec.qemu.cloudInit.userDataFile",
     lambda t: {"cloud_init": CloudInit(user_data_file=str(t / "missing"))}),
    ("spec.qemu.disks[2].bus", lambda t: {"cloud_init": CloudInit(), "cdrom": str(t), "disks": (
        *(Disk(f"d{i}", source=str(t), bus=DiskBus.IDE, readonly=True) for i in range(2)),
        Disk("last", size=MiB, bus=DiskBus.IDE))}),  # 4 IDE positions on pc, the seed's too
])
def test_host_check_of_storage_fields(field: str, change: Any, tmp_path: Path) -> None:
    changed = change(tmp_path)
    vm = with_qemu(domain("t-check"), **(changed if isinstance(changed, dict)
                                         else {"disks": tuple(changed)}))
    with pytest.raises(HostValidationError) as caught:
        hostcheck.validate(vm, CAPS)
    assert caught.value.field == field


def test_firmware_bios_and_uefi_are_no_files() -> None:
    for value in ("bios", FIRMWARE_UEFI):
        assert hostcheck.validate(with_qemu(domain("t-fw"), firmware=value), CAPS)[0] is Accel.TCG


@pytest.mark.qemu
async def test_uefi_without_ovmf_names_the_package(qemu_env: QemuEnv, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firmware, "OVMF_DIR", tmp_path / "no-ovmf")
    with pytest.raises(HostValidationError, match=r"install Debian's 'ovmf' package") as caught:
        await qemu_env.driver().validate(with_qemu(domain("t-uefi"), firmware=FIRMWARE_UEFI))
    assert caught.value.field == "spec.qemu.firmware"


@pytest.mark.qemu
async def test_uefi_boots_to_the_boot_manager_its_variables_kept_then_released(
        qemu_env: QemuEnv, tmp_path: Path) -> None:
    """OVMF (tcg, a few seconds) prints its boot manager's lines on the serial console."""
    base = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), str(16 * MiB)],
                   check=True)
    vm = with_qemu(domain("t-uefi"), firmware=FIRMWARE_UEFI,
                   cloud_init=CloudInit(user_data=USER_DATA),
                   disks=(Disk("root", image=str(base)),
                          Disk("scratch", size=4 * MiB, delete_policy=DeletePolicy.DELETE)))
    driver = qemu_env.driver()
    await driver.start(vm, paused=False, token="test")
    log = qemu_env.context.log_dir / "t-uefi.log"
    await async_wait_until(lambda: b"BdsDxe:" in log.read_bytes(), "OVMF's boot manager",
                           timeout=60, interval=0.2)
    pool = qemu_env.context.state_dir / "pool" / "t-uefi"
    nvram = pool / "VARS.fd"
    listed = {entry["name"]: entry for entry in await driver.disks("t-uefi", vm.spec)}
    assert listed["root"] | {"actualSize": 0} == {
        "name": "root", "device": "disk", "bus": "virtio", "source": str(pool / "root.qcow2"),
        "volume": True, "format": "qcow2", "readonly": False, "image": str(base),
        "deletePolicy": "Retain", "virtualSize": 16 * MiB, "actualSize": 0}
    assert (listed["scratch"]["virtualSize"], listed["scratch"]["image"]) == (4 * MiB, None)
    assert (listed["cidata"]["source"], listed["cidata"]["device"]) == (str(pool / "cidata.iso"),
                                                                       "cdrom")
    await driver.destroy("t-uefi")
    written, inode = nvram.read_bytes(), nvram.stat().st_ino
    template = firmware.find_ovmf()
    assert template is not None and written != template.vars_template.read_bytes()

    await driver.start(vm, paused=True, token="test")  # the variables are the domain's own
    assert (nvram.stat().st_ino, nvram.read_bytes()) == (inode, written)
    await driver.destroy("t-uefi")
    assert sorted(await driver.release_storage("t-uefi", vm.spec)) == [
        str(pool / "VARS.fd"), str(pool / "root.qcow2")]  # Retain: kept with its variables
    assert sorted(p.name for p in pool.iterdir()) == ["VARS.fd", "root.qcow2"]
    deleting = grown(vm, 0, delete_policy=DeletePolicy.DELETE)
    assert await driver.release_storage("t-uefi", deleting.spec) == []
    assert not pool.exists()
