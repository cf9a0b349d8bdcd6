"""Real containers: adoption by a fresh driver after a controller restart, and refusal."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import AsyncIterator

import pytest

from reconcilers.driver import DriverContext, RuntimeEvent, RuntimeRecord
from reconcilers.errors import DriverError
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcState, LxcTools
from reconcilers.model import Reason, State
from tests.support.domains import domain
from tests.support.lxc import LxcHost
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.lxc


@pytest.fixture
async def successor(context: DriverContext) -> AsyncIterator[LxcDriver]:
    """The driver of the next controller run, on the same state dir."""
    drv = LxcDriver(context)
    yield drv
    await drv.close()


async def orphan(driver: LxcDriver, name: str, paused: bool = False) -> RuntimeRecord:
    """Start a container, then let its controller go away (the container keeps running)."""
    live = await driver.start(domain(name, "lxc"), paused=paused, token="test")
    assert live.record is not None
    await driver.close()
    return live.record


async def test_fresh_driver_adopts_from_record(driver: LxcDriver, successor: LxcDriver,
                                               lxc_host: LxcHost, events: list[RuntimeEvent]
                                               ) -> None:
    record = await orphan(driver, lxc_host.name("adopt"))
    adopted = await successor.reattach(record)
    assert adopted is not None
    assert (adopted.state, adopted.pid, adopted.record) == (State.RUNNING, record.pid, record)
    # the successor watches the adopted init: a kill from outside is reported as a crash
    os.kill(record.pid, signal.SIGKILL)
    await async_wait_until(lambda: events, "a runtime event")
    assert events[0].reason is Reason.CRASHED


async def test_adopts_a_paused_container(driver: LxcDriver, successor: LxcDriver,
                                         lxc_host: LxcHost) -> None:
    name = lxc_host.name("adopt-paused")
    adopted = await successor.reattach(await orphan(driver, name, paused=True))
    assert adopted is not None and adopted.state is State.PAUSED
    await successor.resume(name)
    assert (await successor.observe(name)).state is State.RUNNING
    await successor.destroy(name)
    assert (await successor.observe(name)).reason is Reason.DESTROYED


async def test_refuses_other_start_time_and_leaves_it_running(
        driver: LxcDriver, successor: LxcDriver, lxc_host: LxcHost, tools: LxcTools) -> None:
    name = lxc_host.name("impostor")
    record = await orphan(driver, name)
    refused = await successor.reattach(dataclasses.replace(record,
                                                           starttime=record.starttime + 1))
    assert refused is not None
    assert (refused.state, refused.reason) == (State.NOSTATE, Reason.UNKNOWN)
    assert "start time" in refused.message
    assert (await successor.observe(name)).state is State.NOSTATE
    with pytest.raises(DriverError, match="refusing"):
        await successor.destroy(name)
    info = await tools.info(name)
    assert (info.state, info.pid) == (LxcState.RUNNING, record.pid)


async def test_gone_container_is_none(driver: LxcDriver, successor: LxcDriver,
                                      lxc_host: LxcHost) -> None:
    name = lxc_host.name("gone")
    live = await driver.start(domain(name, "lxc"), paused=False, token="test")
    assert live.record is not None
    await driver.destroy(name)
    assert await successor.reattach(live.record) is None


async def test_an_unrecorded_start_is_recovered_by_its_token_and_is_a_stray_till_then(
        driver: LxcDriver, successor: LxcDriver, lxc_host: LxcHost) -> None:
    """The controller died between lxc-start and the record: the next one finds the
    container by the start token its LXC monitor carries; a wrong token adopts nothing."""
    name = lxc_host.name("recover")
    vm = domain(name, "lxc")
    live = await driver.start(vm, paused=False, token="t-123")
    assert live.record is not None
    await driver.close()
    assert await successor.strays(name) != ()  # not adopted: any start is refused
    assert await successor.recover(vm, "another-start") is None
    recovered = await successor.recover(vm, "t-123")
    assert recovered is not None and recovered.record is not None
    assert (recovered.state, recovered.pid) == (State.RUNNING, live.record.pid)
    assert await successor.strays(name) == ()  # adopted now
    await successor.destroy(name)
    assert (await successor.observe(name)).state is State.SHUTOFF
