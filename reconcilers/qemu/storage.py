"""A qemu domain's storage (reconcilers/storage), from its host check to its removal.

`check()` runs in the host check before every start and only reads: each disk's source or
image must not be a file of the storage pool (another domain's volume), a source must not be
open in another qemu (qemu's image lock; read-only: not open for writing), each volume's plan
(made, grown or kept; a base image in use for writing, a shrink or a changed base refused),
the seed's documents (files read and checked now), OVMF and the domain's variables for
`firmware: uefi`. Every refusal is a HostValidationError naming the manifest field, so the
domain is Stalled and re-checked every resync. `prepare()` carries the plan out right before
the launch: the pool directory, volumes made or grown with qemu-img, the seed (re)built when
its documents changed (a stale seed is removed with the section), the variables copied once.

While the domain runs: `grow()` is the live part of a `size` change (QMP block_resize on the
disk's format node; a shrink is refused naming the field). `listing()` is the domain's block
devices for the status (virsh domblklist + domblkinfo: the file qemu opens, its base, virtual
and allocated size from `qemu-img info -U`). `release()` is what a domain's removal does to
its pool directory: volumes whose deletePolicy is Delete are deleted (unless some process has
one open), the seed always (it is derived from the manifest and may hold secrets), the UEFI
variables with the last volume; what is left is returned, for the removal to show.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconcilers.errors import DriverError, HostValidationError
from reconcilers.model import FIRMWARE_UEFI, DeletePolicy, Disk, Domain, DomainSpec, QemuSpec
from reconcilers.qemu.argv import disk_file, disk_node
from reconcilers.qemu.commands import QmpCommands
from reconcilers.storage import firmware, seed, volumes
from reconcilers.storage.errors import Refused, StorageFailed
from reconcilers.storage.firmware import Ovmf
from reconcilers.storage.pool import VOLUME_SUFFIX, DomainPool, Pool
from reconcilers.storage.volumes import VolumePlan

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Plan:
    """What the next start does to a domain's storage, and what its argv needs of it."""

    pool: DomainPool
    volumes: tuple[VolumePlan, ...] = ()
    seed: seed.Documents | None = None
    ovmf: Ovmf | None = None


async def check(domain: Domain, pool: Pool) -> Plan:
    """The plan of `domain`'s storage; HostValidationError naming the field if refused."""
    name, qemu = domain.name, domain.spec.qemu
    assert qemu is not None and domain.metadata.uuid is not None
    try:
        mine = pool.of(name)
    except ValueError as exc:
        raise HostValidationError(name, "metadata.name", str(exc)) from exc
    try:
        for index, disk in enumerate(qemu.disks):
            _check_paths(pool, index, disk)
        plans = await asyncio.gather(*(volumes.plan(mine, disk, f"spec.qemu.disks[{index}]")
                                       for index, disk in enumerate(qemu.disks)
                                       if disk.source is None))
        documents = None if qemu.cloud_init is None else await asyncio.to_thread(
            seed.documents, qemu.cloud_init, domain.metadata.uuid, name, "spec.qemu.cloudInit")
        return Plan(mine, tuple(plans), documents, _ovmf(qemu, mine))
    except Refused as exc:
        raise HostValidationError(name, exc.field, exc.message) from exc


def _check_paths(pool: Pool, index: int, disk: Disk) -> None:
    """A disk's source or image is no domain's volume; a source is open in no other qemu."""
    for key, path in (("source", disk.source), ("image", disk.image)):
        if path is not None:
            volumes.check_not_a_volume(pool, path, f"spec.qemu.disks[{index}].{key}")
    if disk.source is not None:
        volumes.check_source(disk.source, disk.readonly, f"spec.qemu.disks[{index}].source")


async def check_disk(name: str, pool: Pool, index: int, disk: Disk) -> VolumePlan | None:
    """check() for one disk hot-added at `index`: the plan of its volume (None for a source);
    HostValidationError naming the field if refused."""
    try:
        _check_paths(pool, index, disk)
        if disk.source is None:
            return await volumes.plan(pool.of(name), disk, f"spec.qemu.disks[{index}]")
    except Refused as exc:
        raise HostValidationError(name, exc.field, exc.message) from exc
    return None


async def make_volume(name: str, pool: DomainPool, volume: VolumePlan) -> None:
    """prepare() for the volume of a hot-added disk: made (or grown) before qemu opens it."""
    try:
        await asyncio.to_thread(pool.ensure)
        if await volumes.realise(volume):
            log.info("volume made for a hot-added disk", domain=name, path=str(volume.path))
    except (StorageFailed, OSError) as exc:
        raise DriverError(name, "apply_live", f"storage: {exc}") from exc


def _ovmf(qemu: QemuSpec, mine: DomainPool) -> Ovmf | None:
    if qemu.firmware != FIRMWARE_UEFI:
        return None
    found = firmware.find_ovmf()
    if found is None:
        raise Refused("spec.qemu.firmware", firmware.missing_message())
    firmware.check_vars(mine.nvram, found, "spec.qemu.firmware")
    return found


