"""One cgroup per qemu domain, on cgroup v1 (per-controller hierarchies) or v2 (unified).

QemuDriver creates it and writes the limits before the launch, has qemu moved into it while
qemu initialises and checks it is there before `cont` (so no vCPU has run outside it),
rewrites the limits for live changes, and removes it after the process is gone. The cgroup is
`<hierarchy>/<settings.cgroup_parent>/<name>`. Moving a process waits for an RCU grace period
(the kernel's threadgroup lock: 5-15 ms on a small host), which is why the move overlaps
qemu's own start-up instead of following it.

Limits: cputune.shares → cpu.shares (v1) or cpu.weight (v2, the runc/systemd mapping);
cputune.quota/period → cpu.cfs_quota_us/cfs_period_us (v1) or cpu.max (v2); memory →
memory.limit_in_bytes / memory.max set to the guest's memory plus MEMORY_OVERHEAD for qemu
itself; a pids limit against runaway thread creation.

It never touches a cgroup outside `<parent>/<name>` and never kills anything: a cgroup that
still holds processes is left in place and reported.
"""

from __future__ import annotations

import enum
import errno
import os
import time
from pathlib import Path

from reconcilers.model import DomainSpec

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMORY_OVERHEAD = 512 * 1024 * 1024  # qemu's own memory on top of the guest's (tcg cache, I/O)
PIDS_MAX = 4096
V1_CONTROLLERS = ("cpu", "memory", "pids")


class CgroupVersion(str, enum.Enum):
    V1 = "v1"  # legacy or hybrid: one hierarchy per controller
    V2 = "v2"  # unified hierarchy at the root


class CgroupError(Exception):
    """Creating, joining or writing the domain's cgroup failed."""


