"""Real containers: init's exit seen through a pidfd and classified (DESIGN §4 terms)."""

from __future__ import annotations

import os
import signal

import pytest

from reconcilers.driver import RuntimeEvent
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcTools
from reconcilers.model import Cause, EventDetail, EventType, Reason, State

from .support import Host, make_domain, wait_for

pytestmark = pytest.mark.lxc


async def test_init_killed_from_outside_is_crashed(driver: LxcDriver, lxc_host: Host,
                                                   events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("crash")
    live = await driver.start(make_domain(name), paused=False)
    assert live.pid
    os.kill(live.pid, signal.SIGKILL)
    await wait_for(lambda: bool(events))  # reported by the pidfd watch, no polling by the test
    event = events[0]
    assert (event.state, event.reason, event.cause) == (State.SHUTOFF, Reason.CRASHED,
                                                        Cause.EXTERNAL)
    assert event.events == ((EventType.STOPPED, EventDetail.FAILED),)
    assert "signal 9" in event.message
    assert (await driver.observe(name)).reason is Reason.CRASHED


async def test_guest_poweroff_is_a_clean_shutdown(driver: LxcDriver, lxc_host: Host,
                                                  tools: LxcTools,
                                                  events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("poweroff")
    await driver.start(make_domain(name), paused=False)
    await tools.attach(name, ["/bin/poweroff"])
    await wait_for(lambda: bool(events))
    assert (events[0].reason, events[0].cause) == (Reason.SHUTDOWN, Cause.GUEST)
    assert events[0].events[0] == (EventType.SHUTDOWN, EventDetail.GUEST)


async def test_init_that_exits_by_itself_is_crashed(driver: LxcDriver, lxc_host: Host,
                                                    events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("exit")
    await driver.start(make_domain(name, init=("/bin/sh", "-c", "sleep 0.5; exit 3")),
                       paused=False)
    await wait_for(lambda: bool(events))
    assert events[0].reason is Reason.CRASHED


async def test_guest_reboot_is_followed(driver: LxcDriver, lxc_host: Host, tools: LxcTools,
                                        events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("reboot")
    first = await driver.start(make_domain(name), paused=False)
    await tools.attach(name, ["/bin/reboot"])
    await wait_for(lambda: bool(events))  # LXC starts a new init; the driver watches it
    assert events[0].events == ((EventType.STARTED, EventDetail.BOOTED),)
    live = await driver.observe(name)
    assert (live.state, live.reason) == (State.RUNNING, Reason.BOOTED)
    assert live.pid != first.pid and live.record and live.record.pid == live.pid
    os.kill(live.pid, signal.SIGKILL)
    await wait_for(lambda: len(events) == 2)
    assert events[1].reason is Reason.CRASHED
