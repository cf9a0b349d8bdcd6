"""Real containers: adoption by a fresh driver after a controller restart, and refusal."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest

from reconcilers.driver import DriverContext, RuntimeEvent
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcState, LxcTools
from reconcilers.model import Reason, State

from .conftest import Host, make_domain, wait_for

pytestmark = pytest.mark.lxc


async def test_fresh_driver_adopts_from_record(driver: LxcDriver, lxc_host: Host,
                                               context: DriverContext,
                                               events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("adopt")
    live = await driver.start(make_domain(name), paused=False)
    assert live.record is not None
    await driver.close()  # the controller goes away; the container must not
    successor = LxcDriver(context)
    adopted = await successor.reattach(live.record)
    assert adopted is not None
    assert (adopted.state, adopted.pid) == (State.RUNNING, live.pid)
    assert adopted.record == live.record
    # the successor watches the adopted init: a kill from outside is reported as a crash
    os.kill(live.pid, signal.SIGKILL)  # type: ignore[arg-type]
    await wait_for(lambda: bool(events))
    assert events[0].reason is Reason.CRASHED
    await successor.close()


async def test_adopts_a_paused_container(driver: LxcDriver, lxc_host: Host,
                                         context: DriverContext) -> None:
    name = lxc_host.name("adopt-paused")
    live = await driver.start(make_domain(name), paused=True)
    assert live.record is not None
    await driver.close()
    successor = LxcDriver(context)
    adopted = await successor.reattach(live.record)
    assert adopted is not None and adopted.state is State.PAUSED
    await successor.resume(name)
    assert (await successor.observe(name)).state is State.RUNNING
    await successor.destroy(name)
    await successor.close()


async def test_refuses_other_start_time_and_leaves_it_running(
        driver: LxcDriver, lxc_host: Host, tools: LxcTools, context: DriverContext) -> None:
    name = lxc_host.name("impostor")
    live = await driver.start(make_domain(name), paused=False)
    assert live.record is not None
    await driver.close()
    forged = dataclasses.replace(live.record, starttime=live.record.starttime + 1)
    successor = LxcDriver(context)
    refused = await successor.reattach(forged)
    assert refused is not None
    assert (refused.state, refused.reason) == (State.NOSTATE, Reason.UNKNOWN)
    assert "start time" in refused.message
    info = await tools.info(name)
    assert (info.state, info.pid) == (LxcState.RUNNING, live.pid)
    assert (await successor.observe(name)).state is State.NOSTATE
    await successor.close()


async def test_gone_container_is_none(driver: LxcDriver, lxc_host: Host,
                                      context: DriverContext) -> None:
    name = lxc_host.name("gone")
    live = await driver.start(make_domain(name), paused=False)
    assert live.record is not None
    await driver.destroy(name)
    assert await LxcDriver(context).reattach(live.record) is None
