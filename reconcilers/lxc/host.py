"""Host probing for the lxc driver: cgroup version, AppArmor, CPUs, the id map, the LXC tools.

Called once by LxcDriver.capabilities() and at the first start, and by validation for the
directories an unprivileged container must reach. It only reads system files and runs
`lxc-start --version`; the one change it makes to the host is `remove_empty_cgroups`, which
takes away the empty cgroups LXC leaves behind a container that stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from reconcilers.lxc.config import CgroupVersion, HostFacts
from reconcilers.lxc.idmap import IdMapError, root_idmap

CGROUP_ROOT = Path("/sys/fs/cgroup")
APPARMOR_ENABLED = Path("/sys/module/apparmor/parameters/enabled")
ONLINE_CPUS = Path("/sys/devices/system/cpu/online")
REQUIRED_TOOLS = ("lxc-start", "lxc-info", "lxc-stop", "lxc-freeze", "lxc-unfreeze",
                  "lxc-cgroup", "lxc-wait", "lxc-attach")


def cgroup_version(root: Path = CGROUP_ROOT) -> CgroupVersion:
    """v2 when the unified hierarchy is mounted at the root (cgroup.controllers there)."""
    return CgroupVersion.V2 if (root / "cgroup.controllers").exists() else CgroupVersion.V1


def apparmor_enabled(flag: Path = APPARMOR_ENABLED) -> bool:
    try:
        return flag.read_text().strip().upper().startswith("Y")
    except OSError:
        return False


def online_cpus(online: Path = ONLINE_CPUS) -> tuple[int, ...]:
    """The host's online CPUs ("0-3,6" in sysfs): containers' cgroups are children of the root
    cgroup, whose cpuset holds them all."""
    try:
        text = online.read_text().strip()
    except OSError:
        return ()
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return tuple(cpus)


def probe_facts() -> HostFacts:
    try:
        idmap, problem = root_idmap(), ""
    except IdMapError as exc:
        idmap, problem = None, str(exc)
    return HostFacts(cgroup=cgroup_version(), apparmor=apparmor_enabled(), cpus=online_cpus(),
                     idmap=idmap, idmap_problem=problem)


def unsearchable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory above `path` that host ids uid:gid may not search (look names up
    in), by its mode bits: what keeps an unprivileged container's root, working from inside
    its user namespace, from reaching `path`. None when every one is searchable, or the first
    that is not is missing (the driver makes its own directories searchable)."""
    for directory in reversed(path.parents):
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None
        except OSError:
            return directory
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return directory
    return None


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def remove_empty_cgroups(name: str, root: Path = CGROUP_ROOT) -> None:
    """rmdir the `lxc.monitor.NAME` / `lxc.payload.NAME` cgroups (v1 and v2) LXC 5.0 may leave
    after a failed start. rmdir removes only an empty cgroup: a live container's is kept."""
    for kind in ("monitor", "payload"):
        for hierarchy in ("", "*/"):  # v2 at the root, v1 one level down
            for suffix in ("", "-[0-9]*"):  # LXC appends -N when the name is taken
                for leftover in root.glob(f"{hierarchy}lxc.{kind}.{name}{suffix}"):
                    with contextlib.suppress(OSError):
                        os.rmdir(leftover)
