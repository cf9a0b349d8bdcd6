"""Managed save, restore and host shutdown through the engine, with the in-memory driver.

The decisions are decide()'s (tests/reconcile/test_decide.py); these follow them through the
executor and the books: the events each step emits and their cause, the saved image in the
status, the request a `domctl save` leaves (or does not, when it fails), a host shutdown's
record and holds, and the next controller bringing the domains back. The real thing, with
qemu and the test guest, is tests/daemon/test_stateful_daemon.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.api.backend import ControllerBackend
from controller.api.parsing import Refused
from controller.api.server import Caller
from controller.engine.controller import Controller
from controller.engine.requests import NotRunning
from controller.paths import Paths
from controller.state.hostshutdown import HostShutdownBook
from reconcilers.errors import DriverError, NotSupportedError
from reconcilers.model import Domain, DriverName, Reason, State, StopMode
from tests.support.domains import domain as build
from tests.support.memory import MemoryDriver, MemoryHost

from .domains import domain
from .test_controller import converge, events, make_controller, snapshot

SAVE = StopMode.SAVE


def vm(name: str = "vm", state: str = "running", memory: str = "64Mi",
       stop_mode: StopMode = StopMode.SHUTDOWN) -> Domain:
    plain = domain(name, state, memory)
    return dataclasses.replace(plain, spec=dataclasses.replace(plain.spec, stop_mode=stop_mode))


def shown(controller: Controller, name: str = "vm") -> tuple[State, Reason]:
    status = controller.statuses.read(name)
    assert status is not None
    return status.state, status.reason


@pytest.fixture
def driver() -> MemoryDriver:
    return MemoryDriver()


async def test_stopmode_save_saves_and_the_next_start_restores(tmp_path: Path,
                                                               driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver, vm(stop_mode=SAVE))
    await converge(controller)
    controller.on_snapshot(snapshot(vm(state="shutoff", stop_mode=SAVE)))
    await converge(controller)
    assert "vm" not in driver.running and "vm" in driver.host.saved
    assert shown(controller) == (State.SHUTOFF, Reason.SAVED)
    assert events(controller)[-2:] == [("suspended", "paused", "manifest"),
                                       ("stopped", "saved", "manifest")]
    status = controller.statuses.read("vm")
    assert status is not None and status.saved is not None and not status.saved.paused
    assert controller.crash.failures("vm") == 0  # a save is no failure
    controller.on_snapshot(snapshot(vm(stop_mode=SAVE)))
    await converge(controller)
    assert shown(controller) == (State.RUNNING, Reason.RESTORED)
    assert events(controller)[-2:] == [("started", "restored", "manifest"),
                                       ("resumed", "from_snapshot", "manifest")]
    assert "vm" not in driver.host.saved  # the guest runs from it now
    status = controller.statuses.read("vm")
    assert status is not None and status.saved is None


async def test_a_paused_save_is_restored_paused_then_resumed_as_desired(
        tmp_path: Path, driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver, vm(state="paused", stop_mode=SAVE))
    await converge(controller)
    controller.on_snapshot(snapshot(vm(state="shutoff", stop_mode=SAVE)))
    await converge(controller)
    assert events(controller)[-1] == ("stopped", "saved", "manifest")  # no second pause
    assert driver.host.saved["vm"].paused
    controller.on_snapshot(snapshot(vm(state="paused", stop_mode=SAVE)))
    await converge(controller)
    assert shown(controller) == (State.PAUSED, Reason.USER)
    assert events(controller)[-2:] == [("started", "restored", "manifest"),
                                       ("suspended", "restored", "manifest")]
    controller.request("vm", "start", uid=0)  # desired running: the restored pause is resumed
    await converge(controller)
    assert shown(controller)[0] is State.RUNNING
    assert events(controller)[-1] == ("resumed", "unpaused", "api")


async def test_a_restart_only_change_discards_the_image_and_says_why(
        tmp_path: Path, driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver, vm())
    await converge(controller)
    await controller.save("vm", uid=0)
    controller.on_snapshot(snapshot(vm(memory="128Mi")))  # memory: restart-only here
    await converge(controller)
    assert shown(controller) == (State.RUNNING, Reason.BOOTED)
    started = [r for r in controller.events.recent("vm", 100) if r["event"] == "started"][-1]
    assert started["detail"] == "booted"
    assert "saved image discarded: restart-only changes since the save (memory)" \
        in started["message"]
    assert "vm" not in driver.host.saved


async def test_domctl_save_holds_the_domain_and_start_restores_or_force_boots(
        tmp_path: Path, driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver, vm())
    await converge(controller)
    image = await controller.save("vm", uid=1000)
    assert image.spec.memory == 64 * 1024 * 1024
    await converge(controller)
    assert "vm" not in driver.running  # held off like an API stop
    stops = [r for r in controller.events.recent("vm", 100) if r["event"] == "stopped"]
    assert stops[-1]["detail"] == "saved" and stops[-1]["causeDetail"] == {"uid": 1000}
    controller.request("vm", "start", uid=0)
    await converge(controller)
    assert shown(controller) == (State.RUNNING, Reason.RESTORED)
    await controller.save("vm", uid=0)
    controller.request("vm", "start", uid=0, force_boot=True)
    await converge(controller)
    assert shown(controller) == (State.RUNNING, Reason.BOOTED)
    assert "forced boot" in controller.events.recent("vm", 1)[-1]["message"]
    assert "vm" not in driver.host.saved


async def test_a_save_of_a_shutoff_domain_is_a_clear_error(tmp_path: Path,
                                                           driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver, vm(state="shutoff"))
    await converge(controller)
    with pytest.raises(NotRunning, match=r"vm is not running \(shutoff \(unknown\)\), so it "
                                         r"cannot be saved$"):
        await controller.save("vm", uid=0)


async def test_a_save_that_fails_holds_nothing(tmp_path: Path) -> None:
    """A container cannot be saved: the driver's NotSupported reaches the caller and the
    container keeps running, not held off by a save that never happened."""
    lxc = MemoryDriver(name=DriverName.LXC)
    controller = make_controller(tmp_path, lxc, build("ct", DriverName.LXC, uuid=None))
    await converge(controller, "ct")
    with pytest.raises(NotSupportedError, match="managed save is not supported by the lxc"):
        await controller.save("ct", uid=0)
    await converge(controller, "ct")
    assert "ct" in lxc.running
    record = controller.registry.get("ct")
    assert record is not None and record.override is None


async def test_a_saved_domain_stays_saved_across_a_controller_restart(
        tmp_path: Path, driver: MemoryDriver) -> None:
    """Nothing runs to re-attach: the image on disk (the driver's saved_image) tells."""
    controller = make_controller(tmp_path, driver, vm(stop_mode=SAVE))
    await converge(controller)
    controller.on_snapshot(snapshot(vm(state="shutoff", stop_mode=SAVE)))
    await converge(controller)
    again = make_controller(tmp_path, MemoryDriver(driver.host))  # forgets its last stops
    await again.reattach_all()
    again.on_snapshot(snapshot(vm(state="shutoff", stop_mode=SAVE)))
    await converge(again)
    assert shown(again) == (State.SHUTOFF, Reason.SAVED)
    status = again.statuses.read("vm")
    assert status is not None and status.saved is not None
    assert "vm" in driver.host.saved


# --- host shutdown -----------------------------------------------------------------------------

@pytest.fixture
async def running_three(tmp_path: Path) -> AsyncIterator[tuple[Controller, MemoryHost]]:
    """A controller with its workers running three domains, one of them paused."""
    host = MemoryHost()
    controller = make_controller(tmp_path, MemoryDriver(host), *_three())
    for name in ("a", "b", "c"):
        await converge(controller, name)
    workers = asyncio.ensure_future(controller.workers())
    yield controller, host
    await controller.stop()
    await workers


def _three() -> list[Domain]:
    return [vm("a"), vm("b"), vm("c", state="paused")]


async def test_host_shutdown_saves_everything_holds_it_and_the_next_controller_restores(
        tmp_path: Path, running_three: tuple[Controller, MemoryHost]) -> None:
    controller, host = running_three
    record = await controller.host_shutdown(SAVE, parallel=2, timeout=10, uid=0)
    assert [(d.name, d.result, d.ok) for d in record.domains] == [
        ("a", "saved", True), ("b", "saved", True), ("c", "saved", True)]
    assert host.running == {} and sorted(host.saved) == ["a", "b", "c"]
    assert host.saved["c"].paused and not host.saved["a"].paused
    on_disk = HostShutdownBook(tmp_path).read()
    assert on_disk is not None and [d.name for d in on_disk.domains] == ["a", "b", "c"]
    controller.on_snapshot(snapshot(vm("a", memory="96Mi"), *_three()[1:]))  # held anyway
    controller.request("b", "start", uid=0)
    for name in ("a", "b", "c"):
        await converge(controller, name)
    assert host.running == {}
    await controller.stop()
    # the host boots; the next controller brings them back, with their memory
    again = make_controller(tmp_path, MemoryDriver(host))
    await again.reattach_all()
    assert HostShutdownBook(tmp_path).read() is None  # the record is cleared
    again.on_snapshot(snapshot(*_three()))
    for name in ("a", "b", "c"):
        await converge(again, name)
    assert {n: (live.state, live.reason) for n, live in host.running.items()} == {
        "a": (State.RUNNING, Reason.RESTORED), "b": (State.RUNNING, Reason.RESTORED),
        "c": (State.PAUSED, Reason.USER)}
    assert host.saved == {}


async def test_host_shutdown_by_shutdown_destroys_what_ignores_it_at_the_timeout(
        tmp_path: Path, running_three: tuple[Controller, MemoryHost]) -> None:
    controller, host = running_three
    host.deaf.add("b")
    record = await controller.host_shutdown(StopMode.SHUTDOWN, parallel=3, timeout=1, uid=0)
    results = {d.name: (d.result, d.ok) for d in record.domains}
    assert results["a"] == ("shutoff (shutdown)", True)
    assert results["c"] == ("shutoff (shutdown)", True)  # resumed first, then shut down
    assert results["b"] == ("destroyed at the timeout", False)
    assert host.running == {} and host.saved == {}
    stops = {r["domain"]: r for r in controller.events.recent(None, 100)
             if r["event"] == "stopped"}
    assert stops["a"]["cause"] == "api" and stops["b"]["detail"] == "destroyed"


async def test_a_save_that_fails_at_host_shutdown_falls_back_to_a_shutdown(
        tmp_path: Path, running_three: tuple[Controller, MemoryHost]) -> None:
    controller, host = running_three
    for driver in controller.drivers.values():
        assert isinstance(driver, MemoryDriver)
        driver.fail_save = DriverError("a", "save", "disk full")
    record = await controller.host_shutdown(SAVE, parallel=1, timeout=10, uid=0)
    first = record.domains[0]
    assert (first.name, first.mode, first.ok) == ("a", StopMode.SHUTDOWN, False)
    assert first.result == "save failed (save a: disk full); shutoff (shutdown)"
    assert host.running == {}


async def test_the_api_saves_at_once_and_refuses_a_bad_host_shutdown(
        tmp_path: Path, running_three: tuple[Controller, MemoryHost]) -> None:
    controller, host = running_three
    backend = ControllerBackend(controller, Paths(*(tmp_path,) * 5), act_timeout=5.0)
    caller = Caller(pid=1, uid=0, gid=0, read_only=False)
    result = await backend.act("a", "save", caller)
    assert (result["done"], result["state"], result["reason"]) == (True, "shutoff", "saved")
    assert result["image"] == {"path": "memory://a.save", "size": 16 * 1024 * 1024}
    with pytest.raises(Refused, match="mode 'hibernate' is not one of save, shutdown"):
        await backend.host_shutdown("hibernate", 1, 1, caller)
    with pytest.raises(Refused, match="parallel must be at least 1"):
        await backend.host_shutdown("save", 0, 1, caller)
    reply = await backend.host_shutdown("shutdown", 2, 10, caller)
    assert reply["ok"] and [d["name"] for d in reply["domains"]] == ["b", "c"]
    assert reply["message"] == ("host-shutdown --mode shutdown: 2 domain(s) held down until "
                                "the controller restarts")
    assert host.running == {} and list(host.saved) == ["a"]
