"""Write-ahead starts: a controller killed at any step of a start never yields two qemus.

The controller (engine + real QemuDriver) is "killed" at one step of a start by an exception
that nothing in domctl catches, then abandoned the way a dead process leaves things: its
monitor connections dropped, nothing cleaned up. A second controller on the same directories
re-attaches and reconciles; exactly one qemu of that name must run afterwards, and it must be
the one the manifest wants (running), whatever step the first one died at.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from controller.engine.controller import Controller
from controller.engine.hooks import HookRunner
from controller.engine.ledger import Ledger
from controller.manifests.source import Snapshot
from controller.settings import EngineSettings, HookSettings
from controller.state.events import AuditLog, EventBus
from controller.state.registry import Registry
from controller.state.status import StatusStore
from reconcilers.driver import DriverContext, RuntimeEvent
from reconcilers.model import Domain, DriverName, State
from reconcilers.qemu import process
from reconcilers.qemu.driver import QemuDriver
from reconcilers.qemu.layout import domain_files
from tests.support.domains import domain
from tests.support.qemu import QemuEnv

pytestmark = pytest.mark.qemu


class Killed(BaseException):
    """The controller process died here (a BaseException: no domctl handler catches it)."""


def controller_on(env: QemuEnv, state: Path) -> Controller:
    """An engine with a real qemu driver on `env`'s directories and the state dir `state`."""
    forward: list[Controller] = []

    def on_event(event: RuntimeEvent) -> None:
        if forward:
            forward[0].on_runtime_event(event)

    context = DriverContext(runtime_dir=env.context.runtime_dir, state_dir=state,
                            log_dir=env.context.log_dir, on_event=on_event)
    driver = QemuDriver(context, env.settings)
    env.drivers.append(driver)  # closed and swept by the fixture, also on failure
    controller = Controller(
        drivers={DriverName.QEMU: driver}, registry=Registry(state),
        statuses=StatusStore(state), events=EventBus(state), audit=AuditLog(state),
        hooks=HookRunner(None, HookSettings()), settings=EngineSettings(workers=1))
    forward.append(controller)
    return controller


def wrap(target: Any, attribute: str,
         step: Callable[[Callable[..., Awaitable[Any]], tuple[Any, ...]], Awaitable[Any]],
         monkeypatch: pytest.MonkeyPatch) -> None:
    original = getattr(target, attribute)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        return await step(lambda: original(*args, **kwargs), args)
    monkeypatch.setattr(target, attribute, wrapped)


async def die_before(call: Callable[[], Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    raise Killed


async def die_after(call: Callable[[], Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    await call()
    raise Killed


def die_after_record(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Ledger.record_start

    def wrapped(self: Ledger, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        raise Killed
    monkeypatch.setattr(Ledger, "record_start", wrapped)


STEPS = ["after-intent", "after-spawn", "after-cont", "after-record"]


def arm(step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if step == "after-intent":  # the intent is on disk; nothing spawned
        wrap(QemuDriver, "start", die_before, monkeypatch)
    elif step == "after-spawn":  # qemu runs at -S: no cgroup, no QMP yet, no record
        wrap(process, "launch_domain", die_after, monkeypatch)
    elif step == "after-cont":  # the guest runs; its pid is not recorded
        wrap(QemuDriver, "start", die_after, monkeypatch)
    else:  # the runtime record is written; the pass did not finish
        die_after_record(monkeypatch)


def snapshot(vm: Domain) -> Snapshot:
    return Snapshot(domains=MappingProxyType({vm.name: vm}))


async def one_qemu_after_a_restart(qemu_env: QemuEnv, state: Path, first: Controller, vm: Domain,
                                   step: str) -> tuple[Controller, int]:
    """`first` dead (its sockets closed, as the kernel does), a new controller on its state
    dir, a few passes: exactly one qemu of `vm`, running, the status naming it. The new
    controller and that qemu's pid."""
    for driver in first.drivers.values():
        await driver.close()
    second = controller_on(qemu_env, state)
    await second.reattach_all()
    second.on_snapshot(snapshot(vm))
    for _ in range(4):
        await second.reconcile(vm.name)
    files = domain_files(qemu_env.context.runtime_dir, qemu_env.context.log_dir, vm.name)
    pids = process.running_pids(files)
    assert len(pids) == 1, f"qemus of {vm.name} after a kill {step}: {pids}"
    status = second.statuses.read(vm.name)
    assert status is not None and status.state is State.RUNNING, status
    assert status.pid == pids[0]
    return second, pids[0]


@pytest.mark.parametrize("step", STEPS)
async def test_a_controller_killed_at_any_step_of_a_start_leaves_exactly_one_qemu(
        qemu_env: QemuEnv, tmp_path: Path, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = domain("t-wal", uuid=None)  # the uuid is generated and kept by the ledger
    state = tmp_path / "state"
    first = controller_on(qemu_env, state)
    await first.reattach_all()
    first.on_snapshot(snapshot(vm))
    arm(step, monkeypatch)
    with pytest.raises(Killed):
        await first.reconcile(vm.name)
    monkeypatch.undo()
    second, pid = await one_qemu_after_a_restart(qemu_env, state, first, vm, step)
    record = second.registry.get(vm.name)
    assert record is not None and record.starting is None and record.runtime is not None
    assert record.runtime.pid == pid


RESTORE_STEPS = ["before-restore", "after-restore", "after-record"]


@pytest.mark.parametrize("step", RESTORE_STEPS)
async def test_a_controller_killed_at_any_step_of_a_restore_leaves_exactly_one_qemu(
        qemu_env: QemuEnv, tmp_path: Path, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a start from a managed-save image: never two qemus, and the image is
    either still there (nothing ran from it) or used by the one qemu that runs."""
    vm = domain("t-walr", uuid=None)
    state = tmp_path / "state"
    first = controller_on(qemu_env, state)
    await first.reattach_all()
    first.on_snapshot(snapshot(vm))
    await first.reconcile(vm.name)
    driver = first.drivers[DriverName.QEMU]
    await driver.save(vm.name)
    assert driver.saved_image(vm.name) is not None
    if step == "before-restore":
        wrap(QemuDriver, "restore", die_before, monkeypatch)
    elif step == "after-restore":
        wrap(QemuDriver, "restore", die_after, monkeypatch)
    else:
        die_after_record(monkeypatch)
    with pytest.raises(Killed):  # the pass after the save restores (desired: running)
        await first.reconcile(vm.name)
    monkeypatch.undo()
    await one_qemu_after_a_restart(qemu_env, state, first, vm, step)
