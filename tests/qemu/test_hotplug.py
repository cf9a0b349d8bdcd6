"""Live hotplug of vCPUs, memory and disks: what is live, and real qemu doing it.

The classification is a table. A bare qemu (a boot sector that ignores ACPI) takes a vCPU, a
DIMM and a virtio disk live, shown by QMP; it cannot let a vCPU go (no OS took ACPI's CPU
hotplug over from the firmware), so that change fails with the reason and stays pending, the
vCPU still there. The real guest (about
7 s to boot, 7 s to reboot under tcg) gets a vCPU, a DIMM and a volume disk live, is saved and
restored with them (its ticks go on: the restore rebuilt that hardware), sees the new disk after
a reboot (GUEST-DISK), and releases the vCPU and the disk when they are removed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from reconcilers.driver import ChangeKind
from reconcilers.errors import DriverError
from reconcilers.model import Disk, DiskBus, DomainSpec, QemuSpec, State
from reconcilers.qemu import livespec
from reconcilers.qemu.changes import classify
from reconcilers.qemu.driver import QemuDriver
from tests.qemu.test_savestate import readies, tick_after, ticks
from tests.support.domains import MiB, domain
from tests.support.guest import IDLE_CMDLINE, GuestBuild, guest_domain
from tests.support.qemu import QemuEnv
from tests.support.waiting import async_wait_until

L, R = ChangeKind.LIVE, ChangeKind.RESTART
ROOT, DATA = Disk("root", "/r.raw"), Disk("data", size=16 * MiB)


def spec(machine: str = "pc", **fields: Any) -> DomainSpec:
    disks = fields.pop("disks", (ROOT,))
    return domain(qemu=QemuSpec(machine=machine, disks=disks), **fields).spec


@pytest.mark.parametrize(("old", "new", "expected"), [
    (spec(vcpus=1, max_vcpus=4), spec(vcpus=3, max_vcpus=4), {"vcpus": L}),
    (spec(vcpus=3, max_vcpus=4), spec(vcpus=1, max_vcpus=4), {"vcpus": L}),  # unplug
    (spec(vcpus=1, max_vcpus=2), spec(vcpus=3, max_vcpus=4), {"vcpus": R, "max_vcpus": R}),
    (spec(vcpus=1, max_vcpus=2), spec(vcpus=2, max_vcpus=4), {"vcpus": L, "max_vcpus": R}),
    (spec(vcpus=1), spec(vcpus=2), {"vcpus": R}),  # maxcpus is vcpus
    # reaching the ceiling: the manifest's maxVcpus/maxMemory normalise to unset, same ceiling
    (spec(vcpus=1, max_vcpus=2), spec(vcpus=2), {"vcpus": L, "max_vcpus": L}),
    (spec(memory=256 * MiB, max_memory=384 * MiB), spec(memory=384 * MiB),
     {"memory": L, "max_memory": L}),
    (spec(memory=256 * MiB, max_memory=MiB << 10), spec(memory=512 * MiB, max_memory=MiB << 10),
     {"memory": L}),
    (spec(memory=256 * MiB, max_memory=MiB << 10), spec(memory=300 * MiB, max_memory=MiB << 10),
     {"memory": R}),  # not whole 128 MiB blocks
    (spec(memory=512 * MiB, max_memory=MiB << 10), spec(memory=256 * MiB, max_memory=MiB << 10),
     {"memory": R}),  # shrinking is the balloon's
    (spec(memory=256 * MiB, max_memory=512 * MiB), spec(memory=640 * MiB, max_memory=MiB << 10),
     {"memory": R, "max_memory": R}),
    (spec(memory=256 * MiB), spec(memory=384 * MiB), {"memory": R}),
    (spec(), spec(disks=(ROOT, DATA)), {"qemu.disks": L}),
    (spec(disks=(ROOT, DATA)), spec(), {"qemu.disks": L}),
    (spec(), spec(disks=(DATA, ROOT)), {"qemu.disks": R}),  # not at the end
    (spec(), spec(disks=(ROOT, dataclasses.replace(DATA, bus=DiskBus.SCSI))), {"qemu.disks": R}),
    (spec(), spec(disks=(dataclasses.replace(ROOT, readonly=True), DATA)), {"qemu.disks": R}),
    (spec("q35"), spec("q35", disks=(ROOT, DATA)), {"qemu.disks": R}),  # no hotplug slots
])
def test_classification(old: DomainSpec, new: DomainSpec,
                        expected: dict[str, ChangeKind]) -> None:
    assert classify(old, new) == expected


async def qmp(driver: QemuDriver, name: str, command: str) -> Any:
    return await driver._tracked[name].monitor.execute(command)


@pytest.mark.qemu
async def test_a_bare_qemu_takes_a_vcpu_a_dimm_and_a_disk_but_never_lets_a_vcpu_go(
        qemu_env: QemuEnv, loop_image: Path) -> None:
    name = "t-plug"
    vm = domain(name, image=loop_image, vcpus=1, max_vcpus=2, memory=128 * MiB,
                max_memory=512 * MiB)
    driver = qemu_env.driver()
    await driver.start(vm, paused=False, token="t")
    assert vm.spec.qemu is not None
    grown = dataclasses.replace(vm.spec, vcpus=2, memory=256 * MiB, qemu=dataclasses.replace(
        vm.spec.qemu, disks=(*vm.spec.qemu.disks, DATA)))
    assert driver.classify(vm.spec, grown) == {"vcpus": L, "memory": L, "qemu.disks": L}
    await driver.apply_live(name, vm.spec, grown)
    assert len(await qmp(driver, name, "query-cpus-fast")) == 2
    dimms = await qmp(driver, name, "query-memory-devices")
    assert [(d["data"]["id"], d["data"]["size"]) for d in dimms] == [("dimm0", 128 * MiB)]
    block = {b.get("qdev", ""): b for b in await qmp(driver, name, "query-block")}
    volume = qemu_env.context.state_dir / "pool" / name / "data.qcow2"
    assert block["/machine/peripheral/virtio-disk0/virtio-backend"]["inserted"]["file"] == str(
        volume)
    files = driver._tracked[name].files
    assert livespec.read(files) == grown
    await driver.apply_live(name, vm.spec, grown)  # a retry finds it all done
    assert len(await qmp(driver, name, "query-cpus-fast")) == 2

    with pytest.raises(DriverError, match="cannot release vcpu1 now"):
        await driver.apply_live(name, grown, dataclasses.replace(grown, vcpus=1))
    assert len(await qmp(driver, name, "query-cpus-fast")) == 2  # pending, not half-done
    assert livespec.read(files) == grown
    assert (await driver.observe(name)).state is State.RUNNING


@pytest.mark.qemu
@pytest.mark.guest
async def test_hotplugged_devices_survive_a_save_and_reach_the_guest(
        qemu_env: QemuEnv, guest_build: GuestBuild) -> None:
    name = "t-hotguest"
    # 256 MiB: with DIMM slots the guest keeps a 64 MiB bounce buffer for the memory above 4 GiB
    vm = guest_domain(name, guest_build, memory=256 * MiB, max_memory=512 * MiB, vcpus=1,
                      max_vcpus=2, cmdline=f"{IDLE_CMDLINE} guest.ticks=1")
    assert vm.spec.qemu is not None
    vm = dataclasses.replace(vm, spec=dataclasses.replace(vm.spec, qemu=dataclasses.replace(
        vm.spec.qemu, disks=(Disk("root", size=32 * MiB),))))
    log = qemu_env.context.log_dir / f"{name}.log"
    driver = qemu_env.driver()
    await driver.start(vm, paused=False, token="t1")
    await tick_after(log, 0)
    assert vm.spec.qemu is not None
    grown = dataclasses.replace(vm.spec, vcpus=2, memory=384 * MiB, qemu=dataclasses.replace(
        vm.spec.qemu, disks=(*vm.spec.qemu.disks, DATA)))
    await driver.apply_live(name, vm.spec, grown)

    image = await driver.save(name)  # with the hotplugged vCPU, DIMM and disk
    assert image.spec == grown
    restored = dataclasses.replace(vm, spec=grown)
    offset, last = log.stat().st_size, max(ticks(log))
    await driver.restore(restored, token="t2")
    assert last < await tick_after(log, last, offset) <= last + 2
    assert len(await qmp(driver, name, "query-cpus-fast")) == 2
    assert len(await qmp(driver, name, "query-memory-devices")) == 1

    offset = log.stat().st_size
    await driver._tracked[name].qmp.system_reset()  # the guest boots again and lists its disks
    await async_wait_until(lambda: readies(log) == 2, "GUEST-READY after the reset",
                           timeout=90.0, interval=0.2)
    said = log.read_bytes()[offset:].decode(errors="replace").splitlines()
    assert f"GUEST-DISK vdb {16 * MiB}" in said and f"GUEST-DISK vda {32 * MiB}" in said

    await driver.apply_live(name, grown, vm.spec)  # vCPU and disk released by the guest
    assert len(await qmp(driver, name, "query-cpus-fast")) == 1
    assert "virtio-disk1" not in await driver._tracked[name].qmp.peripherals()
    await driver.destroy(name)
