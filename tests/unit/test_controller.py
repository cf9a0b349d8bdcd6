"""The controller's bookkeeping around passes, with an in-memory driver (pure logic only).

The real daemon with real qemu and LXC is tested in tests/daemon; these cover the rules that
are costly to reach there: how a failed start is recorded, API overrides and their lifting,
restart counting, a domain lost while the controller was away.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import MappingProxyType

import pytest

from controller.engine.controller import Controller
from controller.engine.hooks import HookRunner
from controller.manifests.source import Snapshot
from controller.settings import EngineSettings, HookSettings
from controller.state.events import AuditLog, EventBus
from controller.state.jsondir import JsonDir
from controller.state.registry import Registry
from controller.state.status import ConditionType, StatusStore
from reconcilers.driver import Live, RuntimeRecord
from reconcilers.errors import DriverError, HostValidationError, NotSupportedError
from reconcilers.model import (
    Domain,
    DriverName,
    LxcSpec,
    Reason,
    State,
)
from tests.support.domains import domain as build
from tests.support.memory import MemoryDriver, MemoryHost
from tests.support.waiting import async_wait_until

from .domains import domain


@pytest.fixture
def driver() -> MemoryDriver:
    return MemoryDriver()


def make_controller(tmp_path: Path, driver: MemoryDriver, *domains: Domain) -> Controller:
    """A controller on `tmp_path` with `driver`, shown a manifests snapshot of `domains`."""
    controller = Controller(
        drivers={driver.name: driver}, registry=Registry(tmp_path),
        statuses=StatusStore(tmp_path), events=EventBus(tmp_path), audit=AuditLog(tmp_path),
        hooks=HookRunner(None, HookSettings()), settings=EngineSettings(workers=1))
    driver.on_event = controller.on_runtime_event
    if domains:
        controller.on_snapshot(snapshot(*domains))
    return controller


async def started(tmp_path: Path, driver: MemoryDriver, vm: Domain | None = None) -> Controller:
    """A controller that has run one pass of `vm` (a running qemu domain by default)."""
    controller = make_controller(tmp_path, driver, vm or domain())
    await controller.reconcile("vm")
    return controller


def snapshot(*domains: Domain) -> Snapshot:
    return Snapshot(domains=MappingProxyType({d.name: d for d in domains}))


def events(controller: Controller, name: str = "vm") -> list[tuple[str, str, str]]:
    return [(r["event"], r["detail"], r["cause"]) for r in controller.events.recent(name, 100)]


async def converge(controller: Controller, name: str = "vm", passes: int = 3) -> None:
    """`passes` passes, each followed by the graceful shutdown it began, if any (those wait
    for the guest in the background, as in the daemon)."""
    for _ in range(passes):
        await controller.reconcile(name)
        await async_wait_until(lambda: not controller.reconciler.shutting_down(name),
                               f"the graceful shutdown of {name} to end")


async def test_a_transient_start_failure_is_a_recorded_failed_stop(
        tmp_path: Path, driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver, domain())
    driver.fail_start = DriverError("vm", "start", "qemu said no")
    await controller.reconcile("vm")
    status = controller.statuses.read("vm")
    assert status is not None and (status.state, status.reason) == (State.SHUTOFF, Reason.FAILED)
    assert events(controller)[-1] == ("stopped", "failed", "manifest")
    assert controller.crash.failures("vm") == 1
    stalled = status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.reason == "BackingOff"


async def test_a_host_validation_error_stalls_until_the_host_is_fixed(
        tmp_path: Path, driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver, domain())
    driver.invalid = HostValidationError("vm", "spec.qemu.kernel", "does not exist")
    await converge(controller)
    assert [e for e in events(controller) if e[0] == "stopped"] == []  # nothing was started
    status = controller.statuses.read("vm")
    assert status is not None
    stalled = status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.reason == "HostValidation"
    assert "spec.qemu.kernel: does not exist" in stalled.message
    driver.invalid = None  # the operator put the kernel in place: no manifest edit needed
    await controller.reconcile("vm")
    assert "vm" in driver.running
    status = controller.statuses.read("vm")
    assert status is not None
    stalled = status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.status.value == "False"


async def test_a_terminal_error_stalls_until_the_manifest_changes(
        tmp_path: Path, driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver, domain())
    driver.fail_start = NotSupportedError("qemu", "this start")
    await converge(controller)
    status = controller.statuses.read("vm")
    assert status is not None
    assert [c.reason for c in status.conditions if c.type.value == "Stalled"] == ["Terminal"]
    driver.fail_start = None
    await converge(controller)
    assert "vm" not in driver.running
    controller.on_snapshot(snapshot(domain(memory="128Mi")))
    await controller.reconcile("vm")
    assert "vm" in driver.running


async def test_an_api_stop_holds_until_the_manifest_changes(tmp_path: Path,
                                                            driver: MemoryDriver) -> None:
    controller = await started(tmp_path, driver)
    controller.request("vm", "stop", uid=1000)
    await converge(controller)
    assert "vm" not in driver.running
    status = controller.statuses.read("vm")
    assert status is not None and status.desired is not None
    assert status.desired.value == "shutoff"
    assert [c.status.value for c in status.conditions if c.type.value == "Overridden"] == ["True"]
    stop = [r for r in controller.events.recent("vm", 100) if r["event"] == "stopped"]
    assert stop[-1]["cause"] == "api" and stop[-1]["causeDetail"] == {"uid": 1000}
    controller.on_snapshot(snapshot(domain(memory="128Mi")))  # an edit lifts the override
    await converge(controller)
    assert "vm" in driver.running
    status = controller.statuses.read("vm")
    assert status is not None
    assert [c.status.value for c in status.conditions if c.type.value == "Overridden"] == ["False"]


async def test_an_api_start_of_a_domain_the_manifest_runs_leaves_no_override(
        tmp_path: Path, driver: MemoryDriver) -> None:
    controller = await started(tmp_path, driver)
    controller.request("vm", "start", uid=1000)
    await converge(controller)
    status = controller.statuses.read("vm")
    assert status is not None and "vm" in driver.running
    overridden = [c for c in status.conditions if c.type.value == "Overridden"]
    assert [(c.status.value, c.reason) for c in overridden] == [("False", "FollowsManifest")]
    controller.request("vm", "suspend", uid=1000)  # one the manifest does not ask for does
    await converge(controller)
    status = controller.statuses.read("vm")
    assert status is not None
    assert [c.status.value for c in status.conditions if c.type.value == "Overridden"] == ["True"]


async def test_an_api_start_overrides_an_earlier_api_stop(tmp_path: Path,
                                                          driver: MemoryDriver) -> None:
    controller = await started(tmp_path, driver)
    controller.request("vm", "stop", uid=0)
    await converge(controller)
    controller.request("vm", "start", uid=0)
    await converge(controller)
    assert driver.running["vm"].state is State.RUNNING


async def test_an_api_restart_counts_as_a_restart(tmp_path: Path, driver: MemoryDriver) -> None:
    controller = await started(tmp_path, driver)
    first = driver.running["vm"].pid
    controller.request("vm", "restart", uid=0)
    await converge(controller)
    assert driver.running["vm"].pid != first
    record = controller.registry.get("vm")
    assert record is not None and record.restarts == 1


async def test_unknown_actions_and_names_are_refused(tmp_path: Path,
                                                     driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver)
    with pytest.raises(ValueError, match="unknown action"):
        controller.request("vm", "reboot", uid=0)
    with pytest.raises(Exception, match="no domain named ghost"):
        controller.request("ghost", "stop", uid=0)


async def test_a_domain_lost_while_away_is_reported_and_started_at_once(
        tmp_path: Path, driver: MemoryDriver) -> None:
    await started(tmp_path, driver)
    driver.running.clear()  # the host lost it while no controller ran
    again = make_controller(tmp_path, driver)
    await again.reattach_all()
    assert events(again)[-1] == ("stopped", "failed", "external")
    again.on_snapshot(snapshot(domain()))
    await again.reconcile("vm")
    assert "vm" in driver.running and again.crash.failures("vm") == 0


async def test_an_adopted_domain_keeps_its_reason_and_emits_nothing(
        tmp_path: Path, driver: MemoryDriver) -> None:
    controller = await started(tmp_path, driver, domain(state="paused"))
    before = len(events(controller))
    record = controller.registry.get("vm")
    assert record is not None and record.runtime is not None
    driver.running["vm"] = Live(State.PAUSED, Reason.STARTING_UP, pid=record.runtime.pid,
                                  record=record.runtime)
    again = make_controller(tmp_path, driver)
    await again.reattach_all()
    again.on_snapshot(snapshot(domain(state="paused")))
    await again.reconcile("vm")
    status = again.statuses.read("vm")
    assert status is not None and (status.state, status.reason) == (State.PAUSED, Reason.USER)
    assert len(events(again)) == before


async def test_an_api_stop_survives_a_controller_restart(tmp_path: Path,
                                                         driver: MemoryDriver) -> None:
    controller = await started(tmp_path, driver)
    controller.request("vm", "stop", uid=7)
    await converge(controller)
    again = make_controller(tmp_path, driver)
    await again.reattach_all()
    again.on_snapshot(snapshot(domain()))
    await converge(again)
    assert "vm" not in driver.running
    status = again.statuses.read("vm")
    assert status is not None and status.desired is not None
    assert status.desired.value == "shutoff"
    overridden = status.condition(ConditionType.OVERRIDDEN)
    assert overridden is not None and "uid 7" in overridden.message
    third = make_controller(tmp_path, driver)  # the manifest changed while it was down
    await third.reattach_all()
    third.on_snapshot(snapshot(domain(memory="96Mi")))
    await converge(third)
    assert "vm" in driver.running


async def test_the_crash_loop_count_survives_a_controller_restart(
        tmp_path: Path, driver: MemoryDriver) -> None:
    controller = make_controller(tmp_path, driver, domain())
    driver.fail_start = DriverError("vm", "start", "qemu said no")
    await controller.reconcile("vm")
    assert controller.crash.failures("vm") == 1
    again = make_controller(tmp_path, driver)
    await again.reattach_all()
    assert again.crash.failures("vm") == 1
    again.on_snapshot(snapshot(domain()))
    await again.reconcile("vm")  # the restored count allows a try now; it fails again
    assert again.crash.failures("vm") == 2


async def test_a_name_never_runs_twice_across_drivers(tmp_path: Path) -> None:
    """A qemu of this name runs that no driver adopted (its record was lost): a manifest
    that now says lxc must not start a container beside it."""
    qemu, lxc = MemoryDriver(), MemoryDriver(name=DriverName.LXC)
    await qemu.start(build("vm"), paused=False, token="lost")
    await qemu.close()  # a later controller: the qemu runs, unadopted
    controller = Controller(
        drivers={DriverName.QEMU: MemoryDriver(qemu.host), DriverName.LXC: lxc},
        registry=Registry(tmp_path), statuses=StatusStore(tmp_path), events=EventBus(tmp_path),
        audit=AuditLog(tmp_path), hooks=HookRunner(None, HookSettings()),
        settings=EngineSettings(workers=1))
    controller.on_snapshot(snapshot(build("vm", "lxc", lxc=LxcSpec())))
    await converge(controller)
    assert "vm" not in lxc.running
    status = controller.statuses.read("vm")
    assert status is not None
    stalled = status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.reason == "HostValidation"
    assert "memory pid" in stalled.message and "not starting another" in stalled.message


class GatedReattach(MemoryDriver):
    """Each re-attach waits until `together` of them are under way at once."""

    def __init__(self, host: MemoryHost, together: int) -> None:
        super().__init__(host)
        self.arrived = 0
        self.together = together
        self.gate = asyncio.Event()

    async def reattach(self, record: RuntimeRecord) -> Live | None:
        self.arrived += 1
        if self.arrived >= self.together:
            self.gate.set()
        await self.gate.wait()
        return await super().reattach(record)


async def test_recorded_domains_are_reattached_in_parallel(tmp_path: Path,
                                                           driver: MemoryDriver) -> None:
    """One re-attach after another would wait for ever here: each waits for the third."""
    names = ("a", "b", "c")
    first = make_controller(tmp_path, driver, *(domain(n) for n in names))
    for name in names:
        await first.reconcile(name)
    gated = GatedReattach(driver.host, together=len(names))
    again = make_controller(tmp_path, gated)
    await asyncio.wait_for(again.reattach_all(), 10)
    assert [await gated.strays(n) for n in names] == [(), (), ()]  # every one adopted


async def test_a_start_writes_the_record_twice_and_the_status_once(
        tmp_path: Path, driver: MemoryDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write-ahead intent before the spawn, then everything the pass changed at once, in
    a worker thread: not one fsync per field (a first pass also defines the domain)."""
    controller = make_controller(tmp_path, driver, domain())
    await controller.reconcile("vm")  # defines and starts
    controller.request("vm", "stop", uid=0)
    await converge(controller)
    controller.on_snapshot(snapshot(domain(memory="128Mi")))  # lifts the stop
    writes: list[str] = []
    real_write = JsonDir.write

    def counting(self: JsonDir, name: str, obj: object, durable: bool = True) -> None:
        writes.append(self.directory.name)
        real_write(self, name, obj, durable)
    monkeypatch.setattr(JsonDir, "write", counting)
    await controller.reconcile("vm")
    assert "vm" in driver.running
    assert writes.count("domains") == 2, writes
    assert writes.count("status") == 1, writes
