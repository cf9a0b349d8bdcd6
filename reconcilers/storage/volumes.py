"""Volumes: the qcow2 disks domctl makes for a domain, with qemu-img (its JSON output read).

A disk with `image` gets an overlay: `qemu-img create -f qcow2 -b IMAGE -F FORMAT`, the base's
format detected once by `qemu-img info` and recorded in the overlay, so qemu never probes it
again (a raw image that looks like a qcow2 header cannot redirect reads), and the base's real
path recorded, so moving a symlink never swaps the base under an overlay. A disk with `size`
alone gets an empty qcow2 of that size. A volume is made once, on the first start (under a
temporary name, renamed when complete), and then kept: grown when `size` grows (`qemu-img
resize` while stopped; QMP block_resize while running, reconcilers/qemu/disks.py), never shrunk
(a smaller size is refused naming the field), never re-based (a volume found with another
base, or with a base where the disk has none, is refused: its data belongs to that base).

In use: qemu locks the images it opens (block/file-posix.c: a shared OFD lock on byte 100+i
for each permission i it holds, 0 consistent read, 1 write). `written_by_another` probes that
lock with F_OFD_GETLK, without opening the image through qemu: a base image some qemu writes
is refused before a start, and a volume some other qemu has open likewise; a qemu we launch
takes the same locks, so a race is caught by qemu itself; `check_source` applies the same to a
disk's `source`. `check_not_a_volume` refuses a manifest path inside another domain's pool
directory.

`plan()` only reads (the host check runs it before every start); `realise()` carries the plan
out. Callers: reconcilers/qemu/disks.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconcilers.model import Disk
from reconcilers.storage.errors import Refused, StorageFailed
from reconcilers.storage.pool import DomainPool, Pool

QEMU_IMG = "qemu-img"
TIMEOUT = 120.0  # seconds for one qemu-img run (a create or resize on a slow disk)
BASE_FORMATS = ("raw", "qcow2")
SECTOR = 512  # qemu sizes block devices in sectors; block_resize wants a multiple
_LOCK_BASE, _PERM_READ, _PERM_WRITE = 100, 0, 1
_FLOCK = "@hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (+ padding)


class Action(str, enum.Enum):
    CREATE = "create"
    GROW = "grow"
    KEEP = "keep"


@dataclass(frozen=True)
class ImageInfo:
    """What `qemu-img info --output=json` says of one image."""

    format: str
    virtual_size: int
    actual_size: int | None
    backing: str | None  # the backing file as qemu resolves it (full-backing-filename)
    backing_format: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageInfo:
        actual = data.get("actual-size")
        return cls(format=str(data["format"]), virtual_size=int(data["virtual-size"]),
                   actual_size=None if actual is None else int(actual),
                   backing=data.get("full-backing-filename") or data.get("backing-filename"),
                   backing_format=data.get("backing-filename-format"))


@dataclass(frozen=True)
class VolumePlan:
    """What a start does to one disk's volume."""

    path: Path
    action: Action
    size: int | None = None  # create with it (None: the image's size) or grow to it
    base: tuple[str, str] | None = None  # create on it: the image's real path, its format


