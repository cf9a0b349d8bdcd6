"""Host probing for the lxc driver: cgroup version, AppArmor, the LXC tools' version.

Called once by LxcDriver.capabilities() and at the first start. It only reads system files and
runs `lxc-start --version`; the one change it makes to the host is `remove_empty_cgroups`,
which takes away the empty cgroups LXC leaves behind a container that stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from reconcilers.lxc.config import CgroupVersion, HostFacts

CGROUP_ROOT = Path("/sys/fs/cgroup")
APPARMOR_ENABLED = Path("/sys/module/apparmor/parameters/enabled")
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


def probe_facts() -> HostFacts:
    return HostFacts(cgroup=cgroup_version(), apparmor=apparmor_enabled())


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
