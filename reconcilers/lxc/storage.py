"""A container's rootfs on the host: made before a start, kept, released with its domain.

Called by LxcDriver: `prepare` (in a thread) before every start gives the directory the config
names; `release` when the domain is removed. Where a rootfs comes from (the spec's lxc section):

- `rootfs: DIR`: the user's directory, used in place and as it is (for an unprivileged
  container its files must already be owned by the mapped ids, as LXC requires). Never
  deleted.
- `image: TARBALL`: unpacked (image.py) once, when `storage/rootfs` is missing, and kept from
  then on: across restarts, controller restarts and manifest changes. A manifest that later
  names another image does not rebuild it, as Incus keeps a container's rootfs (with what the
  container wrote) and rebuilds it only when asked; here the asking is removing the rootfs:
  the domain removed with deletePolicy Delete, or the directory deleted while the container
  is stopped. Until then each start says where the kept rootfs came from (Prepared.warning,
  shown as the domain's message).
- `busybox` (the default): an overlay over the shared busybox tree of the container's id map
  (rootfs.py), whose upper dir `storage/delta` is the container's own.

Everything the container owns lives in `lxc/<name>/storage/` (files.py), owned by the
container's root: the map's first ids when unprivileged, the host's root when privileged. That
owner is also the record of the ids the tree is shifted to: when the map changes (the
container made privileged or not, root given a subordinate range) `prepare` shifts the tree
(shift.py) before the guard's own owner, so an interrupted shift is resumed. A rootfs is made
in a staging directory renamed into place, so `storage/rootfs` either is whole or does not
exist; `storage.json` beside the guard records its source.

`release` applies the deletePolicy to `storage/`, never to a user's directory: Delete removes
it, Retain keeps it and returns what it holds; a later domain of the same name finds it again.
`listing` describes the rootfs for `domctl describe` (LxcDriver.disks), with the space the
container's own storage takes (a walk of it, so only when asked).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconcilers.lxc import image, rootfs
from reconcilers.lxc.files import ContainerFiles
from reconcilers.lxc.idmap import IdMap
from reconcilers.lxc.shift import shift_tree
from reconcilers.model import BUSYBOX_ROOTFS, DeletePolicy, LxcSpec

STAGING_PREFIX = ".rootfs."

log = structlog.get_logger(__name__)


class StorageError(RuntimeError):
    """A rootfs cannot be made: the image is unreadable or hostile, the disk is full, ..."""


@dataclass(frozen=True)
class Prepared:
    rootfs: str  # the directory the config names (ConfigPaths.rootfs)
    warning: str = ""  # the kept rootfs came from another image than the spec names


class Storage:
    """The rootfs of the containers under one state dir."""

    def __init__(self, files: ContainerFiles) -> None:
        self._files = files

    def prepare(self, name: str, lxc: LxcSpec, idmap: IdMap | None) -> Prepared:
        """The rootfs directory of container `name`, its own storage made or shifted to
        `idmap` (None: privileged) first; StorageError when that fails."""
        if lxc.image is None and lxc.rootfs != BUSYBOX_ROOTFS:
            return Prepared(lxc.rootfs)
        try:
            self._guard(name, idmap)
            if lxc.image is None:
                return Prepared(str(rootfs.busybox_rootfs(self._files.rootfs_cache,
                                                          idmap=idmap)))
            target = self._files.rootfs(name)
            if not target.is_dir():
                self._unpack(name, Path(lxc.image), target, idmap)
            origin = self._record(name).get("source")
        except (rootfs.RootfsError, image.ImageError, OSError) as exc:
            raise StorageError(str(exc)) from exc
        if origin == lxc.image:
            return Prepared(str(target))
        return Prepared(str(target), f"the rootfs {target} was made from "
                                     f"{origin or 'an unknown image'} and is kept: remove it to "
                                     f"rebuild it from {lxc.image}")

    def release(self, name: str, lxc: LxcSpec | None) -> list[str]:
        """Apply the deletePolicy to the storage domctl made for container `name` (stopped,
        removed): the paths kept (Retain), or none (Delete: removed). LXC's config and log go
        either way, and the container's directory once nothing is kept in it."""
        files = self._files
        made = [path for path in (files.rootfs(name), files.delta(name)) if path.exists()]
        if lxc is not None and lxc.delete_policy is DeletePolicy.DELETE:
            shutil.rmtree(files.storage(name), ignore_errors=True)
            files.storage_record(name).unlink(missing_ok=True)
            log.info("container storage deleted", domain=name, paths=[str(p) for p in made])
            made = []
        files.forget(name)
        return [str(path) for path in made]

    def listing(self, name: str, lxc: LxcSpec) -> list[dict[str, Any]]:
        """The container's rootfs as a disk entry (the keys of the qemu driver's)."""
        entry: dict[str, Any] = {"name": "rootfs", "device": "rootfs", "readonly": False}
        if lxc.image is None and lxc.rootfs != BUSYBOX_ROOTFS:
            return [entry | {"source": lxc.rootfs, "volume": False, "format": "dir"}]
        own = self._files.rootfs(name) if lxc.image is not None else self._files.delta(name)
        entry |= {"source": str(own), "volume": True, "image": lxc.image or BUSYBOX_ROOTFS,
                  "format": "dir" if lxc.image is not None else "overlay",
                  "deletePolicy": lxc.delete_policy.value}
        if not own.is_dir():
            return [entry | {"problem": "not made yet (at the next start)"}]
        return [entry | {"actualSize": _allocated(self._files.storage(name))}]

    def _guard(self, name: str, idmap: IdMap | None) -> None:
        """`storage/`, mode 0700, its tree and itself owned by the root of `idmap`."""
        self._files.ensure_directory(name)
        guard = self._files.storage(name)
        owner = (0, 0) if idmap is None else (idmap.uid, idmap.gid)
        try:
            info = guard.stat()
        except FileNotFoundError:
            guard.mkdir(mode=0o700)
        else:
            had = None if (info.st_uid, info.st_gid) == (0, 0) else \
                IdMap(uid=info.st_uid, gid=info.st_gid)
            if (info.st_uid, info.st_gid) != owner:
                log.info("shifting container storage", domain=name, old=had, new=idmap)
                for child in guard.iterdir():
                    shift_tree(child, had, idmap)
        os.chown(guard, *owner)
        guard.chmod(0o700)

    def _unpack(self, name: str, tarball: Path, target: Path, idmap: IdMap | None) -> None:
        for leftover in target.parent.glob(f"{STAGING_PREFIX}*"):  # of a crash while unpacking
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target.parent))
        try:
            unpacked = image.unpack(tarball, staging)
            shift_tree(staging, None, idmap)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record = self._files.storage_record(name)
        tmp = record.with_name(f".{record.name}.tmp")
        tmp.write_text(json.dumps({"source": unpacked.image, "sha256": unpacked.sha256,
                                   "skippedDevices": unpacked.skipped_devices}) + "\n")
        tmp.replace(record)
        log.info("container rootfs unpacked", domain=name, image=str(tarball), rootfs=str(target))

    def _record(self, name: str) -> dict[str, Any]:
        try:
            record = json.loads(self._files.storage_record(name).read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}


def _allocated(root: Path) -> int:
    """The bytes allocated to the files under `root`, each inode counted once (du)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirs, files in os.walk(root):
        for entry in (directory, *(os.path.join(directory, n) for n in (*dirs, *files))):
            info = os.lstat(entry)
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total