async def qemu_img(*args: str) -> str:
    """Run qemu-img; its stdout, or StorageFailed with its own message."""
    try:
        process = await asyncio.create_subprocess_exec(
            QEMU_IMG, *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise StorageFailed(f"cannot run {QEMU_IMG}: {exc} (Debian: apt-get install "
                            "qemu-utils)") from exc
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise StorageFailed(f"{QEMU_IMG} {args[0]} timed out after {TIMEOUT:g} s") from None
    if process.returncode != 0:
        said = err.decode(errors="replace").strip().replace(f"{QEMU_IMG}: ", "")
        raise StorageFailed(said or f"{QEMU_IMG} {args[0]} exited with {process.returncode}")
    return out.decode(errors="replace")


async def info(path: str | Path) -> ImageInfo:
    """The image's format, sizes and backing file. `-U` (force share): it reads the headers
    also while a qemu has the image open, and takes no lock that could disturb it."""
    text = await qemu_img("info", "--output=json", "-U", str(path))
    try:
        return ImageInfo.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageFailed(f"{QEMU_IMG} info {path}: unexpected output: {exc}") from exc


def _lock_held(path: str | Path, permission: int) -> bool:
    """Whether some process holds qemu's lock byte of `permission` on `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _LOCK_BASE + permission, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, query)
        held: int = struct.unpack(_FLOCK, answer)[0]
        return held != fcntl.F_UNLCK
    finally:
        os.close(fd)


def written_by_another(path: str | Path) -> bool:
    """A qemu has `path` open for writing (it holds the write permission's lock)."""
    return _lock_held(path, _PERM_WRITE)


def opened_by_another(path: str | Path) -> bool:
    """A qemu has `path` open at all (for reading, as a backing file, or for writing)."""
    return _lock_held(path, _PERM_READ) or _lock_held(path, _PERM_WRITE)


def check_source(path: str, readonly: bool, field: str) -> None:
    """Refuse a disk's source that another qemu holds as qemu would refuse it: open at all
    (a writable disk is one domain's), or open for writing (a read-only one must not change)."""
    if written_by_another(path) or (not readonly and opened_by_another(path)):
        raise Refused(field, f"{path} is open in another process (qemu's image lock)"
                             + ("" if readonly else ": a writable disk is one domain's"))


def check_not_a_volume(pool: Pool, path: str, field: str) -> None:
    """Refuse a manifest path that is a file of some domain's pool directory."""
    owner = pool.owner(path)
    if owner is not None:
        raise Refused(field, f"{path} is in the storage pool, a file domctl keeps for domain "
                             f"{owner!r}; name a base image outside {pool.root}")


def human(size: int) -> str:
    """`21474836480` → `20 GiB (21474836480 bytes)`; exact sizes stay bytes."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit} ({size} bytes)"
    return f"{size} bytes"


async def plan(pool: DomainPool, disk: Disk, field: str) -> VolumePlan:
    """What the next start does to the volume of `disk` (one with `image` or `size`), or
    Refused naming the field; `field` is the disk's path (`spec.qemu.disks[0]`)."""
    try:
        path = pool.volume(disk.name)
    except ValueError as exc:
        raise Refused(f"{field}.name", str(exc)) from exc
    if disk.size is not None and (disk.size <= 0 or disk.size % SECTOR):
        raise Refused(f"{field}.size", f"must be a positive multiple of {SECTOR} bytes")
    if disk.image is not None and written_by_another(disk.image):
        raise Refused(f"{field}.image", f"{disk.image} is open for writing in another process "
                                        "(qemu's image lock): a base image must not change "
                                        "under its overlays")
    if not path.exists():
        return await _to_create(path, disk, field)
    if opened_by_another(path):
        raise Refused(field, f"its volume {path} is open in another process (qemu's image "
                             "lock): a volume is one domain's")
    try:
        current = await info(path)
    except StorageFailed as exc:
        raise Refused(field, f"its volume {path} cannot be read: {exc.message}") from exc
    _check_origin(path, current, disk, field)
    if disk.size is None or disk.size == current.virtual_size:
        return VolumePlan(path, Action.KEEP)
    if disk.size < current.virtual_size:
        raise Refused(f"{field}.size", shrink_message(disk.size, current.virtual_size, path))
    return VolumePlan(path, Action.GROW, size=disk.size)


def shrink_message(size: int, current: int, path: Path) -> str:
    return (f"{human(size)} is smaller than its volume {path} ({human(current)}); volumes "
            "are never shrunk: give at least the current size")


async def _to_create(path: Path, disk: Disk, field: str) -> VolumePlan:
    if disk.image is None:
        if disk.size is None:
            raise Refused(field, "a disk needs a source, an image or a size")
        return VolumePlan(path, Action.CREATE, size=disk.size)
    image = os.path.realpath(disk.image)
    try:
        base = await info(image)
    except StorageFailed as exc:
        raise Refused(f"{field}.image", f"{disk.image} cannot be read as an image: "
                                        f"{exc.message}") from exc
    if base.format not in BASE_FORMATS:
        raise Refused(f"{field}.image", f"{disk.image} is a {base.format} image; a base image "
                                        f"must be {' or '.join(BASE_FORMATS)}")
    if disk.size is not None and disk.size < base.virtual_size:
        raise Refused(f"{field}.size", f"{human(disk.size)} is smaller than the image "
                                       f"{disk.image} ({human(base.virtual_size)}); an overlay "
                                       "is at least its base's size")
    return VolumePlan(path, Action.CREATE, size=disk.size, base=(image, base.format))


def _check_origin(path: Path, current: ImageInfo, disk: Disk, field: str) -> None:
    """The volume found is the one this disk makes: a qcow2 on the same base (or on none)."""
    if current.format != "qcow2":
        raise Refused(field, f"{path} is a {current.format} file, not a volume domctl made; "
                             "move it away to have one made")
    had = os.path.realpath(current.backing) if current.backing else None
    wants = os.path.realpath(disk.image) if disk.image else None
    if had != wants:
        made = f"on the image {current.backing}" if had else "empty (without an image)"
        asked = f"the image {disk.image}" if wants else "no image"
        raise Refused(f"{field}.image", f"its volume {path} was made {made}, the disk now names "
                                        f"{asked}: a volume's base never changes (its data is "
                                        "written against it); move the volume away, or give "
                                        "the disk another name, to have a new one made")


async def realise(volume: VolumePlan) -> bool:
    """Carry out the plan; True when it made or grew the volume."""
    if volume.action is Action.KEEP:
        return False
    size = [] if volume.size is None else [str(volume.size)]
    if volume.action is Action.GROW:
        await qemu_img("resize", "-q", "-f", "qcow2", str(volume.path), *size)
        return True
    partial = volume.path.with_name(f".{volume.path.name}.partial")
    partial.unlink(missing_ok=True)
    backing = [] if volume.base is None else ["-b", volume.base[0], "-F", volume.base[1]]
    try:
        await qemu_img("create", "-q", "-f", "qcow2", *backing, str(partial), *size)
        partial.chmod(0o600)
        partial.rename(volume.path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return True
