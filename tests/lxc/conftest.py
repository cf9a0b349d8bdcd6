"""Fixtures for the lxc driver tests: one busybox rootfs and lxcpath per session, a fresh driver
per test, and a finalizer that kills and removes every container a test created."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from reconcilers.driver import DriverContext, RuntimeEvent
from reconcilers.lxc import rootfs
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcTools

from .support import Host


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
