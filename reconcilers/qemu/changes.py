"""Which spec changes the qemu driver applies to a running domain, and which wait for a restart.

Called by QemuDriver.classify and apply_live. Pure: it compares two normalised specs leaf by
leaf. Live: the balloon target (currentMemory), cputune (cgroup cpu shares, quota, period and
vCPU/emulator pinning), the lifecycle actions (set-action, or the driver's own handling), the
settings only the controller reads, NICs: a NIC's linkState (set_link), and NICs added at or
removed from the end of the list while every kept NIC is unchanged but for its linkState
(hotplug; not on q35, whose root bus takes no hotplug without the root ports domctl does not
add), and the `size` of a volume (a disk with image or size, nothing else of it changed: QMP
block_resize; a shrink is refused when applied). Hotplug (hotplug.py): `vcpus` within the
running maxVcpus (added, or removed where the guest lets them go), `memory` grown within the
running maxMemory by whole DIMM_BLOCKs (a pc-dimm each; a smaller size is the balloon's job,
currentMemory, so it waits for a restart), and virtio disks added at or removed from the end of
`qemu.disks` while every kept disk is unchanged (not on q35, as NICs). Everything else
(maxVcpus, maxMemory, machine, a kept NIC's model, MAC, network or bridge, a disk's image,
source or bus, a non-virtio disk added or removed, cloudInit, firmware, ...) takes effect at
the next start.

NIC and disk paths follow reconcilers/diff.py, so `domctl diff` shows each as classified: a list
of the same length is compared item by item (`qemu.nics[1].link_state`, `qemu.disks[0].size`),
one that grew or shrank is one change (`qemu.nics`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reconcilers.diff import classify_leaves
from reconcilers.driver import ChangeKind
from reconcilers.model import Disk, DiskBus, DomainSpec, QemuSpec

LIVE_FIELDS = frozenset({
    "current_memory", "cputune.shares", "cputune.quota", "cputune.period", "cputune.vcpupin",
    "cputune.emulatorpin", "lifecycle.on_poweroff", "lifecycle.on_reboot", "lifecycle.on_crash",
    # read by the controller only
    "state", "restart_policy", "update_policy", "shutdown_timeout",
})
NIC_LIVE_FIELDS = frozenset({"link_state"})
NICS, DISKS = "qemu.nics", "qemu.disks"
DIMM_BLOCK = 128 * 1024 * 1024  # bytes: x86-64 Linux onlines hotplugged memory in such blocks


def classify(old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
    changes = classify_leaves(old, new, LIVE_FIELDS)
    if "vcpus" in changes and vcpus_pluggable(old, new):
        changes["vcpus"] = ChangeKind.LIVE
    if "memory" in changes and memory_pluggable(old, new):
        changes["memory"] = ChangeKind.LIVE
    # a ceiling equal to its value normalises to unset (a manifest that reaches maxVcpus):
    # the same ceiling, nothing to apply
    for ceiling, value in (("max_vcpus", "vcpus"), ("max_memory", "memory")):
        if ceiling in changes and _ceiling(old, ceiling, value) == _ceiling(new, ceiling, value):
            changes[ceiling] = ChangeKind.LIVE
    if old.qemu is not None and new.qemu is not None:
        if NICS in changes:
            del changes[NICS]
            changes.update(_nics(old.qemu, new.qemu))
        if DISKS in changes:
            del changes[DISKS]
            changes.update(_disks(old.qemu, new.qemu))
    return changes


def _differing(old: Any, new: Any) -> list[str]:
    """The fields of two records of one dataclass that differ."""
    return [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def _ceiling(spec: DomainSpec, ceiling: str, value: str) -> Any:
    return getattr(spec, ceiling) or getattr(spec, value)


def vcpus_pluggable(old: DomainSpec, new: DomainSpec) -> bool:
    """vCPUs can be plugged or unplugged up to the running domain's maxcpus."""
    return 1 <= new.vcpus <= (old.max_vcpus or old.vcpus)


def memory_pluggable(old: DomainSpec, new: DomainSpec) -> bool:
    """Memory grows by DIMMs of whole blocks up to the running domain's maxMemory."""
    grown = new.memory - old.memory
    return (old.max_memory is not None and grown > 0 and new.memory <= old.max_memory
            and grown % DIMM_BLOCK == 0)


def _disks(old: QemuSpec, new: QemuSpec) -> dict[str, ChangeKind]:
    if len(old.disks) != len(new.disks):
        ends = old.disks[len(new.disks):] + new.disks[len(old.disks):]
        hotplug = ("q35" not in old.machine and old.machine == new.machine
                   and old.disks[:len(new.disks)] == new.disks[:len(old.disks)]
                   and all(disk.bus is DiskBus.VIRTIO for disk in ends))
        return {DISKS: ChangeKind.LIVE if hotplug else ChangeKind.RESTART}
    changes = {}
    for index, (before, after) in enumerate(zip(old.disks, new.disks, strict=True)):
        differing = _differing(before, after)
        live = _resizes_a_volume(before, after, differing)
        changes.update({f"{DISKS}[{index}].{name}": ChangeKind.LIVE if live
                        else ChangeKind.RESTART for name in differing})
    return changes


def _resizes_a_volume(before: Disk, after: Disk, differing: list[str]) -> bool:
    return differing == ["size"] and before.source is None and after.source is None


def _nics(old: QemuSpec, new: QemuSpec) -> dict[str, ChangeKind]:
    kept = list(zip(old.nics, new.nics, strict=False))
    if len(old.nics) == len(new.nics):
        return {f"{NICS}[{index}].{name}": ChangeKind.LIVE if name in NIC_LIVE_FIELDS
                else ChangeKind.RESTART
                for index, (before, after) in enumerate(kept)
                for name in _differing(before, after)}
    hotplug = ("q35" not in old.machine and old.machine == new.machine
               and all(set(_differing(before, after)) <= NIC_LIVE_FIELDS
                       for before, after in kept))
    return {NICS: ChangeKind.LIVE if hotplug else ChangeKind.RESTART}
