"""Fixtures for the lxc driver tests: one busybox rootfs and lxcpath per session, a fresh driver
per test, and a finalizer that kills and removes every container a test created."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconcilers.driver import DriverContext, RuntimeEvent
from reconcilers.lxc import rootfs
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcTools
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


@pytest.fixture(scope="session")
def lxc_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("lxc")
    host = Host(state_dir=base / "state", log_dir=base / "log")
    rootfs.busybox_rootfs(host.state_dir / "lxc-rootfs")  # built once, cached for the session
    yield host


@pytest.fixture
def lxc_host(lxc_session: Host) -> Iterator[Host]:
    """The session host; the containers named during this test are destroyed afterwards."""
    first = len(lxc_session.names)
    yield lxc_session
    for name in lxc_session.names[first:]:
        lxc_session.remove(name)


@pytest.fixture
def events() -> list[RuntimeEvent]:
    return []


@pytest.fixture
def context(lxc_host: Host, events: list[RuntimeEvent]) -> DriverContext:
    return DriverContext(runtime_dir=lxc_host.state_dir / "run", state_dir=lxc_host.state_dir,
                         log_dir=lxc_host.log_dir, on_event=events.append)


@pytest.fixture
async def driver(context: DriverContext) -> AsyncIterator[LxcDriver]:
    drv = LxcDriver(context)
    yield drv
    await drv.close()


@pytest.fixture
def tools(lxc_host: Host) -> LxcTools:
    return LxcTools(lxc_host.lxcpath)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
