"""A guest's own report of its addresses (a guest agent that may be silent for a second) is
asked at most every GUEST_REFRESH seconds per run, not at every pass."""

from __future__ import annotations

from pathlib import Path

from controller.engine.controller import Controller
from controller.engine.hooks import HookRunner
from controller.engine.statusview import GUEST_REFRESH
from controller.settings import EngineSettings, HookSettings
from controller.state.events import AuditLog, EventBus
from controller.state.registry import Registry
from controller.state.status import ConditionType, StatusStore
from reconcilers.driver import AgentState, GuestInterfaces
from reconcilers.model import Accel, QemuSpec
from tests.support.domains import domain
from tests.support.memory import MemoryDriver
from tests.unit.test_controller import snapshot


async def test_a_silent_agent_is_asked_again_only_after_the_refresh_period(
        tmp_path: Path) -> None:
    driver, now, asked = MemoryDriver(), [1000.0], []

    async def interfaces(name: str) -> GuestInterfaces:
        asked.append(name)
        return GuestInterfaces(agent=AgentState.NOT_RESPONDING, agent_message="no answer")

    driver.interfaces = interfaces  # type: ignore[method-assign]
    controller = Controller(
        drivers={driver.name: driver}, registry=Registry(tmp_path),
        statuses=StatusStore(tmp_path), events=EventBus(tmp_path), audit=AuditLog(tmp_path),
        hooks=HookRunner(None, HookSettings()), settings=EngineSettings(workers=1),
        wall=lambda: now[0])
    driver.on_event = controller.on_runtime_event
    vm = domain("vm", qemu=QemuSpec(machine="pc", accel=Accel.TCG, guest_agent=True))
    controller.on_snapshot(snapshot(vm))
    await controller.reconcile("vm")  # starts it: the first projection asks
    await controller.reconcile("vm")
    await controller.reconcile("vm")
    assert asked == ["vm"]
    status = controller.statuses.read("vm")
    agent = status.condition(ConditionType.GUEST_AGENT) if status is not None else None
    assert agent is not None and agent.reason == "NotResponding", status
    now[0] += GUEST_REFRESH + 1
    await controller.reconcile("vm")
    assert asked == ["vm", "vm"]
