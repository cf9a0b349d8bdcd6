"""Can this host run the spec? Each check names the manifest field (`spec.qemu.disks[0].source`).

Called by QemuDriver.validate (and so before every start). It reads the file system, the host's
CPU and memory counts and the probed capabilities; it never changes anything and never starts
qemu. Field paths use the manifest's camelCase keys.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from reconcilers.errors import HostValidationError
from reconcilers.model import (
    FIRMWARE_BIOS,
    FIRMWARE_UEFI,
    Accel,
    DiskBus,
    Domain,
    LifecycleAction,
    QemuSpec,
    WatchdogAction,
)
from reconcilers.qemu.capabilities import AccelError, QemuCaps, choose_accel

_COREDUMP = (LifecycleAction.COREDUMP_DESTROY, LifecycleAction.COREDUMP_RESTART)


def parse_cpuset(text: str) -> set[int]:
    """ "0-2,4" → {0, 1, 2, 4}; ValueError for anything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        first, last = int(low), int(high or low)
        if first < 0 or last < first:
            raise ValueError(f"bad range {part!r}")
        cpus.update(range(first, last + 1))
    return cpus


def validate(domain: Domain, caps: QemuCaps) -> tuple[Accel, str]:
    """Raise HostValidationError for the first problem; return the accelerator and its note."""
    name, qemu = domain.name, domain.spec.qemu
    if caps.error:
        raise HostValidationError(name, "spec.driver", f"qemu is unusable here: {caps.error}")
    if qemu is None:
        raise HostValidationError(name, "spec.qemu", "a qemu domain needs a qemu section")
    if qemu.machine not in caps.machines:
        raise HostValidationError(name, "spec.qemu.machine",
                                  f"{qemu.machine!r} is not a machine type of qemu {caps.version}")
    try:
        accel, note = choose_accel(qemu.accel, caps)
    except AccelError as exc:
        raise HostValidationError(name, "spec.qemu.accel", str(exc)) from exc
    _check_cpus(domain, caps.machines[qemu.machine])
    _check_memory(domain)
    _check_lifecycle(domain)
    _check_files(name, qemu)
    _check_devices(name, qemu, caps)
    return accel, note


def _check_cpus(domain: Domain, machine_max: int) -> None:
    name, spec = domain.name, domain.spec
    host = os.cpu_count() or 1
    maximum = spec.max_vcpus or spec.vcpus
    if spec.vcpus > host:
        raise HostValidationError(name, "spec.vcpus", f"{spec.vcpus} vCPUs but the host has {host}")
    if maximum < spec.vcpus:
        raise HostValidationError(name, "spec.maxVcpus", "must not be below spec.vcpus")
    if maximum > machine_max:
        raise HostValidationError(name, "spec.maxVcpus" if spec.max_vcpus else "spec.vcpus",
                                  f"{maximum} vCPUs exceed the machine's limit of {machine_max}")
    pins = [(f"spec.cputune.vcpupin[{i}].cpuset", p.cpuset)
            for i, p in enumerate(spec.cputune.vcpupin)]
    if spec.cputune.emulatorpin is not None:
        pins.append(("spec.cputune.emulatorpin", spec.cputune.emulatorpin))
    for index, pin in enumerate(spec.cputune.vcpupin):
        if not 0 <= pin.vcpu < spec.vcpus:
            raise HostValidationError(name, f"spec.cputune.vcpupin[{index}].vcpu",
                                      f"vCPU {pin.vcpu} does not exist (vcpus: {spec.vcpus})")
    for field, text in pins:
        try:
            cpus = parse_cpuset(text)
        except ValueError as exc:
            raise HostValidationError(name, field, f"{text!r} is not a cpu list: {exc}") from exc
        if max(cpus) >= host:
            raise HostValidationError(name, field, f"host cpu {max(cpus)} does not exist")


def _check_memory(domain: Domain) -> None:
    name, spec = domain.name, domain.spec
    total = psutil.virtual_memory().total
    if spec.memory > total:
        raise HostValidationError(name, "spec.memory", f"{spec.memory >> 20} MiB exceed the "
                                                       f"host's {total >> 20} MiB")
    if spec.current_memory is not None and spec.current_memory > spec.memory:
        raise HostValidationError(name, "spec.currentMemory", "must not exceed spec.memory")


