"""The one way tests build a domain: `domain()` for the model, `manifest()` for its YAML text
(controller/manifests/render.py, the serializer `domctl export` uses).

Every tier uses it: the pure tables and the engine tests take the Domain, the driver tests start
it, the daemon tests write `manifest(domain(...))` into the watched directory. `load()` reads a
golden input file through the real loader. Defaults are small and fast: 64 MiB, a 2 s
shutdownTimeout, a diskless tcg `pc` VM (its firmware idles forever and ignores ACPI), or a
container on the built-in busybox rootfs. tests/test_support.py proves that the loader reads
`manifest(d)` back as `d`.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid as uuids
from pathlib import Path
from typing import Any

import yaml

from controller.manifests import render
from controller.manifests.loader import load_text
from controller.manifests.normalise import parse_duration, parse_size
from reconcilers.model import (
    Accel,
    DesiredState,
    Disk,
    DiskBus,
    Domain,
    DomainSpec,
    DriverName,
    LxcSpec,
    Metadata,
    QemuSpec,
    SourceRef,
)

MiB = 1024 * 1024
TCG_PC = QemuSpec(machine="pc", accel=Accel.TCG)
_NAMESPACE = uuids.UUID("5d0c7a52-3b1e-4c55-9a51-6f2b3c1d0e7a")


class Uuid(enum.Enum):
    """How `domain()` fills metadata.uuid when the test does not give one."""

    FROM_NAME = "from-name"  # uuid5 of the name: stable, so equal domains compare equal


def domain(name: str = "vm", driver: DriverName | str = DriverName.QEMU, *,
           uuid: str | Uuid | None = Uuid.FROM_NAME, memory: int | str = 64 * MiB,
           state: DesiredState | str = DesiredState.RUNNING,
           shutdown_timeout: float | str = 2.0, image: Path | None = None,
           qemu: QemuSpec | None = None, lxc: LxcSpec | None = None,
           **spec: Any) -> Domain:
    """A domain named `name`; `spec` sets any other DomainSpec field.

    `memory` and `shutdown_timeout` take manifest strings too ("128Mi", "2s"). A qemu domain
    boots `image`, when given one, from an IDE disk put before the disks of `qemu` (SeaBIOS
    does not boot a one-sector virtio disk). `uuid=None` is a manifest without one (the
    controller generates it).
    """
    driver = DriverName(driver)
    if driver is DriverName.QEMU:
        qemu = qemu or TCG_PC
        if image is not None:
            boot = Disk("boot", str(image), bus=DiskBus.IDE)
            qemu = dataclasses.replace(qemu, disks=(boot, *qemu.disks))
    elif driver is DriverName.LXC:
        lxc = lxc or LxcSpec()
    body = DomainSpec(driver=driver, state=DesiredState(state),
                      memory=parse_size(memory) if isinstance(memory, str) else memory,
                      shutdown_timeout=parse_duration(shutdown_timeout), qemu=qemu, lxc=lxc,
                      **spec)
    if uuid is Uuid.FROM_NAME:
        uuid = str(uuids.uuid5(_NAMESPACE, name))
    return Domain(metadata=Metadata(name=name, uuid=uuid), spec=body,
                  source=SourceRef(f"{name}.yaml", 1))


def load(path: Path) -> Domain:
    """The one document of the manifest file `path`, through the controller's loader."""
    (loaded,) = load_text(path.read_text(), path.name)
    return loaded


def manifest(of: Domain) -> str:
    """`of` as the YAML a user would write: fields at their default are left out."""
    return yaml.safe_dump(render.document(of), sort_keys=False)
