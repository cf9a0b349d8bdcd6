"""Helpers for the lxc driver tests: domains built in code, the session's container bookkeeping,
and a bounded wait on a condition."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reconcilers.lxc import host
from reconcilers.model import (BUSYBOX_ROOTFS, CpuTune, Domain, DomainSpec, DriverName, LxcSpec,
                               Metadata, Mount, SourceRef)

MiB = 1024 * 1024


def make_domain(name: str, *, init: tuple[str, ...] = ("/sbin/init",), memory: int = 64 * MiB,
                env: tuple[tuple[str, str], ...] = (), mounts: tuple[Mount, ...] = (),
                cputune: CpuTune | None = None, rootfs_dir: str = BUSYBOX_ROOTFS) -> Domain:
    spec = DomainSpec(driver=DriverName.LXC, memory=memory, cputune=cputune or CpuTune(),
                      lxc=LxcSpec(rootfs=rootfs_dir, init=init, env=env, mounts=mounts))
    return Domain(metadata=Metadata(name=name, uuid=str(uuid.uuid4())), spec=spec,
                  source=SourceRef(file="test.yaml", line=1))


@dataclass
class Host:
    """The session's state/log dirs; every container name handed out is removed at the end."""

    state_dir: Path
    log_dir: Path
    names: list[str] = field(default_factory=list)

    @property
    def lxcpath(self) -> Path:
        return self.state_dir / "lxc"

    def name(self, prefix: str) -> str:
        name = f"t-{prefix}-{uuid.uuid4().hex[:6]}"
        self.names.append(name)
        return name

    def remove(self, name: str) -> None:
        subprocess.run(["lxc-stop", "-P", str(self.lxcpath), "-n", name, "-k"],
                       capture_output=True, timeout=30, check=False)
        shutil.rmtree(self.lxcpath / name, ignore_errors=True)
        host.remove_empty_cgroups(name)  # what LXC may leave behind a failed start


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