def _check_lifecycle(domain: Domain) -> None:
    name, lifecycle, qemu = domain.name, domain.spec.lifecycle, domain.spec.qemu
    assert qemu is not None
    if lifecycle.on_crash in _COREDUMP:
        raise HostValidationError(name, "spec.lifecycle.onCrash",
                                  "coredump actions are not supported by the qemu driver")
    for field, action in (("onPoweroff", lifecycle.on_poweroff),
                          ("onReboot", lifecycle.on_reboot)):
        if action in _COREDUMP:
            raise HostValidationError(name, f"spec.lifecycle.{field}",
                                      f"{action.value} is only valid for onCrash")
    if (lifecycle.on_poweroff is LifecycleAction.RESTART
            and lifecycle.on_reboot is LifecycleAction.DESTROY):
        raise HostValidationError(name, "spec.lifecycle.onPoweroff",
                                  "restart together with onReboot destroy is not allowed")
    if qemu.watchdog is not None and qemu.watchdog.action is WatchdogAction.DUMP:
        raise HostValidationError(name, "spec.qemu.watchdog.action",
                                  "dump is not supported by the qemu driver")


def _check_files(name: str, qemu: QemuSpec) -> None:
    """Every file the manifest names exists and is readable; a disk's source is writable
    unless the disk is read-only (a base image is only ever read)."""
    firmware = None if qemu.firmware in (FIRMWARE_BIOS, FIRMWARE_UEFI) else qemu.firmware
    files = [(f"spec.qemu.{key}", path, True)
             for key, path in (("firmware", firmware), ("kernel", qemu.kernel),
                               ("initrd", qemu.initrd), ("cdrom", qemu.cdrom))
             if path is not None]
    for i, disk in enumerate(qemu.disks):
        if disk.source is not None:
            files.append((f"spec.qemu.disks[{i}].source", disk.source, disk.readonly))
        if disk.image is not None:
            files.append((f"spec.qemu.disks[{i}].image", disk.image, True))
    if qemu.cloud_init is not None:
        files += [(f"spec.qemu.cloudInit.{key}", path, True)
                  for key, path in (("userDataFile", qemu.cloud_init.user_data_file),
                                    ("networkConfigFile", qemu.cloud_init.network_config_file))
                  if path is not None]
    for field, path, readonly in files:
        if not Path(path).is_absolute():
            raise HostValidationError(name, field, f"{path!r} is not an absolute path")
        if not os.path.exists(path):
            raise HostValidationError(name, field, f"{path} does not exist")
        if not os.access(path, os.R_OK):
            raise HostValidationError(name, field, f"{path} is not readable")
        if not readonly and not os.access(path, os.W_OK):
            raise HostValidationError(name, field, f"{path} is not writable "
                                                   "(mark the disk readonly?)")


def _check_devices(name: str, qemu: QemuSpec, caps: QemuCaps) -> None:
    # argv.py puts IDE disks, the cdrom and the cloud-init seed on pc's two IDE buses (2 units
    # each), and IDE/SATA disks, the cdrom and the seed on the 6 ports of q35's built-in AHCI
    q35 = "q35" in qemu.machine
    on_ide = [i for i, d in enumerate(qemu.disks)
              if d.bus is DiskBus.IDE or (q35 and d.bus is DiskBus.SATA)]
    slots = 6 if q35 else 4
    cdroms = (qemu.cdrom is not None) + (qemu.cloud_init is not None)
    if len(on_ide) + cdroms > slots:  # name the first disk that finds no position
        raise HostValidationError(name, f"spec.qemu.disks[{on_ide[slots - cdroms]}].bus",
                                  f"machine {qemu.machine} has {slots} IDE/AHCI positions (the "
                                  "cdrom and the cloud-init seed take one each)")
    for index, nic in enumerate(qemu.nics):
        if nic.model not in caps.devices:
            raise HostValidationError(name, f"spec.qemu.nics[{index}].model",
                                      f"{nic.model!r} is not a device of this qemu")
    if qemu.watchdog is not None and qemu.watchdog.model.value not in caps.devices:
        raise HostValidationError(name, "spec.qemu.watchdog.model",
                                  f"{qemu.watchdog.model.value} is not a device of this qemu")
