"""A tree's owners moved from one id map to another: how an unprivileged container's root owns
its rootfs.

Called by rootfs.py (the shared busybox tree, shifted once per map) and storage.py (a
container's own rootfs and overlay layer: shifted when unpacked, and again when the map they
were shifted for changes, privileged <-> unprivileged included). LXC 5.0 can also idmap a
rootfs at mount time, but it loses that mount when it restarts a container whose init asked
for a reboot, so domctl shifts on disk, as LXC's unprivileged containers always did.

Only ever run on trees domctl made, while no container uses them. Symlinks are chowned
themselves, never followed; an inode with several names is shifted once; a setuid or setgid
file keeps its bits (chown clears them). Device nodes keep their host owners: a node handed
to the container's root would open the host's device.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from reconcilers.lxc.idmap import COUNT, IdMap


def shift_tree(root: Path, old: IdMap | None, new: IdMap | None) -> None:
    """Move every owner under `root` (itself included) from map `old` to map `new` (None: the
    host's own ids, a privileged container's). Ids outside `old` stay as they are."""
    if old == new:
        return
    seen: set[tuple[int, int]] = set()
    _shift_one(root, old, new, seen)
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            _shift_one(Path(directory, name), old, new, seen)


def _shift_one(path: Path, old: IdMap | None, new: IdMap | None,
               seen: set[tuple[int, int]]) -> None:
    """Shift the owner of `path` (not followed if a symlink), unless seen already."""
    info = os.lstat(path)
    if (info.st_dev, info.st_ino) in seen:
        return
    seen.add((info.st_dev, info.st_ino))
    if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        return
    uid = _shift(info.st_uid, None if old is None else old.uid, None if new is None else new.uid)
    gid = _shift(info.st_gid, None if old is None else old.gid, None if new is None else new.gid)
    if (uid, gid) == (info.st_uid, info.st_gid):
        return
    os.lchown(path, uid, gid)
    if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(info.st_mode))


def _shift(host_id: int, old: int | None, new: int | None) -> int:
    """The host id standing for the same container id under a map starting at `new` (None:
    the host's own ids); `host_id` itself when the old map or the new one lacks it."""
    if old is None:
        container_id = host_id
    elif old <= host_id < old + COUNT:
        container_id = host_id - old
    else:
        return host_id
    if new is None:
        return container_id
    if container_id >= COUNT:
        return host_id
    return new + container_id