def detect_version(root: Path = CGROUP_ROOT) -> CgroupVersion:
    return CgroupVersion.V2 if (root / "cgroup.controllers").exists() else CgroupVersion.V1


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] → v2 cpu.weight [1, 10000]."""
    return 1 + ((max(2, min(shares, 262144)) - 2) * 9999) // 262142


def limits(spec: DomainSpec, version: CgroupVersion) -> dict[str, str]:
    """`controller/file` → value for the spec (v2 files live in one directory: `/file`)."""
    tune, memory = spec.cputune, str(spec.memory + MEMORY_OVERHEAD)
    if version is CgroupVersion.V1:
        values = {"memory/memory.limit_in_bytes": memory, "pids/pids.max": str(PIDS_MAX)}
        if tune.shares is not None:
            values["cpu/cpu.shares"] = str(tune.shares)
        if tune.period is not None:
            values["cpu/cpu.cfs_period_us"] = str(tune.period)
        if tune.quota is not None:
            values["cpu/cpu.cfs_quota_us"] = str(tune.quota)
        return values
    values = {"/memory.max": memory, "/pids.max": str(PIDS_MAX)}
    if tune.shares is not None:
        values["/cpu.weight"] = str(shares_to_weight(tune.shares))
    if tune.quota is not None or tune.period is not None:
        quota = "max" if tune.quota in (None, -1) else str(tune.quota)
        values["/cpu.max"] = f"{quota} {tune.period or 100000}"
    return values


# What a cgroup holds when a limit is not set: written when a live change unsets a limit (the
# kernel's defaults for a new cgroup; cpu.max's period is 100 ms).
UNSET = {"cpu/cpu.shares": "1024", "cpu/cpu.cfs_quota_us": "-1",
         "cpu/cpu.cfs_period_us": "100000", "/cpu.weight": "100", "/cpu.max": "max 100000"}


def live_writes(old: DomainSpec, new: DomainSpec, version: CgroupVersion) -> dict[str, str]:
    """The files to write to move a running domain's cgroup from `old`'s limits to `new`'s: the
    changed values, and the default of every limit `new` no longer sets (an unset
    cputune.shares goes back to 1024 / weight 100, not stays at the old value)."""
    before, after = limits(old, version), limits(new, version)
    writes = {key: value for key, value in after.items() if before.get(key) != value}
    writes.update({key: UNSET[key] for key in before.keys() - after.keys() if key in UNSET})
    return writes


class DomainCgroup:
    """The cgroup directories of one domain."""

    def __init__(self, name: str, parent: str, root: Path = CGROUP_ROOT) -> None:
        self.version = detect_version(root)
        self._root, self._parent, self._name = root, parent, name

    @property
    def directories(self) -> dict[str, Path]:
        """controller → directory (v2: the single directory under the key "")."""
        if self.version is CgroupVersion.V2:
            return {"": self._root / self._parent / self._name}
        return {c: self._root / c / self._parent / self._name for c in V1_CONTROLLERS}

    def path(self, key: str) -> Path:
        """The file behind a `limits()` key."""
        controller, _, filename = key.partition("/")
        return self.directories[controller] / filename

    def creatable(self) -> bool:
        """Whether this process may make the directories (the nearest existing ancestor of
        each is writable): false for a user without a delegated hierarchy."""
        for directory in self.directories.values():
            existing = next(p for p in (directory, *directory.parents) if p.exists())
            if not os.access(existing, os.W_OK):
                return False
        return True

    def create(self) -> None:
        try:
            if self.version is CgroupVersion.V2:
                self._enable_v2_controllers()
            for directory in self.directories.values():
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CgroupError(f"cannot create the cgroup: {exc}") from exc

    def _enable_v2_controllers(self) -> None:
        parent = self._root / self._parent
        parent.mkdir(exist_ok=True)
        for directory in (self._root, parent):
            (directory / "cgroup.subtree_control").write_text("+cpu +memory +pids")

    def attach(self, pid: int) -> None:
        """Move every thread of `pid` into the domain's cgroup(s)."""
        try:
            for directory in self.directories.values():
                (directory / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise CgroupError(f"cannot move pid {pid} into the cgroup: {exc}") from exc

    def holds(self, pid: int) -> bool:
        """Whether `pid` is in the domain's cgroup(s) already, as /proc/PID/cgroup says (the
        launch moves qemu while it initialises; anything unexpected here says no, and the
        caller moves it)."""
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return False
        where = {}
        for line in lines:  # "4:memory:/domctl.qemu/vm"; v2: "0::/domctl.qemu/vm"
            _, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            where.update(dict.fromkeys(controllers.split(","), path))
        return all(where.get(controller) == f"/{self._parent}/{self._name}"
                   for controller in self.directories)

    def write(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            try:
                self.path(key).write_text(value)
            except OSError as exc:
                raise CgroupError(f"cannot write {value} to {self.path(key)}: {exc}") from exc

    def remove(self, attempts: int = 20) -> bool:
        """Remove the directories; False if one still holds a process after the retries."""
        remaining = [d for d in self.directories.values() if d.exists()]
        for _ in range(attempts):
            remaining = [d for d in remaining if not _rmdir(d)]
            if not remaining:
                return True
            time.sleep(0.05)  # the exited process leaves the cgroup when it is reaped
        return False


class Unconfined(DomainCgroup):
    """No cgroup of our own (domctl run as a user, with no delegated hierarchy): limits are
    not enforced, nothing is created, moved, written or removed."""

    def create(self) -> None:
        pass

    def attach(self, pid: int) -> None:
        pass

    def holds(self, pid: int) -> bool:
        return True

    def write(self, values: dict[str, str]) -> None:
        pass

    def remove(self, attempts: int = 20) -> bool:
        return True


def tuning_fields(spec: DomainSpec) -> list[str]:
    """The manifest fields that only a cgroup can put into effect."""
    tune = spec.cputune
    return [f"spec.cputune.{key}" for key in ("shares", "period", "quota")
            if getattr(tune, key) is not None]


def _rmdir(directory: Path) -> bool:
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return False
        raise CgroupError(f"cannot remove {directory}: {exc}") from exc
    return True
