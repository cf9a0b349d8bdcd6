"""Re-attach after a controller restart: adopt a proven qemu, refuse (and spare) anything else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from reconcilers.errors import DriverError
from reconcilers.identity import is_alive
from reconcilers.model import EventDetail, EventType, Lifecycle, LifecycleAction, Reason, State
from tests.support.domains import domain
from tests.support.qemu import QemuEnv

pytestmark = pytest.mark.qemu


async def test_fresh_driver_adopts_and_events_flow(qemu_env: QemuEnv,
                                                   poweroff_image: Path) -> None:
    first = qemu_env.driver()
    live = await first.start(domain("t-adopt", image=poweroff_image), paused=True, token="test")
    assert live.record is not None and live.pid is not None
    await first.close()  # the controller goes away; qemu stays
    assert is_alive(live.pid)

    second = qemu_env.driver()
    adopted = await second.reattach(live.record)
    assert adopted is not None
    assert (adopted.state, adopted.pid) == (State.PAUSED, live.pid)
    await second.resume("t-adopt")  # the guest powers off: seen over the re-opened QMP
    event = await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    assert event.reason is Reason.SHUTDOWN
    assert event.events[-1] == (EventType.STOPPED, EventDetail.SHUTDOWN)
    assert not is_alive(live.pid)


async def test_refuses_a_different_start_time_and_leaves_it_alone(
        qemu_env: QemuEnv, loop_image: Path) -> None:
    first = qemu_env.driver()
    live = await first.start(domain("t-other", image=loop_image), paused=False, token="test")
    assert live.record is not None and live.pid is not None
    await first.close()
    forged = dataclasses.replace(live.record, starttime=live.record.starttime + 1)
    second = qemu_env.driver()
    result = await second.reattach(forged)
    assert result is not None and result.state is State.NOSTATE
    assert "start time" in result.message
    assert is_alive(live.pid)
    wrong_uuid = dataclasses.replace(live.record, uuid="00000000-0000-0000-0000-000000000000")
    result = await second.reattach(wrong_uuid)
    assert result is not None and result.state is State.NOSTATE
    with pytest.raises(DriverError, match="refusing"):
        await second.destroy("t-other")  # not adopted: destroy must not touch it
    assert is_alive(live.pid)
    assert (await second.reattach(live.record)) is not None  # the true record still adopts
    await second.destroy("t-other")
    assert not is_alive(live.pid)
    assert await second.reattach(live.record) is None  # gone


async def test_close_leaves_domains_running(qemu_env: QemuEnv, loop_image: Path) -> None:
    driver = qemu_env.driver()
    live = await driver.start(domain("t-close", image=loop_image), paused=False, token="test")
    await driver.close()
    assert live.pid is not None and is_alive(live.pid)
    qemu_env.pids.add(live.pid)  # the fixture kills it
    fresh = qemu_env.driver()  # no record handed over: the process is not ours to touch
    seen = await fresh.observe("t-close")
    assert (seen.state, seen.pid) == (State.NOSTATE, live.pid)
    with pytest.raises(DriverError, match="already runs"):
        await fresh.start(domain("t-close", image=loop_image), paused=False, token="test")
    for refused in (fresh.destroy("t-close"), fresh.shutdown("t-close", 1.0)):
        with pytest.raises(DriverError, match="refusing"):
            await refused
    assert is_alive(live.pid)


async def test_power_off_missed_while_away_is_finished_on_reattach(
        qemu_env: QemuEnv, poweroff_image: Path) -> None:
    first = qemu_env.driver()
    preserve = Lifecycle(on_poweroff=LifecycleAction.PRESERVE)
    live = await first.start(domain("t-missed", image=poweroff_image, lifecycle=preserve),
                             paused=False, token="test")
    event = await qemu_env.wait_event(lambda e: e.state is State.PAUSED)
    assert (event.reason, event.events) == (Reason.SHUTDOWN,
                                            ((EventType.SHUTDOWN, EventDetail.GUEST),))
    assert live.record is not None
    await first.close()
    # the next controller runs with on_poweroff destroy in the record: it finishes the stop
    record = dataclasses.replace(live.record, extra={**live.record.extra,
                                                     "on_poweroff": "destroy"})
    await qemu_env.driver().reattach(record)
    event = await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    assert event.reason is Reason.SHUTDOWN
    assert live.pid is not None and not is_alive(live.pid)


async def test_recover_adopts_by_token_and_stops_an_unadoptable_one(
        qemu_env: QemuEnv, loop_image: Path) -> None:
    """The rule for a process that is provably ours but cannot be adopted: the start token
    proves it is the unrecorded start; with its QMP socket gone it cannot be driven, so it is
    killed (never a guest of anyone else's). A wrong token adopts nothing and kills nothing."""
    vm = domain("t-recover", image=loop_image)
    first = qemu_env.driver()
    live = await first.start(vm, paused=False, token="start-1")
    assert live.pid is not None
    await first.close()
    second = qemu_env.driver()
    assert await second.strays(vm.name) == (f"qemu pid {live.pid}",)
    assert await second.recover(vm, "start-0") is None and is_alive(live.pid)
    files = second._files(vm.name)
    files.qmp.unlink()  # cannot be driven any more
    assert await second.recover(vm, "start-1") is None
    assert not is_alive(live.pid)
    assert await second.strays(vm.name) == ()


async def test_recover_adopts_the_unrecorded_start(qemu_env: QemuEnv, loop_image: Path) -> None:
    vm = domain("t-recover2", image=loop_image)
    first = qemu_env.driver()
    live = await first.start(vm, paused=True, token="start-2")
    await first.close()
    second = qemu_env.driver()
    recovered = await second.recover(vm, "start-2")
    assert recovered is not None and recovered.record is not None
    assert (recovered.state, recovered.pid) == (State.PAUSED, live.pid)
    assert await second.strays(vm.name) == ()
    await second.destroy(vm.name)
    assert not is_alive(live.pid or 0)
