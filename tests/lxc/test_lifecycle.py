"""Real containers: every operation of LxcDriver and how each exit is classified."""

from __future__ import annotations

import pytest

from reconcilers.driver import RuntimeEvent
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcState, LxcTools
from reconcilers.model import EventDetail, EventType, Reason, State

from .conftest import Host, make_domain

pytestmark = pytest.mark.lxc


async def test_start_observe_destroy(driver: LxcDriver, lxc_host: Host, tools: LxcTools,
                                     events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("start")
    live = await driver.start(make_domain(name), paused=False)
    assert (live.state, live.reason) == (State.RUNNING, Reason.BOOTED)
    assert live.pid and live.record and live.record.pid == live.pid
    await driver.destroy(name)
    assert (await tools.info(name)).state is LxcState.STOPPED
    live = await driver.observe(name)
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.DESTROYED)
    assert [e.events for e in events] == [((EventType.STOPPED, EventDetail.DESTROYED),)]
