"""Fixtures for the lxc driver tests: one busybox LxcHost per session (tests/support/lxc.py: in
a scratch dir, as unprivileged containers need), a fresh driver per test, and a sweep of every
container a test named, also when it failed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from reconcilers.driver import DriverContext, RuntimeEvent
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcTools
from tests.support.lxc import LxcHost


@pytest.fixture(scope="session")
def lxc_session() -> Iterator[LxcHost]:
    with LxcHost.in_scratch("lxc") as host:
        yield host


@pytest.fixture
def lxc_host(lxc_session: LxcHost) -> Iterator[LxcHost]:
    """The session host; the containers named during this test are removed afterwards."""
    first = len(lxc_session.names)
    yield lxc_session
    lxc_session.sweep(lxc_session.names[first:])


@pytest.fixture
def events() -> list[RuntimeEvent]:
    return []


@pytest.fixture
def context(lxc_host: LxcHost, events: list[RuntimeEvent]) -> DriverContext:
    return lxc_host.context(events.append)


@pytest.fixture
async def driver(context: DriverContext) -> AsyncIterator[LxcDriver]:
    drv = LxcDriver(context)
    yield drv
    await drv.close()


@pytest.fixture
def tools(lxc_host: LxcHost) -> LxcTools:
    return LxcTools(lxc_host.lxcpath)
