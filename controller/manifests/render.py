"""A normalised Domain back to its manifest document: normalise.py run backwards.

`domctl export` (controller/api/backend.py) renders a domain's live spec with it, and the tests
build every manifest they write through it (tests/support/domains.py), so there is one
serializer. The document is plain data in the manifest's own spelling: camelCase keys, fields at
their default left out, sizes as `Mi`/`Gi` strings, durations as `Ns`, a VNC display under
`graphics: {vnc:}`, a container's image as `rootfs: {image:}`. With `defaults=True` (`domctl
show`: the effective configuration, `virsh dumpxml`'s role) every field that has a value is
written, at its default too, except where its form forbids it and empty lists and mappings.
Either way the loader reads it back as the same Domain (tests/test_support.py,
tests/unit/test_render.py). `manifest_path` names where a model field (a reconcilers.diff path
such as `qemu.disks[0].source`) sits in that document.

Public surface:
    document(domain, defaults=False) -> dict, lookup(doc, path),
    manifest_path(field) -> tuple[str | int, ...]
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from typing import Any

from controller.manifests.normalise import parse_duration
from reconcilers.model import Domain, DomainSpec, LxcSpec

API_VERSION = "domctl/v1"
_MIB = 1024 * 1024
_SIZES = (("Ti", 1024 * 1024 * _MIB), ("Gi", 1024 * _MIB), ("Mi", _MIB), ("Ki", 1024))
_SIZE_FIELDS = frozenset({"spec.memory", "spec.current_memory", "spec.max_memory",
                          "spec.qemu.disks.size"})
_PAIR_FIELDS = frozenset({"spec.lxc.env", "spec.qemu.cloud_init.meta_data",
                          "spec.placement.selector"})
_ROOTFS_FIELDS = {"image": "image", "delete_policy": "deletePolicy"}  # LxcSpec → rootfs: {}
_INDEX = re.compile(r"^(\w+)\[(\d+)\]$")
# With `defaults`, a field at its default is written only where its form allows it: a disk's
# `format` belongs to a source (refused beside `image`), a delete policy to a volume domctl makes.
_DEFAULT_APPLIES: dict[str, Callable[[Any], bool]] = {
    "spec.qemu.disks.format": lambda disk: disk.source is not None,
    "spec.qemu.disks.delete_policy": lambda disk: disk.image is not None or disk.size is not None,
    "spec.lxc.delete_policy": lambda lxc: lxc.image is not None,
    "spec.lxc.nics.model": lambda nic: False,  # the device model a qemu guest sees
}


def document(of: Domain, defaults: bool = False) -> dict[str, Any]:
    """`of` as the manifest document a user would write; with `defaults`, every field that has
    a value is written, at its default too (`domctl show`: the effective configuration)."""
    metadata: dict[str, Any] = {"name": of.metadata.name}
    if of.metadata.uuid is not None:
        metadata["uuid"] = of.metadata.uuid
    for key in ("labels", "annotations"):
        if getattr(of.metadata, key):
            metadata[key] = dict(getattr(of.metadata, key))
    return {"apiVersion": API_VERSION, "kind": "Domain", "metadata": metadata,
            "spec": spec(of.spec, defaults)}


def spec(of: DomainSpec, defaults: bool = False) -> dict[str, Any]:
    """The `spec:` mapping of `of` (its driver always, every other field only when set, or,
    with `defaults`, whenever it has a value)."""
    return {"driver": of.driver.value,
            **_changed(of, DomainSpec(driver=of.driver), "spec", defaults)}


def manifest_path(field: str) -> tuple[str | int, ...]:
    """Where the spec field `field` (`memory`, `qemu.vnc.port`, `qemu.disks[0].source`: the
    paths of reconcilers.diff) sits in the manifest document."""
    path: list[str | int] = ["spec"]
    parent = "spec"
    for part in field.split("."):
        match = _INDEX.match(part)
        name = match.group(1) if match else part
        if parent == "spec.qemu" and name == "vnc":
            path += ["graphics", "vnc"]
        elif parent == "spec.lxc" and name in _ROOTFS_FIELDS:
            path += ["rootfs", _ROOTFS_FIELDS[name]]
        else:
            path.append(_camel(name))
        if match:
            path.append(int(match.group(2)))
        parent = f"{parent}.{name}"
    return tuple(path)


def lookup(doc: Any, path: tuple[str | int, ...]) -> Any:
    """The value at `path` in a rendered document; None where it is left out (a default)."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(doc, list) or key >= len(doc):
                return None
        elif not isinstance(doc, Mapping) or key not in doc:
            return None
        doc = doc[key]
    return doc


def size(value: int) -> str:
    """`1073741824` → `1Gi`: the largest unit that divides it."""
    for unit, factor in _SIZES:
        if value % factor == 0:
            return f"{value // factor}{unit}"
    raise ValueError(f"{value} bytes is not a whole number of KiB: no manifest says that")


def duration(seconds: float) -> str | float:
    """`30.0` → `30s`, `0.5` → `500ms`; a value no unit spells exactly stays a number of
    seconds (the loader must read back the very same float)."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    spelled = f"{round(seconds * 1000)}ms"
    return spelled if parse_duration(spelled) == seconds else seconds


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def _changed(value: Any, default: Any, path: str, defaults: bool) -> dict[str, Any]:
    """The fields of the dataclass `value` that differ from `default` (with `defaults`: that
    have a value), as manifest keys."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(value):
        mine, theirs = getattr(value, field.name), getattr(default, field.name)
        where = f"{path}.{field.name}"
        if mine is None:
            continue
        if mine != theirs:
            out[_key(field.name)] = _plain(mine, theirs, where, defaults)
        elif defaults and _DEFAULT_APPLIES.get(where, _always)(value):
            rendered = _plain(mine, theirs, where, defaults)
            if rendered not in ([], {}):  # an empty list or mapping says nothing
                out[_key(field.name)] = rendered
    return out


def _always(owner: Any) -> bool:
    return True


def _key(field: str) -> str:
    return "graphics" if field == "vnc" else _camel(field)


def _plain(value: Any, default: Any, path: str, defaults: bool) -> Any:
    if path in _SIZE_FIELDS:
        return size(value)
    if path == "spec.shutdown_timeout":
        return duration(value)
    if path == "spec.qemu.vnc":
        return {"vnc": _changed(value, type(value)(), path, defaults)}
    if path in _PAIR_FIELDS:
        return dict(value)
    if path == "spec.lxc":
        return _lxc(value, defaults)
    if dataclasses.is_dataclass(value):
        blank = default if type(default) is type(value) else _blank(type(value))
        return _changed(value, blank, path, defaults)
    if isinstance(value, tuple):
        return [_plain(item, None, path, defaults) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _lxc(value: LxcSpec, defaults: bool) -> dict[str, Any]:
    """An LxcSpec's fields; an image (and its delete policy) is written as `rootfs: {image:}`."""
    out = _changed(value, LxcSpec(), "spec.lxc", defaults)
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