async def prepare(name: str, plan: Plan) -> list[str]:
    """Carry `plan` out; what was done (for the domain's log). DriverError on a failure."""
    done: list[str] = []
    try:
        if not plan.volumes and plan.seed is None and plan.ovmf is None:
            plan.pool.seed.unlink(missing_ok=True)  # cloudInit removed: its seed goes too
            return done
        await asyncio.to_thread(plan.pool.ensure)
        for volume in plan.volumes:
            if await volumes.realise(volume):
                size = "" if volume.size is None else f", {volumes.human(volume.size)}"
                verb = "made" if volume.action is volumes.Action.CREATE else "grown"
                done.append(f"volume {volume.path} {verb}{size}")
        if plan.seed is None:
            plan.pool.seed.unlink(missing_ok=True)
        elif await asyncio.to_thread(seed.ensure, plan.pool.seed, plan.seed):
            done.append(f"cloud-init seed {plan.pool.seed} built")
        if plan.ovmf is not None and await asyncio.to_thread(firmware.ensure_vars,
                                                             plan.pool.nvram, plan.ovmf):
            done.append(f"UEFI variables {plan.pool.nvram} copied from {plan.ovmf.vars_template}")
    except (StorageFailed, OSError) as exc:
        raise DriverError(name, "start", f"storage: {exc}") from exc
    return done


async def grow(name: str, qmp: QmpCommands, pool: DomainPool, spec: QemuSpec,
               changed: set[str]) -> None:
    """The live `size` changes among `changed`: block_resize to a larger size."""
    for index, disk in enumerate(spec.disks):
        if f"qemu.disks[{index}].size" not in changed or disk.size is None:
            continue
        field = f"spec.qemu.disks[{index}].size"
        if disk.size % volumes.SECTOR:
            raise HostValidationError(name, field, f"must be a multiple of {volumes.SECTOR} "
                                                   "bytes")
        path = Path(disk_file(disk, index, pool)[0])
        try:
            current = (await volumes.info(path)).virtual_size
        except StorageFailed as exc:
            raise DriverError(name, "apply_live", f"{path}: {exc.message}") from exc
        if disk.size < current:
            raise HostValidationError(name, field, volumes.shrink_message(disk.size, current,
                                                                          path))
        if disk.size > current:
            await qmp.block_resize(disk_node(index), disk.size)
            log.info("volume grown", domain=name, disk=disk.name, size=disk.size)


async def listing(spec: DomainSpec, pool: DomainPool) -> list[dict[str, Any]]:
    """The domain's block devices: disks, the cdrom, the cloud-init seed."""
    qemu = spec.qemu
    if qemu is None:
        return []
    entries = [_disk_entry(disk, index, pool) for index, disk in enumerate(qemu.disks)]
    if qemu.cdrom is not None:
        entries.append({"name": "cdrom", "device": "cdrom", "source": qemu.cdrom,
                        "volume": False, "format": "raw", "readonly": True})
    if qemu.cloud_init is not None:
        entries.append({"name": "cidata", "device": "cdrom", "source": str(pool.seed),
                        "volume": True, "format": "raw", "readonly": True})
    await asyncio.gather(*(_sizes(entry) for entry in entries))
    return entries


def _disk_entry(disk: Disk, index: int, pool: DomainPool) -> dict[str, Any]:
    path, fmt = disk_file(disk, index, pool)
    entry: dict[str, Any] = {"name": disk.name, "device": "disk", "bus": disk.bus.value,
                             "source": path, "volume": disk.source is None,
                             "format": fmt.value, "readonly": disk.readonly}
    if disk.source is None:
        entry |= {"image": disk.image, "deletePolicy": disk.delete_policy.value}
    return entry


async def _sizes(entry: dict[str, Any]) -> None:
    """Fill in virtualSize, actualSize (and a volume's base) from qemu-img, or a problem."""
    try:
        found = await volumes.info(entry["source"])
    except StorageFailed as exc:
        missing = entry["volume"] and not Path(entry["source"]).exists()
        entry["problem"] = "not made yet (at the next start)" if missing else exc.message
        return
    entry |= {"virtualSize": found.virtual_size, "actualSize": found.actual_size}
    if found.backing is not None:
        entry["image"] = found.backing


async def release(name: str, spec: DomainSpec, pool: DomainPool) -> list[str]:
    """Delete what the domain's removal deletes (see the module docstring); the paths kept."""
    qemu = spec.qemu
    for disk in qemu.disks if qemu is not None else ():
        path = pool.volume(disk.name)
        if disk.source is not None or disk.delete_policy is not DeletePolicy.DELETE:
            continue
        if volumes.opened_by_another(path):
            log.warning("volume in use; kept", domain=name, path=str(path))
            continue
        if path.exists():
            path.unlink()
            log.info("volume deleted", domain=name, path=str(path))
    pool.seed.unlink(missing_ok=True)
    for partial in pool.dir.glob(".*.partial") if pool.dir.exists() else ():
        partial.unlink(missing_ok=True)
    if not any(path.name.endswith(VOLUME_SUFFIX) for path in pool.contents()):
        pool.nvram.unlink(missing_ok=True)
    kept = [str(path) for path in pool.contents()]
    pool.remove_if_empty()
    if kept:
        log.info("storage kept", domain=name, paths=kept)
    return kept
