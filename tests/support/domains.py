"""The one way tests build a domain: `domain()` for the model, `manifest()` for its YAML text.

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


# --- the manifest text of a Domain: normalise.py run backwards ----------------------------------

def manifest(of: Domain) -> str:
    """`of` as the YAML a user would write: fields at their default are left out."""
    metadata: dict[str, Any] = {"name": of.metadata.name}
    if of.metadata.uuid is not None:
        metadata["uuid"] = of.metadata.uuid
    for key in ("labels", "annotations"):
        if getattr(of.metadata, key):
            metadata[key] = dict(getattr(of.metadata, key))
    spec = {"driver": of.spec.driver.value,
            **_changed(of.spec, DomainSpec(driver=of.spec.driver), "spec")}
    document = {"apiVersion": "domctl/v1", "kind": "Domain", "metadata": metadata, "spec": spec}
    return yaml.safe_dump(document, sort_keys=False)


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def _changed(value: Any, default: Any, path: str) -> dict[str, Any]:
    """The fields of the dataclass `value` that differ from `default`, as manifest keys."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(value):
        mine, theirs = getattr(value, field.name), getattr(default, field.name)
        if mine != theirs and mine is not None:
            key = "graphics" if field.name == "vnc" else _camel(field.name)
            out[key] = _plain(mine, theirs, f"{path}.{field.name}")
    return out


def _plain(value: Any, default: Any, path: str) -> Any:
    if path in ("spec.memory", "spec.current_memory", "spec.max_memory", "spec.qemu.disks.size"):
        return _size(value)
    if path == "spec.shutdown_timeout":
        return f"{int(value)}s" if float(value).is_integer() else value
    if path == "spec.qemu.vnc":
        return {"vnc": _changed(value, type(value)(), path)}
    if path in ("spec.lxc.env", "spec.qemu.cloud_init.meta_data"):
        return dict(value)
    if path == "spec.lxc":
        return _lxc(value)
    if dataclasses.is_dataclass(value):
        blank = default if type(default) is type(value) else _blank(type(value))
        return _changed(value, blank, path)
    if isinstance(value, tuple):
        return [_plain(item, None, path) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _lxc(value: LxcSpec) -> dict[str, Any]:
    """An LxcSpec's fields; an image (and its delete policy) is written as `rootfs: {image:}`."""
    out = _changed(value, LxcSpec(), "spec.lxc")
    if value.image is not None:
        out["rootfs"] = {"image": out.pop("image")}
        if "deletePolicy" in out:
            out["rootfs"]["deletePolicy"] = out.pop("deletePolicy")
    return out


def _blank(kind: type[Any]) -> Any:
    """A default instance of a spec dataclass, for leaving out the defaults of list items."""
    required = {f.name: "" for f in dataclasses.fields(kind)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return kind(**required)


def _size(value: int) -> str:
    for unit, factor in (("Mi", MiB), ("Ki", 1024)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    raise ValueError(f"{value} bytes is not a whole number of KiB: no manifest says that")
