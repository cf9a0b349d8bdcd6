"""A real guest that panicked, found by a driver after a controller restart, then destroyed: the
stop stays the crash it was (shutoff/crashed, stopped/crashed), as statemachine.py's
(crashed, destroy) row and libvirt's onCrash=destroy say."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reconcilers.identity import is_alive
from reconcilers.model import (
    Cause,
    Domain,
    EventDetail,
    EventType,
    Lifecycle,
    LifecycleAction,
    Reason,
    State,
)
from reconcilers.statemachine import Trigger, transition

if TYPE_CHECKING:
    from tests.qemu.conftest import QemuEnv

pytestmark = pytest.mark.qemu
PANICKED = ((EventType.CRASHED, EventDetail.PANICKED),)


def panicking(make_guest: Callable[..., Domain], name: str, image: Path) -> Domain:
    domain = make_guest(name, image, lifecycle=Lifecycle(on_crash=LifecycleAction.PRESERVE))
    assert domain.spec.qemu is not None
    qemu = dataclasses.replace(domain.spec.qemu, panic=True)
    return dataclasses.replace(domain, spec=dataclasses.replace(domain.spec, qemu=qemu))


async def test_a_crash_found_on_reattach_is_reported_and_destroyed_as_a_crash(
        qemu_env: QemuEnv, panic_image: Path, make_guest: Callable[..., Domain]) -> None:
    first = qemu_env.driver()
    live = await first.start(panicking(make_guest, "t-wreck", panic_image),
            paused=False, token="test")
    await qemu_env.wait_event(lambda e: e.events == PANICKED)
    assert live.record is not None and live.pid is not None
    await first.close()
    qemu_env.events.clear()

    second = qemu_env.driver()
    found = await second.reattach(live.record)
    assert found is not None and (found.state, found.reason) == (State.CRASHED, Reason.PANICKED)
    # the panic nobody saw is reported once, from the running state the guest had
    assert [(e.state, e.events, e.cause) for e in qemu_env.events] == [
        (State.CRASHED, PANICKED, Cause.GUEST)]
    await second.destroy("t-wreck")
    stopped = qemu_env.events[-1]
    crash_destroyed = transition(State.CRASHED, Trigger.DESTROY)
    assert (stopped.state, stopped.reason, stopped.events) == (
        crash_destroyed.target, crash_destroyed.reason, crash_destroyed.events)
    assert (stopped.reason, stopped.events) == (Reason.CRASHED,
                                                ((EventType.STOPPED, EventDetail.CRASHED),))
    assert (await second.observe("t-wreck")).reason is Reason.CRASHED
    assert not is_alive(live.pid)
