"""vCPUs, memory and disks plugged into and out of a running qemu domain, all or nothing.

Called by QemuDriver.apply_live for the changes changes.py classifies live: `vcpus`, `memory`
and `qemu.disks` (virtio disks added at or removed from the end of the list). Each kind first
asks qemu what is there (query-hotpluggable-cpus; query-memory-size-summary and
query-memory-devices; the devices with an id), so an apply converges on the new spec from
wherever the domain is: a retry after a failure, or after a controller restart, does only
what is left.

All or nothing: everything that can be refused is checked before anything changes (the room
for vCPUs, a free DIMM slot, a new disk's storage and properties: a HostValidationError naming
the field); then the steps run in this order: disks removed, vCPUs added or removed, disks
added, memory added. A step that fails undoes the steps done before it, newest first (a vCPU
or disk unplugged is plugged back; one plugged is asked to go). Removal needs the guest:
`device_del` asks, the guest releases the device (ACPI eject) and qemu says DEVICE_DELETED (a
disk) or the vCPU's position shows empty; a guest that does not within UNPLUG_TIMEOUT keeps the
device, and the apply fails with a DriverError saying so: the change stays pending and the next
pass tries again (qemu keeps the request, so a guest that releases the device later completes
it). Memory is only added, a pc-dimm of the difference on a RAM backend, in whole blocks
(changes.DIMM_BLOCK), never removed (shrinking is the balloon's job: currentMemory), so it
comes last, when nothing after it can fail.

A vCPU is hotplugged as the CPU type qemu names for the free position, with that position's
topology properties and the id `vcpu<index>` (devices.hot_cpu_id); the highest vCPU goes first
on removal (by its id, or its QOM path for one of `-smp`'s, never vCPU 0). A disk's block nodes
and device properties are argv.py's, without a PCI address (qemu picks a free slot, which a
later managed save records); its volume, if it has `image` or `size`, is planned and made by
storage.py as a start would.

Each change done is described in libvirt's words for the apply's log line and event message:
`device-added: vcpu1`, `device-removed: virtio-disk1 (disk data)`, `device-added: dimm0 of
128 MiB (134217728 bytes)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from reconcilers.errors import DomctlError, DriverError, HostValidationError
from reconcilers.model import Disk, DomainSpec
from reconcilers.qemu import storage
from reconcilers.qemu.argv import (
    MEMORY_SLOTS,
    dimm_backend,
    dimm_props,
    disk_nodes,
    disk_props,
    virtio_disk_id,
)
from reconcilers.qemu.changes import DISKS
from reconcilers.qemu.commands import CpuSlot
from reconcilers.qemu.devices import PERIPHERAL, hot_cpu_id, position
from reconcilers.qemu.escape import ValueRefused
from reconcilers.qemu.monitor import MonitorError
from reconcilers.qemu.runtime import Running
from reconcilers.storage.pool import Pool
from reconcilers.storage.volumes import VolumePlan, human

UNPLUG_TIMEOUT = 10.0  # seconds for the guest to release a device (ACPI eject; milliseconds)
POLL = 0.2  # seconds between looks at whether a device is gone
NODE_RELEASE_TIMEOUT = 5.0  # seconds for qemu to let go of a released disk's block nodes
NODE_RETRY = 0.05  # seconds between two tries to delete a block node still in use

log = structlog.get_logger(__name__)

Undo = Callable[[], Awaitable[object]]


@dataclass
class _Transaction:
    """The steps of one apply done so far: what each did, and how to undo it."""

    tracked: Running
    done: list[str] = field(default_factory=list)
    undo: list[tuple[str, Undo]] = field(default_factory=list)

    def record(self, what: str, undo: Undo | None) -> None:
        self.done.append(what)
        log.info("hotplug", domain=self.tracked.record.name, change=what)
        if undo is not None:
            self.undo.append((what, undo))

    async def rollback(self) -> None:
        """Undo the steps done, newest first; an undo that fails is logged, not raised (the
        apply's own error is the one to report, and the next pass converges again)."""
        for what, undo in reversed(self.undo):
            try:
                await undo()
            except (DomctlError, MonitorError) as exc:
                log.error("hotplug step not undone", domain=self.tracked.record.name,
                          change=what, error=str(exc))
            else:
                log.info("hotplug step undone", domain=self.tracked.record.name, change=what)


Step = Callable[[_Transaction], Awaitable[None]]


async def apply(tracked: Running, old: DomainSpec, new: DomainSpec, changed: set[str],
                pool: Pool) -> list[str]:
    """The hotplug changes among `changed` (classify's live paths), all or nothing; what was
    done, in libvirt's words. MonitorError, DriverError or HostValidationError when refused."""
    removals: list[Step] = []
    additions: list[Step] = []
    if DISKS in changed and old.qemu is not None and new.qemu is not None:
        removals, additions = await _disks(tracked, old.qemu.disks, new.qemu.disks, pool)
    cpus = await _vcpus(tracked, new.vcpus) if "vcpus" in changed else []
    memory = await _memory(tracked, new.memory) if "memory" in changed else []
    transaction = _Transaction(tracked)
    try:
        for step in [*removals, *cpus, *additions, *memory]:
            await step(transaction)
    except BaseException:
        await asyncio.shield(transaction.rollback())
        raise
    return transaction.done


async def _released(tracked: Running, device: str, gone: Callable[[], Awaitable[bool]],
                    what: str) -> None:
    """Wait until the guest has released `device` (DEVICE_DELETED, or `gone` says so)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    tracked.unplugs[device] = waiter
    deadline = loop.time() + UNPLUG_TIMEOUT
    try:
        while not waiter.done() and not await gone():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DriverError(tracked.record.name, "apply_live", (
                    f"the guest did not release {what} within {UNPLUG_TIMEOUT:g} s (a guest "
                    "without ACPI hotplug, or paused, ignores the request); the change stays "
                    "pending and is tried again"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), min(POLL, remaining))
    finally:
        tracked.unplugs.pop(device, None)


# --- vCPUs ------------------------------------------------------------------------------------


async def _vcpus(tracked: Running, target: int) -> list[Step]:
    slots = await tracked.qmp.query_hotpluggable_cpus()
    plugged = sorted((slot for slot in slots if slot.qom_path is not None), key=position)
    free = sorted((slot for slot in slots if slot.qom_path is None), key=position)
    if target > len(slots):
        raise HostValidationError(tracked.record.name, "spec.vcpus", (
            f"{target} vCPUs, but this run has room for {len(slots)} (its maxVcpus): the "
            "change waits for a restart"))
    if target >= len(plugged):
        return [functools.partial(_plug_cpu, slot, hot_cpu_id(slot, slots))
                for slot in free[:target - len(plugged)]]
    return [functools.partial(_unplug_cpu, slot, hot_cpu_id(slot, slots))
            for slot in reversed(plugged[target:])]


async def _plug_cpu(slot: CpuSlot, device: str, transaction: _Transaction) -> None:
    await transaction.tracked.qmp.device_add({"driver": slot.driver, "id": device, **slot.props})
    plugged = CpuSlot(slot.driver, slot.props, PERIPHERAL + device)
    transaction.record(f"device-added: {device}",
                       functools.partial(_remove_cpu, transaction.tracked, plugged))


async def _unplug_cpu(slot: CpuSlot, device: str, transaction: _Transaction) -> None:
    label = await _remove_cpu(transaction.tracked, slot)
    transaction.record(f"device-removed: {label}", functools.partial(
        transaction.tracked.qmp.device_add, {"driver": slot.driver, "id": device, **slot.props}))


async def _remove_cpu(tracked: Running, slot: CpuSlot) -> str:
    """Unplug the vCPU at `slot` (by id, or by QOM path for one of -smp's); its name."""
    assert slot.qom_path is not None
    device = slot.qom_path.removeprefix(PERIPHERAL)
    label = device if slot.qom_path.startswith(PERIPHERAL) else f"vCPU {slot.qom_path}"
    try:
        await tracked.qmp.device_del(device)
    except MonitorError as exc:  # e.g. no OS has taken ACPI's CPU hotplug over from firmware
        raise DriverError(tracked.record.name, "apply_live", (
            f"the guest cannot release {label} now (qemu: {exc.message}); the change stays "
            "pending and is tried again")) from exc

    async def gone() -> bool:
        return not any(position(s) == position(slot) and s.qom_path is not None
                       for s in await tracked.qmp.query_hotpluggable_cpus())
    await _released(tracked, device, gone, label)
    return label


# --- memory -----------------------------------------------------------------------------------


async def _memory(tracked: Running, target: int) -> list[Step]:
    qmp = tracked.qmp
    dimms = await qmp.query_memory_devices()
    grow = target - await qmp.base_memory() - sum(dimm.size for dimm in dimms)
    if grow <= 0:
        return []  # done already (a retry); a shrink is no hotplug (changes.py)
    if len(dimms) >= MEMORY_SLOTS:
        raise HostValidationError(tracked.record.name, "spec.memory", (
            f"all {MEMORY_SLOTS} DIMM slots of this run are in use: the change waits for a "
            "restart (which makes it boot memory)"))
    used = {dimm.id for dimm in dimms}
    index = next(i for i in range(MEMORY_SLOTS + 1) if f"dimm{i}" not in used)
    return [functools.partial(_plug_dimm, f"dimm{index}", f"memdimm{index}", grow)]


async def _plug_dimm(device: str, memdev: str, size: int, transaction: _Transaction) -> None:
    qmp = transaction.tracked.qmp
    await qmp.object_add(dimm_backend(memdev, size))
    try:
        await qmp.device_add(dimm_props(device, memdev))
    except MonitorError:
        with contextlib.suppress(MonitorError):
            await qmp.object_del(memdev)
        raise
    transaction.record(f"device-added: {device} of {human(size)}", None)  # never unplugged


# --- disks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Disk:
    """What plugging one disk takes: its device id, block nodes and device properties."""

    index: int
    disk: Disk
    device: str
    nodes: list[dict[str, Any]]
    props: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.device} (disk {self.disk.name})"


def _prepared(name: str, disks: tuple[Disk, ...], index: int, pool: Pool) -> _Disk:
    disk = disks[index]
    try:
        nodes = disk_nodes(index, disk, pool.of(name), quote=False)
        props = {"driver": "virtio-blk-pci", "id": virtio_disk_id(disks, index),
                 **disk_props(index, disk, quote=False)}
    except ValueRefused as exc:
        raise HostValidationError(name, exc.field, exc.message) from exc
    return _Disk(index, disk, str(props["id"]), nodes, props)


async def _disks(tracked: Running, old: tuple[Disk, ...], new: tuple[Disk, ...],
                 pool: Pool) -> tuple[list[Step], list[Step]]:
    name = tracked.record.name
    present = await tracked.qmp.peripherals()
    removals: list[Step] = [functools.partial(_unplug_disk, _prepared(name, old, index, pool),
                                              present)
                            for index in reversed(range(len(new), len(old)))]
    additions: list[Step] = []
    for index in range(len(old), len(new)):
        plugged = _prepared(name, new, index, pool)
        if plugged.device in present:
            continue  # a retry: plugged already
        volume = await storage.check_disk(name, pool, index, plugged.disk)
        additions.append(functools.partial(_plug_disk, plugged, volume, pool))
    return removals, additions


async def _plug_disk(plugged: _Disk, volume: VolumePlan | None, pool: Pool,
                     transaction: _Transaction) -> None:
    tracked = transaction.tracked
    if volume is not None:
        await storage.make_volume(tracked.record.name, pool.of(tracked.record.name), volume)
    await _attach(tracked, plugged)
    transaction.record(f"device-added: {plugged.label}",
                       functools.partial(_detach, tracked, plugged, {plugged.device}))


async def _unplug_disk(plugged: _Disk, present: set[str], transaction: _Transaction) -> None:
    await _detach(transaction.tracked, plugged, present)
    transaction.record(f"device-removed: {plugged.label}",
                       functools.partial(_attach, transaction.tracked, plugged))


async def _attach(tracked: Running, plugged: _Disk) -> None:
    """Its block nodes, then its device; nothing of it left if either fails."""
    qmp, added = tracked.qmp, []
    try:
        for node in plugged.nodes:
            await qmp.blockdev_add(node)
            added.append(str(node["node-name"]))
        await qmp.device_add(plugged.props)
    except MonitorError:
        for node_name in reversed(added):
            with contextlib.suppress(MonitorError):
                await qmp.blockdev_del(node_name)
        raise


async def _detach(tracked: Running, plugged: _Disk, present: set[str]) -> None:
    """Its device released by the guest, then its block nodes deleted (a node already gone,
    from a removal cut short, is no error)."""
    qmp = tracked.qmp
    if plugged.device in present:
        await qmp.device_del(plugged.device)

        async def gone() -> bool:
            return plugged.device not in await qmp.peripherals()
        await _released(tracked, plugged.device, gone, plugged.label)
    for node in reversed(plugged.nodes):
        await _delete_node(tracked, str(node["node-name"]))


async def _delete_node(tracked: Running, node: str) -> None:
    """blockdev-del of a released disk's node. qemu lets go of it when the device object is
    finalized, which may come after DEVICE_DELETED and after the device left the QOM tree, and
    no event says when: "Node ... is in use" is tried again, briefly. A node already gone (a
    removal cut short) is no error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NODE_RELEASE_TIMEOUT
    while True:
        try:
            await tracked.qmp.blockdev_del(node)
            return
        except MonitorError as exc:
            message = exc.message.lower()
            if "find node" in message:  # "Failed to find node with ..."
                return
            if "in use" not in message or loop.time() >= deadline:
                raise
        await asyncio.sleep(NODE_RETRY)
