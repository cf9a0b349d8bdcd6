"""Host probing for the lxc driver: cgroup version, AppArmor, the LXC tools' version.

Called once by LxcDriver.capabilities() and at the first start. It only reads system files and
runs `lxc-start --version`; it never changes the host.
"""

from __future__ import annotations

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
