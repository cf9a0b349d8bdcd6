"""Real containers: init's exit seen through a pidfd and classified (DESIGN §4 terms)."""

from __future__ import annotations

import os
import signal

import pytest

from reconcilers.driver import RuntimeEvent
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcTools
from reconcilers.model import Cause, EventDetail, EventType, LxcSpec, Reason, State
from tests.support.domains import domain
from tests.support.lxc import LxcHost
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.lxc


async def test_init_killed_from_outside_is_crashed(driver: LxcDriver, lxc_host: LxcHost,
                                                   events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("crash")
    live = await driver.start(domain(name, "lxc"), paused=False, token="test")
    assert live.pid
    os.kill(live.pid, signal.SIGKILL)
    await async_wait_until(lambda: events, "the exit")  # reported by the pidfd watch
    event = events[0]
    assert (event.state, event.reason, event.cause) == (State.SHUTOFF, Reason.CRASHED,
                                                        Cause.EXTERNAL)
    assert event.events == ((EventType.STOPPED, EventDetail.FAILED),)
    assert "signal 9" in event.message
    assert (await driver.observe(name)).reason is Reason.CRASHED


async def test_guest_poweroff_is_a_clean_shutdown(driver: LxcDriver, lxc_host: LxcHost,
                                                  tools: LxcTools,
                                                  events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("poweroff")
    await driver.start(domain(name, "lxc"), paused=False, token="test")
    await tools.attach(name, ["/bin/poweroff"])
    await async_wait_until(lambda: events, "a runtime event")
    assert (events[0].reason, events[0].cause) == (Reason.SHUTDOWN, Cause.GUEST)
    assert events[0].events[0] == (EventType.SHUTDOWN, EventDetail.GUEST)


@pytest.mark.parametrize("status, reason, expected", [
    (0, Reason.SHUTDOWN, ((EventType.SHUTDOWN, EventDetail.GUEST),
                          (EventType.STOPPED, EventDetail.SHUTDOWN))),  # libvirt's shutdown
    (3, Reason.CRASHED, ((EventType.STOPPED, EventDetail.FAILED),)),  # domctl: a failure
])
async def test_init_that_exits_by_itself(driver: LxcDriver, lxc_host: LxcHost,
                                         events: list[RuntimeEvent], status: int,
                                         reason: Reason, expected: object) -> None:
    name = lxc_host.name("exit")
    init = ("/bin/sh", "-c", f"sleep 0.5; exit {status}")
    await driver.start(domain(name, "lxc", lxc=LxcSpec(init=init)), paused=False, token="test")
    await async_wait_until(lambda: events, "a runtime event")
    assert (events[0].state, events[0].reason, events[0].cause) == (State.SHUTOFF, reason,
                                                                    Cause.GUEST)
    assert events[0].events == expected
    assert f"status {status}" in events[0].message
    assert (await driver.observe(name)).reason is reason


async def test_guest_reboot_is_followed(driver: LxcDriver, lxc_host: LxcHost, tools: LxcTools,
                                        events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("reboot")
    first = await driver.start(domain(name, "lxc"), paused=False, token="test")
    await tools.attach(name, ["/bin/reboot"])
    await async_wait_until(lambda: events, "the reboot")  # LXC starts a new init; it is watched
    assert events[0].events == ((EventType.STARTED, EventDetail.BOOTED),)
    live = await driver.observe(name)
    assert (live.state, live.reason) == (State.RUNNING, Reason.BOOTED)
    assert live.pid != first.pid and live.record and live.record.pid == live.pid
    os.kill(live.pid, signal.SIGKILL)
    await async_wait_until(lambda: len(events) == 2, "a second runtime event")
    assert events[1].reason is Reason.CRASHED
