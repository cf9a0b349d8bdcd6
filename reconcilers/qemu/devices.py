"""A running qemu's hardware where it may differ from what its spec's command line gives.

Hotplug (hotplug.py, nics.py) changes a running domain's devices; a later managed save
(QemuDriver.save) writes state that only the same devices can load. So before the save the
driver reads the Layout here, over QMP, and records it beside the image (savestate.py); the
restore's command line (argv.py) is built from the saved spec *and* this Layout:

- vCPUs: the ones qemu made from `-smp` (`boot_vcpus`) and the hotplugged ones (`cpus`, each
  with its id and topology position, given back as `-device`). The boot count is not the
  spec's `vcpus` once a vCPU was hot-added.
- virtio queues: a virtio-blk or virtio-scsi device sizes its queues by the vCPUs qemu booted
  with unless told (`queues`: device id → num-queues, given back explicitly).
- memory: the boot memory (`base_memory`) and each DIMM with its backend, slot and address.
- PCI: every device's slot on the root bus by id (`slots`): a hotplugged NIC or disk sits in
  the slot qemu chose, a removed one left a gap; the spec's order alone would shift the rest.

Read only from QMP; never changes the domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconcilers.qemu.commands import CpuSlot, Dimm, QmpCommands

PERIPHERAL = "/machine/peripheral/"  # the QOM parent of devices given an id
QUEUED_DRIVERS = ("virtio-disk", "scsi")  # id prefixes of the devices whose queues follow -smp


@dataclass(frozen=True)
class HotCpu:
    """A hotplugged vCPU: its device id, CPU type and topology position."""

    id: str
    driver: str
    props: Mapping[str, int]


@dataclass(frozen=True)
class Layout:
    """What the restore's command line must rebuild besides the spec (module docstring)."""

    boot_vcpus: int
    base_memory: int
    cpus: tuple[HotCpu, ...] = ()
    dimms: tuple[Dimm, ...] = ()
    slots: Mapping[str, int] = field(default_factory=dict)
    queues: Mapping[str, int] = field(default_factory=dict)


def position(slot: CpuSlot) -> tuple[int, ...]:
    """A vCPU slot's place in the topology, socket first: qemu's own order of vCPU indexes."""
    return tuple(slot.props.get(key, 0) for key in ("socket-id", "die-id", "core-id",
                                                    "thread-id"))


def hot_cpu_id(slot: CpuSlot, slots: list[CpuSlot]) -> str:
    """The id a vCPU hotplugged at `slot` gets: `vcpu<its index among all positions>`."""
    return f"vcpu{sorted(map(position, slots)).index(position(slot))}"


async def read(qmp: QmpCommands) -> Layout:
    """The running domain's Layout."""
    cpus = await qmp.query_hotpluggable_cpus()
    plugged = sorted((c for c in cpus if c.qom_path is not None), key=position)
    hot = tuple(HotCpu(c.qom_path.removeprefix(PERIPHERAL), c.driver, c.props)
                for c in plugged if c.qom_path is not None and c.qom_path.startswith(PERIPHERAL))
    pci = [d for d in await qmp.query_pci() if d.qdev_id and d.function == 0]
    queues = {d.qdev_id: await qmp.num_queues(d.qdev_id) for d in pci
              if d.qdev_id.startswith(QUEUED_DRIVERS)}
    return Layout(boot_vcpus=len(plugged) - len(hot), base_memory=await qmp.base_memory(),
                  cpus=hot, dimms=tuple(await qmp.query_memory_devices()),
                  slots={d.qdev_id: d.slot for d in pci}, queues=queues)
