"""Capability probe, accelerator choice, and host validation errors that name the field."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconcilers.errors import HostValidationError
from reconcilers.model import (
    Accel,
    CpuTune,
    Disk,
    DiskBus,
    Domain,
    Lifecycle,
    LifecycleAction,
    Nic,
    State,
    VcpuPin,
    Watchdog,
    WatchdogAction,
)
from reconcilers.qemu import hostcheck
from reconcilers.qemu.capabilities import (
    PVM_MODULE,
    PVM_WARNING,
    AccelError,
    CapabilityCache,
    QemuCaps,
    choose_accel,
)
from tests.support.domains import TCG_PC, domain
from tests.support.qemu import QemuEnv

CAPS = QemuCaps(binary="qemu", mtime_ns=1, version="7.2.0", machines={"pc": 255, "q35": 288},
                default_machine="pc", devices=frozenset({"virtio-net-pci", "i6300esb", "ib700"}),
                accels=frozenset({"tcg", "kvm"}), kvm_usable=False, kvm_message="no kvm here")


@pytest.mark.qemu
async def test_probe_real_binary_and_cache(tmp_path: Path) -> None:
    cache = CapabilityCache(tmp_path / "caps.json")
    caps = await cache.get("qemu-system-x86_64")
    assert not caps.error
    assert {"pc", "q35"} <= set(caps.machines) and caps.machines["pc"] >= 1
    assert "tcg" in caps.accels and "pvpanic" in caps.devices
    if PVM_MODULE.exists():
        assert not caps.kvm_usable and "PVM" in caps.kvm_message and caps.kvm_pvm
    # a fresh cache reads the stored result for the same binary and mtime, without probing
    stored = dataclasses.replace(caps, version="9.9.9-from-cache")
    (tmp_path / "caps.json").write_text(stored.to_json())
    assert (await CapabilityCache(tmp_path / "caps.json").get(caps.binary)).version == \
        "9.9.9-from-cache"
    # a different mtime means a different binary: probed again
    (tmp_path / "caps.json").write_text(dataclasses.replace(stored, mtime_ns=1).to_json())
    assert (await CapabilityCache(tmp_path / "caps.json").get(caps.binary)).version == \
        caps.version


async def test_missing_binary_is_reported_not_raised(tmp_path: Path) -> None:
    caps = await CapabilityCache(tmp_path / "c.json").get("no-such-qemu-binary")
    assert "not found" in caps.error


def test_accelerator_choice() -> None:
    usable = dataclasses.replace(CAPS, kvm_usable=True, kvm_message="")
    assert choose_accel(Accel.AUTO, usable) == (Accel.KVM, "accel kvm (auto)")
    assert choose_accel(Accel.AUTO, CAPS) == (Accel.TCG, "accel tcg (kvm unusable: no kvm here)")
    assert choose_accel(Accel.TCG, usable) == (Accel.TCG, "accel tcg")
    with pytest.raises(AccelError, match="kvm is not usable on this host: no kvm here"):
        choose_accel(Accel.KVM, CAPS)
    pvm = dataclasses.replace(CAPS, kvm_message="host kvm is the nested PVM flavour", kvm_pvm=True)
    assert choose_accel(Accel.AUTO, pvm)[0] is Accel.TCG  # auto keeps choosing tcg under PVM
    assert choose_accel(Accel.KVM, pvm) == (Accel.KVM, f"accel kvm; {PVM_WARNING}")


@pytest.mark.qemu
@pytest.mark.skipif(not PVM_MODULE.exists(), reason="the host's KVM is not the PVM flavour")
async def test_explicit_kvm_runs_under_pvm_with_a_warning(qemu_env: QemuEnv,
                                                         hello_image: Path) -> None:
    """qemu starts with -accel kvm and SeaBIOS boots the boot sector, which writes to COM1 and
    powers off: firmware runs under PVM; the note warns that guest kernels may not."""
    caps = await CapabilityCache(qemu_env.context.state_dir / "caps.json").get(
        "qemu-system-x86_64")
    assert caps.kvm_pvm and not caps.kvm_usable, caps
    driver = qemu_env.driver()
    vm = qemu_field(domain("t-pvm", image=hello_image), accel=Accel.KVM)
    live = await driver.start(vm, paused=False, token="test")
    assert live.message == f"accel kvm; {PVM_WARNING}", live
    assert "guest kernels may not boot" in live.message
    await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    log = (Path(qemu_env.context.log_dir) / "t-pvm.log").read_text()
    assert "-accel kvm" in log and "DQ!" in log, log


@pytest.mark.qemu
async def test_driver_capabilities_say_which_accel(qemu_env: QemuEnv) -> None:
    caps = await qemu_env.driver().capabilities()
    assert caps.available and caps.version
    assert caps.message.startswith("accel ")
    if PVM_MODULE.exists():
        assert caps.message.startswith("accel tcg (kvm unusable:")


def qemu_field(domain: Domain, **changes: Any) -> Domain:
    assert domain.spec.qemu is not None
    qemu = dataclasses.replace(domain.spec.qemu, **changes)
    return dataclasses.replace(domain, spec=dataclasses.replace(domain.spec, qemu=qemu))


def spec_field(domain: Domain, **changes: Any) -> Domain:
    return dataclasses.replace(domain, spec=dataclasses.replace(domain.spec, **changes))


HOST_CPUS = os.cpu_count() or 1
CASES: list[tuple[str, Callable[[Domain, Path], Domain]]] = [
    ("spec.vcpus", lambda d, _: spec_field(d, vcpus=HOST_CPUS + 1)),
    ("spec.maxVcpus", lambda d, _: spec_field(d, max_vcpus=300)),
    ("spec.memory", lambda d, _: spec_field(d, memory=1 << 50)),
    ("spec.currentMemory", lambda d, _: spec_field(d, current_memory=d.spec.memory * 2)),
    ("spec.qemu.disks[0].source", lambda d, t: qemu_field(d, disks=(
        Disk(name="x", source=str(t / "missing.img"), bus=DiskBus.IDE),))),
    ("spec.qemu.disks[0].source", lambda d, _: qemu_field(d, disks=(
        Disk(name="x", source="relative.img"),))),
    ("spec.qemu.kernel", lambda d, t: qemu_field(d, kernel=str(t / "no-vmlinuz"))),
    ("spec.qemu.initrd", lambda d, t: qemu_field(d, initrd=str(t / "no-initrd"))),
    ("spec.qemu.machine", lambda d, _: qemu_field(d, machine="virt")),
    ("spec.qemu.accel", lambda d, _: qemu_field(d, accel=Accel.KVM)),
    ("spec.cputune.vcpupin[0].vcpu", lambda d, _: spec_field(d, cputune=CpuTune(
        vcpupin=(VcpuPin(vcpu=3, cpuset="0"),)))),
    ("spec.cputune.vcpupin[0].cpuset", lambda d, _: spec_field(d, cputune=CpuTune(
        vcpupin=(VcpuPin(vcpu=0, cpuset=str(HOST_CPUS)),)))),
    ("spec.cputune.emulatorpin", lambda d, _: spec_field(d, cputune=CpuTune(
        emulatorpin="zero"))),
    ("spec.lifecycle.onCrash", lambda d, _: spec_field(d, lifecycle=Lifecycle(
        on_crash=LifecycleAction.COREDUMP_DESTROY))),
    ("spec.lifecycle.onPoweroff", lambda d, _: spec_field(d, lifecycle=Lifecycle(
        on_poweroff=LifecycleAction.RESTART, on_reboot=LifecycleAction.DESTROY))),
    ("spec.qemu.watchdog.action", lambda d, _: qemu_field(d, watchdog=Watchdog(
        action=WatchdogAction.DUMP))),
    ("spec.qemu.nics[0].model", lambda d, _: qemu_field(d, nics=(Nic(model="nope"),))),
    ("spec.qemu.disks[3].bus", lambda d, t: qemu_field(d, cdrom=str(t), disks=tuple(
        Disk(name=f"d{i}", source=str(t), bus=DiskBus.IDE, readonly=True) for i in range(4)))),
]


@pytest.mark.parametrize("field,mutate", CASES)
def test_host_validation_names_the_field(field: str, mutate: Callable[[Domain, Path], Domain],
                                         loop_image: Path, tmp_path: Path) -> None:
    mutated = mutate(domain("t-check", image=loop_image), tmp_path)
    with pytest.raises(HostValidationError) as caught:
        hostcheck.validate(mutated, CAPS)
    assert caught.value.field == field
    assert caught.value.domain == "t-check"


def test_valid_spec_passes_with_its_accel_note(loop_image: Path) -> None:
    assert hostcheck.validate(domain("t-ok", image=loop_image), CAPS) == (Accel.TCG, "accel tcg")


@pytest.mark.qemu
async def test_driver_validate_refuses_unsafe_values(qemu_env: QemuEnv,
                                                     loop_image: Path) -> None:
    evil = domain("t-evil", qemu=dataclasses.replace(TCG_PC, disks=(
        Disk(name="boot\n-device x", source=str(loop_image), bus=DiskBus.IDE),)))
    with pytest.raises(HostValidationError) as caught:
        await qemu_env.driver().validate(evil)
    assert caught.value.field == "spec.qemu.disks[0].name"
