"""Real guests that panic or reboot, and the lifecycle actions (on_crash, on_reboot) applied."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reconcilers.model import (Cause, Domain, EventDetail, EventType, Lifecycle, LifecycleAction,
                               Reason, State)

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
    await driver.start(with_panic_device(make_guest("t-panic", panic_image)), paused=False)
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
    await driver.start(with_panic_device(domain), paused=False)
    await qemu_env.wait_event(lambda e: PANICKED in e.events)
    live = await driver.observe("t-keep")
    assert (live.state, live.reason) == (State.CRASHED, Reason.PANICKED)
    await driver.destroy("t-keep")
    assert qemu_env.events[-1].reason is Reason.DESTROYED


async def test_reboot_with_on_reboot_destroy(qemu_env: QemuEnv, reboot_image: Path,
                                             make_guest: Guest) -> None:
    driver = qemu_env.driver()
    domain = make_guest("t-reboot", reboot_image,
                        lifecycle=Lifecycle(on_reboot=LifecycleAction.DESTROY))
    await driver.start(domain, paused=False)
    stopped = await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    assert (stopped.reason, stopped.cause) == (Reason.SHUTDOWN, Cause.GUEST)
    assert "rebooted" in stopped.message


async def test_reboot_with_on_reboot_restart_keeps_running(
        qemu_env: QemuEnv, reboot_image: Path, make_guest: Guest) -> None:
    driver = qemu_env.driver()
    live = await driver.start(make_guest("t-loop", reboot_image), paused=False)
    stats = await driver._tracked["t-loop"].monitor.execute("query-status")  # noqa: SLF001
    assert stats["status"] == "running"
    seen = await driver.observe("t-loop")
    assert (seen.state, seen.pid) == (State.RUNNING, live.pid)  # qemu resets in place
    assert qemu_env.events == []
    await driver.destroy("t-loop")
