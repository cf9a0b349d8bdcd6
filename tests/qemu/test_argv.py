"""The command line builder: golden files, and the proof that no manifest value adds an option.

Inputs are manifests (`tests/golden/qemu/<case>.yaml`); golden files hold one argument per
line (arguments can never contain a newline: those are refused). Regenerate after an intended
change with `DOMCTL_REGEN_GOLDEN=1 pytest tests/qemu` and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from reconcilers.model import Accel, Disk, Domain, Nic, QemuSpec, Vnc
from reconcilers.qemu.argv import build_argv
from reconcilers.qemu.commands import Dimm
from reconcilers.qemu.devices import HotCpu, Layout
from reconcilers.qemu.escape import ValueRefused
from reconcilers.qemu.layout import domain_files
from tests.support.domains import MiB, domain

CASES = ("minimal", "full", "pc-ide-pty", "commas", "hotplug")
LONE = {"-kernel", "-append", "-bios", "-pidfile", "-uuid", "-D"}  # not key=value parsed
# split by qemu into files at single commas, each file's arguments after a blank (multiboot)
MODULE_LISTS = {"-initrd"}


def render(domain: Domain, restore: Layout | None = None) -> list[str]:
    assert domain.spec.qemu is not None
    accel = Accel.TCG if domain.spec.qemu.accel is Accel.TCG else Accel.KVM
    files = domain_files(Path("/run/domctl"), Path("/var/log/domctl"), domain.name)
    return build_argv(domain, "qemu-system-x86_64", accel, files, vnc_port=5901,
                      restore=restore)


@pytest.mark.parametrize("case", CASES)
def test_golden_argv(case: str, argv_cases: dict[str, Domain], golden_dir: Path) -> None:
    argv = render(argv_cases[case])
    golden = golden_dir / f"{case}.argv"
    if os.environ.get("DOMCTL_REGEN_GOLDEN") == "1":
        golden.write_text("\n".join(argv) + "\n")
    assert argv == golden.read_text().splitlines()


def test_every_manifest_has_a_golden_file(argv_cases: dict[str, Domain],
                                          golden_dir: Path) -> None:
    assert set(argv_cases) == set(CASES)
    assert {p.stem for p in golden_dir.glob("*.argv")} == set(CASES)


def keyval_keys(value: str) -> list[str]:
    """The keys qemu reads from `value`: split at single commas (`,,` is a literal comma)."""
    parts, current, i = [], "", 0
    while i < len(value):
        if value[i] == ",":
            if value[i + 1:i + 2] == ",":
                current, i = current + ",", i + 2
                continue
            parts.append(current)
            current = ""
        else:
            current += value[i]
        i += 1
    parts.append(current)
    return [p.split("=", 1)[0] if "=" in p else "<implied>" for p in parts]


def structure(argv: list[str]) -> list[tuple[str, Any]]:
    """Options in order, each with the keys of its value (or the value itself when lone)."""
    shape: list[tuple[str, Any]] = []
    i = 1
    while i < len(argv):
        option = argv[i]
        assert option.startswith("-"), f"argument {option!r} is not an option"
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else None
        if option in MODULE_LISTS and value is not None:
            modules = keyval_keys(value.replace("=", ""))  # one entry per file qemu would open
            shape.append((option, [(len(modules), any(" " in m for m in value.split(",")))]))
        elif option in LONE or value is None:
            shape.append((option, None))
        else:
            shape.append((option, keyval_keys(value)))
        i += 1 if value is None else 2
    return shape


def with_field(domain: Domain, field: str, value: str) -> Domain:
    """`domain` with one string field (a dotted path through spec/metadata) set to `value`."""
    qemu = domain.spec.qemu
    assert qemu is not None
    setters = {
        "metadata.name": lambda: dataclasses.replace(
            domain, metadata=dataclasses.replace(domain.metadata, name=value)),
        "spec.cpu.model": lambda: dataclasses.replace(domain, spec=dataclasses.replace(
            domain.spec, cpu=dataclasses.replace(domain.spec.cpu, model=value))),
    }
    if field in setters:
        return setters[field]()
    sub = field.removeprefix("spec.qemu.")
    change: dict[str, Any] = {sub.split(".")[-1]: value}
    if sub.startswith("disks[0]."):
        qemu = dataclasses.replace(qemu, disks=(dataclasses.replace(
            qemu.disks[0], **change),))
    elif sub.startswith("nics[0]."):
        qemu = dataclasses.replace(qemu, nics=(dataclasses.replace(
            qemu.nics[0], **change),))
    elif sub.startswith("vnc."):
        assert qemu.vnc is not None
        qemu = dataclasses.replace(qemu, vnc=dataclasses.replace(
            qemu.vnc, **change))
    else:
        qemu = dataclasses.replace(qemu, **change)
    return dataclasses.replace(domain, spec=dataclasses.replace(domain.spec, qemu=qemu))


STRING_FIELDS = ("metadata.name", "spec.cpu.model", "spec.qemu.machine", "spec.qemu.firmware",
                 "spec.qemu.kernel", "spec.qemu.initrd", "spec.qemu.cmdline",
                 "spec.qemu.cdrom", "spec.qemu.disks[0].name", "spec.qemu.disks[0].source",
                 "spec.qemu.nics[0].model", "spec.qemu.vnc.listen", "spec.qemu.vnc.password")
PAYLOADS = ("a,b", "x,id=evil", "a=b", "x,,y", ",", "=", "p,-S", "-daemonize", "-S,x=y",
            "x\n-device evil", "x\rX", "x\0y", "x\ty", "/boot/a /etc/shadow", "/a,/etc/shadow")


def baseline() -> Domain:
    """A domain with every string field set (built in code: no loader needed)."""
    qemu = QemuSpec(firmware="bios", kernel="kernel", initrd="initrd", cmdline="cmdline",
                    cdrom="cdrom", disks=(Disk(name="disk", source="source"),), nics=(Nic(),),
                    vnc=Vnc(listen="listen", password="password"))
    return domain("base", qemu=qemu)


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_no_value_adds_an_option(field: str) -> None:
    base = baseline()
    expected = structure(render(with_field(base, field, "benign")))
    for payload in PAYLOADS:
        try:
            argv = render(with_field(base, field, payload))
        except ValueRefused as refused:
            assert refused.field == field
            continue
        assert any(c in payload for c in ", =") or payload.startswith("-"), payload
        assert not any(ord(c) < 32 for c in "".join(argv)), (field, payload)
        assert structure(argv) == expected, (field, payload)


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_control_characters_are_refused_naming_the_field(field: str) -> None:
    with pytest.raises(ValueRefused) as refused:
        render(with_field(baseline(), field, "ok\n-device evil"))
    assert refused.value.field == field


@pytest.mark.parametrize("field,value", [("metadata.uuid", "not-a-uuid,id=x"),
                                         ("spec.qemu.nics[0].mac", "52:54:00:12:34:56,id=x")])
def test_structured_values_are_refused(field: str, value: str) -> None:
    domain = baseline()
    if field == "metadata.uuid":
        domain = dataclasses.replace(domain, metadata=dataclasses.replace(domain.metadata,
                                                                          uuid=value))
    else:
        domain = with_field(domain, field, value)
    with pytest.raises(ValueRefused) as refused:
        render(domain)
    assert refused.value.field == field


def test_qemu_section_is_required() -> None:
    domain = baseline()
    files = domain_files(Path("/run/domctl"), Path("/var/log/domctl"), domain.name)
    with pytest.raises(ValueRefused) as refused:
        build_argv(dataclasses.replace(domain, spec=dataclasses.replace(domain.spec, qemu=None)),
                   "qemu-system-x86_64", Accel.TCG, files)
    assert refused.value.field == "spec.qemu"


def test_the_driver_hands_qemu_its_qmp_socket_by_fd() -> None:
    vm = domain("vm")
    files = domain_files(Path("/run/domctl"), Path("/var/log/domctl"), vm.name)
    argv = build_argv(vm, "qemu-system-x86_64", Accel.TCG, files, qmp_fd=7)
    assert "socket,id=charmonitor,fd=7,server=on,wait=off" in argv
    assert not any(str(files.qmp) in arg for arg in argv)
    assert argv[argv.index("-pidfile") + 1] == str(files.pidfile)  # what finds it in /proc


def test_a_restore_rebuilds_the_saved_runs_hardware(argv_cases: dict[str, Domain]) -> None:
    """The boot vCPUs and memory, the hotplugged vCPUs and DIMMs, every PCI device in its slot
    and the queues of virtio disks as the saved run had them; then it waits for the state."""
    hotplug = argv_cases["hotplug"]
    assert hotplug.spec.qemu is not None
    grown = dataclasses.replace(hotplug, spec=dataclasses.replace(
        hotplug.spec, vcpus=2, memory=384 * MiB, qemu=dataclasses.replace(
            hotplug.spec.qemu, disks=(*hotplug.spec.qemu.disks, Disk("data", "/d.raw")))))
    layout = Layout(boot_vcpus=1, base_memory=256 * MiB,
                    cpus=(HotCpu("vcpu1", "qemu64-x86_64-cpu",
                                 {"socket-id": 0, "core-id": 1, "thread-id": 0}),),
                    dimms=(Dimm("dimm0", "memdimm0", 128 * MiB, 0, 1 << 32),),
                    slots={"virtio-disk0": 2, "scsi0": 3, "net0": 4, "balloon0": 5,
                           "virtio-disk1": 6},
                    queues={"virtio-disk0": 1, "virtio-disk1": 1, "scsi0": 1})
    argv = render(grown, restore=layout)
    assert argv[argv.index("-m") + 1] == "size=256M,slots=16,maxmem=1024M"
    assert argv[argv.index("-smp") + 1] == "1,maxcpus=4"
    devices = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-device"]
    assert "driver=qemu64-x86_64-cpu,id=vcpu1,socket-id=0,core-id=1,thread-id=0" in devices
    assert "driver=pc-dimm,id=dimm0,memdev=memdimm0,slot=0,addr=0x100000000" in devices
    assert argv[argv.index("-object") + 1] == ("qom-type=memory-backend-ram,id=memdimm0,"
                                               "size=134217728")
    assert any(d.startswith("virtio-blk-pci,bus=pci.0,addr=0x6,id=virtio-disk1,num-queues=1,")
               for d in devices)
    assert "virtio-balloon-pci,id=balloon0,bus=pci.0,addr=0x5" in devices
    assert "virtio-scsi-pci,id=scsi0,bus=pci.0,addr=0x3,num-queues=1" in devices
    assert argv[-2:] == ["-incoming", "defer"]
    # without a layout of its own, a device takes the first slot the saved run left free
    moved = render(grown, restore=dataclasses.replace(layout, slots={"balloon0": 2}))
    assert "virtio-balloon-pci,id=balloon0,bus=pci.0,addr=0x2" in moved
    assert any(d.startswith("virtio-blk-pci,bus=pci.0,addr=0x3,id=virtio-disk0") for d in moved)
