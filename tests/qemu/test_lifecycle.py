"""Real qemu: start, start paused, suspend/resume, destroy, and the guest powering itself off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reconcilers.identity import is_alive
from reconcilers.model import Cause, Domain, EventDetail, EventType, Reason, State

if TYPE_CHECKING:
    from tests.qemu.conftest import QemuEnv

Guest = Callable[..., Domain]

pytestmark = pytest.mark.qemu


async def test_start_running_then_destroy(qemu_env: QemuEnv, loop_image: Path,
        make_guest: Guest) -> None:
    driver = qemu_env.driver()
    live = await driver.start(make_guest("t-run", loop_image), paused=False)
    assert (live.state, live.reason) == (State.RUNNING, Reason.BOOTED)
    assert live.pid is not None and is_alive(live.pid)
    assert "accel tcg" in live.message
    cgroup = driver._tracked["t-run"].cgroup  # noqa: SLF001
    assert cgroup.exists()
    await driver.destroy("t-run")
    assert not is_alive(live.pid)
    assert not cgroup.exists()
    live = await driver.observe("t-run")
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.DESTROYED)
    event = qemu_env.events[-1]
    assert event.events == ((EventType.STOPPED, EventDetail.DESTROYED),)
    assert event.cause is Cause.CONTROLLER


async def test_start_paused_suspend_resume(qemu_env: QemuEnv, loop_image: Path,
        make_guest: Guest) -> None:
    driver = qemu_env.driver()
    live = await driver.start(make_guest("t-pause", loop_image), paused=True)
    assert (live.state, live.reason) == (State.PAUSED, Reason.USER)
    await driver.resume("t-pause")
    assert (await driver.observe("t-pause")).state is State.RUNNING
    await driver.suspend("t-pause")
    live = await driver.observe("t-pause")
    assert (live.state, live.reason) == (State.PAUSED, Reason.USER)
    await driver.resume("t-pause")
    live = await driver.observe("t-pause")
    assert (live.state, live.reason) == (State.RUNNING, Reason.UNPAUSED)
    assert qemu_env.events == []  # our own operations are not reported as runtime events


async def test_guest_poweroff(qemu_env: QemuEnv, poweroff_image: Path,
        make_guest: Guest) -> None:
    driver = qemu_env.driver()
    await driver.start(make_guest("t-off", poweroff_image), paused=False)
    event = await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    assert event.reason is Reason.SHUTDOWN
    assert event.events == ((EventType.SHUTDOWN, EventDetail.GUEST),
                            (EventType.STOPPED, EventDetail.SHUTDOWN))
    assert event.cause is Cause.GUEST
    live = await driver.observe("t-off")
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.SHUTDOWN)
