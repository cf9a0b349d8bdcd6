"""A running qemu domain's figures for `QemuDriver.stats` (virsh domstats): QMP, /proc, /sys.

Disk I/O is QMP's `query-blockstats`, the balloon's size `query-balloon` (both through
commands.py, over the domain's Monitor); CPU time and RSS are the qemu process's, from
/proc/PID (every vCPU thread is part of it); NIC traffic is each tap's counters, turned into
the guest's view (reconcilers/stats.py host_nics). NICs in user mode have no tap on the host,
and qemu counts nothing for them: they are left out, as is a tap missing from the host.

Devices are named as the manifest names them: a disk by its `name` (its format node is
`libvirt-<index+1>-format`, argv.py and hotplug.py), the cdrom and the cloud-init seed as
"cdrom" and "cloud-init", and anything else by its qdev id. Disks and NICs are the domain's
live spec's (livespec.py); without one (a run started by an older domctl) disks show their
qdev ids and NICs are left out. It reads only, and never decides anything.
"""

from __future__ import annotations

import asyncio

from reconcilers.model import DomainSpec, NicMode
from reconcilers.net.names import tap_name
from reconcilers.qemu import livespec
from reconcilers.qemu.commands import BlockStats
from reconcilers.qemu.runtime import Running
from reconcilers.stats import (
    DiskStats,
    DomainStats,
    NicStats,
    host_nics,
    process_cpu_seconds,
    process_rss,
)

_FIXED_NODES = {"libvirt-cdrom-format": "cdrom", "libvirt-cidata-format": "cloud-init"}


async def read(tracked: Running) -> DomainStats:
    """The figures of the domain `tracked` holds; MonitorError when QMP does not answer,
    OSError/ValueError when qemu's /proc or a tap's /sys entry went away meanwhile."""
    qmp = tracked.qmp
    blocks, balloon = await asyncio.gather(qmp.query_blockstats(), qmp.query_balloon())
    spec = livespec.read(tracked.files)
    pid = tracked.record.pid
    return DomainStats(cpu_seconds=process_cpu_seconds(pid), rss_bytes=process_rss(pid),
                       balloon_bytes=balloon,
                       disks=tuple(_disk(block, spec) for block in blocks),
                       interfaces=_nics(tracked.record.name, spec))


def _disk(block: BlockStats, spec: DomainSpec | None) -> DiskStats:
    return DiskStats(device=_device_name(block, spec), read_bytes=block.read_bytes,
                     write_bytes=block.write_bytes, read_ops=block.read_ops,
                     write_ops=block.write_ops)


def _device_name(block: BlockStats, spec: DomainSpec | None) -> str:
    if block.node in _FIXED_NODES:
        return _FIXED_NODES[block.node]
    disks = spec.qemu.disks if spec is not None and spec.qemu is not None else ()
    number = block.node.removeprefix("libvirt-").removesuffix("-format")
    if number.isdigit() and 0 < int(number) <= len(disks):
        return disks[int(number) - 1].name
    return block.qdev.removeprefix("/machine/peripheral/").split("/")[0] or block.node


def _nics(name: str, spec: DomainSpec | None) -> tuple[NicStats, ...]:
    nics = spec.qemu.nics if spec is not None and spec.qemu is not None else ()
    taps = [tap_name(name, index) for index, nic in enumerate(nics)
            if nic.mode is not NicMode.USER]
    if not taps:
        return ()
    host = host_nics()
    return tuple(host[tap] for tap in taps if tap in host)
