"""Real guests that panic, reboot or starve their watchdog, and the actions taken for them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reconcilers.model import (
    Cause,
    Domain,
    EventDetail,
    EventType,
    Lifecycle,
    LifecycleAction,
    Reason,
    State,
    Watchdog,
    WatchdogAction,
    WatchdogModel,
)
from tests.support.waiting import async_wait_until

if TYPE_CHECKING:
    from tests.qemu.conftest import QemuEnv

pytestmark = pytest.mark.qemu
Guest = Callable[..., Domain]
PANICKED = (EventType.CRASHED, EventDetail.PANICKED)


def with_panic_device(domain: Domain) -> Domain:
    assert domain.spec.qemu is not None
    qemu = dataclasses.replace(domain.spec.qemu, panic=True)
    return dataclasses.replace(domain, spec=dataclasses.replace(domain.spec, qemu=qemu))


async def test_panic_with_on_crash_destroy(qemu_env: QemuEnv, panic_image: Path,
                                           make_guest: Guest) -> None:
    driver = qemu_env.driver()
    await driver.start(with_panic_device(make_guest("t-panic", panic_image)),
            paused=False, token="test")
    stopped = await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    assert qemu_env.events[0].events == (PANICKED,)
    assert (qemu_env.events[0].state, qemu_env.events[0].cause) == (State.CRASHED, Cause.GUEST)
    assert (stopped.reason, stopped.events) == (Reason.CRASHED,
                                                ((EventType.STOPPED, EventDetail.CRASHED),))
    live = await driver.observe("t-panic")
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.CRASHED)


async def test_panic_with_on_crash_preserve(qemu_env: QemuEnv, panic_image: Path,
                                            make_guest: Guest) -> None:
    driver = qemu_env.driver()
    domain = make_guest("t-keep", panic_image,
                        lifecycle=Lifecycle(on_crash=LifecycleAction.PRESERVE))
    await driver.start(with_panic_device(domain), paused=False, token="test")
    await qemu_env.wait_event(lambda e: PANICKED in e.events)
    live = await driver.observe("t-keep")
    assert (live.state, live.reason) == (State.CRASHED, Reason.PANICKED)
    await driver.destroy("t-keep")
    assert (qemu_env.events[-1].reason, qemu_env.events[-1].events) == (  # a crash destroyed
        Reason.CRASHED, ((EventType.STOPPED, EventDetail.CRASHED),))


async def test_panic_with_on_crash_restart_resets_in_place(
        qemu_env: QemuEnv, panic_image: Path, make_guest: Guest) -> None:
    driver = qemu_env.driver()
    domain = make_guest("t-phoenix", panic_image,
                        lifecycle=Lifecycle(on_crash=LifecycleAction.RESTART))
    live = await driver.start(with_panic_device(domain), paused=False, token="test")
    event = await qemu_env.wait_event(lambda e: PANICKED in e.events)
    assert event.events == (PANICKED, (EventType.STARTED, EventDetail.BOOTED))
    assert (await driver.observe("t-phoenix")).pid == live.pid
    await driver.destroy("t-phoenix")
    assert qemu_env.events[-1].reason is Reason.DESTROYED


async def test_reboot_with_on_reboot_destroy(qemu_env: QemuEnv, reboot_image: Path,
                                             make_guest: Guest) -> None:
    driver = qemu_env.driver()
    domain = make_guest("t-reboot", reboot_image,
                        lifecycle=Lifecycle(on_reboot=LifecycleAction.DESTROY))
    await driver.start(domain, paused=False, token="test")
    stopped = await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    assert (stopped.reason, stopped.cause) == (Reason.SHUTDOWN, Cause.GUEST)
    assert "rebooted" in stopped.message


async def test_reboot_with_on_reboot_restart_keeps_running(
        qemu_env: QemuEnv, reboot_image: Path, make_guest: Guest) -> None:
    driver = qemu_env.driver()
    live = await driver.start(make_guest("t-loop", reboot_image), paused=False, token="test")
    log = qemu_env.context.log_dir / "t-loop.log"
    await async_wait_until(lambda: log.read_bytes().count(b"\x01") >= 3,
                           "the guest booted three times (two resets)",
                           explain=lambda: repr(log.read_bytes()[-200:]))
    seen = await driver.observe("t-loop")
    assert (seen.state, seen.pid) == (State.RUNNING, live.pid)  # qemu resets in place
    assert qemu_env.events == []
    await driver.destroy("t-loop")


async def test_watchdog_pause_is_paused_watchdog(qemu_env: QemuEnv, watchdog_image: Path,
                                                 make_guest: Guest) -> None:
    domain = make_guest("t-dog", watchdog_image)
    assert domain.spec.qemu is not None
    qemu = dataclasses.replace(domain.spec.qemu, watchdog=Watchdog(
        model=WatchdogModel.IB700, action=WatchdogAction.PAUSE))
    domain = dataclasses.replace(domain, spec=dataclasses.replace(domain.spec, qemu=qemu))
    driver = qemu_env.driver()
    await driver.start(domain, paused=False, token="test")
    event = await qemu_env.wait_event(lambda e: e.state is State.PAUSED)
    assert (event.reason, event.events, event.cause) == (
        Reason.WATCHDOG, ((EventType.SUSPENDED, EventDetail.WATCHDOG),), Cause.GUEST)
    live = await driver.observe("t-dog")
    assert (live.state, live.reason) == (State.PAUSED, Reason.WATCHDOG)
    await driver.destroy("t-dog")
