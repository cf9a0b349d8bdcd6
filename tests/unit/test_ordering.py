"""Start ordering in the engine (#16) with an in-memory driver that counts the starts in
flight: a dependsOn chain starts in order and is stopped in reverse on removal, a domain whose
dependency is missing waits with a condition (no error), `--max-parallel-starts` bounds the
starts in flight with the higher startPriority first, and an Observe domain is left down while
its drift is reported."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import pytest

from controller.engine.controller import Controller
from controller.engine.hooks import HookRunner
from controller.manifests.errors import Problem
from controller.manifests.source import Snapshot
from controller.settings import EngineSettings, HookSettings, PruneSettings
from controller.state.events import AuditLog, EventBus
from controller.state.registry import Registry
from controller.state.status import ConditionStatus, ConditionType, StatusStore
from reconcilers.driver import Live
from reconcilers.model import Domain, Management, StopMode
from tests.support.memory import MemoryDriver
from tests.support.waiting import async_wait_until

from .domains import domain as build


class CountingDriver(MemoryDriver):
    """A MemoryDriver whose starts take a while, counting how many are in flight at once and
    recording the order of starts and stops."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.most = 0
        self.starts: list[str] = []
        self.stops: list[str] = []

    async def start(self, domain: Domain, paused: bool, token: str) -> Live:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.starts.append(domain.name)
        try:
            await asyncio.sleep(0.05)
            return await super().start(domain, paused, token)
        finally:
            self.in_flight -= 1

    async def shutdown(self, name: str, timeout: float) -> bool:
        self.stops.append(name)
        return await super().shutdown(name, timeout)


def domain(name: str, depends_on: tuple[str, ...] = (), priority: int = 0,
           management: Management = Management.ENFORCE) -> Domain:
    base = build(name)
    return dataclasses.replace(base, spec=dataclasses.replace(
        base.spec, depends_on=depends_on, start_priority=priority, management=management))


def snapshot(*domains: Domain) -> Snapshot:
    return Snapshot(domains=MappingProxyType({d.name: d for d in domains}))


@pytest.fixture
def driver() -> CountingDriver:
    return CountingDriver()


def controller_for(tmp_path: Path, driver: CountingDriver, workers: int = 4,
                   max_parallel_starts: int | None = None) -> Controller:
    controller = Controller(
        drivers={driver.name: driver}, registry=Registry(tmp_path),
        statuses=StatusStore(tmp_path), events=EventBus(tmp_path), audit=AuditLog(tmp_path),
        hooks=HookRunner(None, HookSettings()),
        settings=EngineSettings(workers=workers, max_parallel_starts=max_parallel_starts,
                                prune=PruneSettings(grace=0.0, guard_min=10)))
    driver.on_event = controller.on_runtime_event
    return controller


@pytest.fixture
def max_parallel_starts() -> int | None:
    return None


@pytest.fixture
async def running(tmp_path: Path, driver: CountingDriver,
                  max_parallel_starts: int | None) -> AsyncIterator[Controller]:
    """A controller whose four workers run."""
    controller = controller_for(tmp_path, driver, max_parallel_starts=max_parallel_starts)
    workers = asyncio.ensure_future(controller.workers())
    yield controller
    await controller.stop()
    await workers


def ready(controller: Controller, name: str) -> tuple[ConditionStatus, str, str] | None:
    status = controller.statuses.read(name)
    condition = status.condition(ConditionType.READY) if status is not None else None
    return None if condition is None else (condition.status, condition.reason, condition.message)


async def test_a_chain_starts_in_order_and_stops_in_reverse(
        running: Controller, driver: CountingDriver) -> None:
    running.on_snapshot(snapshot(domain("web", ("app",)), domain("app", ("db",)), domain("db")))
    await async_wait_until(lambda: len(driver.running) == 3, "the chain to start",
                           explain=lambda: str(driver.starts))
    assert driver.starts == ["db", "app", "web"]
    running.on_snapshot(snapshot())
    await async_wait_until(lambda: not driver.running, "the chain to stop",
                           explain=lambda: str(driver.stops))
    assert driver.stops == ["web", "app", "db"]


async def test_a_missing_dependency_is_a_condition_not_an_error(
        running: Controller, driver: CountingDriver) -> None:
    running.on_snapshot(snapshot(domain("app", ("db",))))
    await async_wait_until(lambda: ready(running, "app") is not None, "app's status")
    assert ready(running, "app") == (ConditionStatus.FALSE, "WaitingForDependency",
                                     "desired running, observed shutoff (unknown): waiting for "
                                     "dependency: db: no such domain (then: desired running: "
                                     "shutoff (unknown); starting)")
    status = running.statuses.read("app")
    assert status is not None
    synced = status.condition(ConditionType.SYNCED)
    assert synced is not None and synced.reason != "Error"
    running.on_snapshot(snapshot(domain("app", ("db",)), domain("db")))
    await async_wait_until(lambda: len(driver.running) == 2, "db, then app")
    assert driver.starts == ["db", "app"]


@pytest.mark.parametrize("max_parallel_starts", [1, 2])
async def test_the_parallel_bound_and_priorities(running: Controller, driver: CountingDriver,
                                                 max_parallel_starts: int) -> None:
    priorities = {"a": 0, "b": 5, "c": 10, "d": -3, "e": 7, "f": 1}
    running.on_snapshot(snapshot(*(domain(n, priority=p) for n, p in priorities.items())))
    await async_wait_until(lambda: len(driver.running) == 6, "every domain to start",
                           explain=lambda: str(driver.starts))
    assert driver.most == max_parallel_starts  # four workers, yet no more starts at once
    by_priority = sorted(priorities, key=lambda n: -priorities[n])
    if max_parallel_starts == 1:  # one at a time: strictly by priority
        assert driver.starts == by_priority
    else:  # two at a time: each pair is the two highest of those left
        pairs = [set(driver.starts[i:i + 2]) for i in (0, 2, 4)]
        assert pairs == [set(by_priority[i:i + 2]) for i in (0, 2, 4)]


async def test_observe_leaves_a_killed_domain_down_then_enforce_starts_it(
        running: Controller, driver: CountingDriver) -> None:
    running.on_snapshot(snapshot(domain("vm", management=Management.OBSERVE)))
    await async_wait_until(lambda: ready(running, "vm") is not None, "vm's status")
    assert not driver.running  # never started: Observe reports only
    assert ready(running, "vm") == (
        ConditionStatus.FALSE, "Drift", "desired running, observed shutoff (unknown): Drift: "
        "state running wanted, shutoff seen; management Observe: not acting (Enforce would "
        "start: desired running: shutoff (unknown); starting)")
    running.on_snapshot(snapshot(domain("vm")))
    await async_wait_until(lambda: "vm" in driver.running, "Enforce to start it")


async def test_host_shutdown_takes_dependents_down_first(
        running: Controller, driver: CountingDriver) -> None:
    running.on_snapshot(snapshot(domain("web", ("app",)), domain("app", ("db",)), domain("db"),
                                 domain("solo")))
    await async_wait_until(lambda: len(driver.running) == 4, "every domain to start")
    record = await running.host_shutdown(StopMode.SHUTDOWN, parallel=4, timeout=10, uid=0)
    assert [d.name for d in record.domains] == ["app", "db", "solo", "web"]
    assert driver.stops.index("web") < driver.stops.index("app") < driver.stops.index("db")


async def test_a_dependency_counts_once_this_controller_observed_it(
        tmp_path: Path, driver: CountingDriver) -> None:
    """After a host boot the status documents still say what ran before: app must not start
    on db's stale Ready, only after a pass of this controller has seen db up."""
    before = controller_for(tmp_path, driver)
    before.on_snapshot(snapshot(domain("db")))
    await before.reconcile("db")
    db_ready = ready(before, "db")
    assert db_ready is not None and db_ready[0] is ConditionStatus.TRUE
    later = controller_for(tmp_path, driver)  # db's status file says Ready
    later.on_snapshot(snapshot(domain("db"), domain("app", ("db",))))
    await later.reconcile("app")
    assert "app" not in driver.running
    app_ready = ready(later, "app")
    assert app_ready is not None and "waiting for dependency: db: not observed yet" in app_ready[2]
    await later.reconcile("db")
    await later.reconcile("app")
    assert "app" in driver.running


async def test_an_edit_closing_a_cycle_keeps_the_domains_on_their_last_spec(
        tmp_path: Path, driver: CountingDriver) -> None:
    controller = controller_for(tmp_path, driver)
    a, b = domain("a"), domain("b")
    controller.on_snapshot(snapshot(a, b))
    for name in "ab":
        await controller.reconcile(name)
    cycle = {d.name: [Problem(d.source.file, 1, 1, "spec.dependsOn", "a dependsOn cycle: a, b")]
             for d in (a, b)}
    controller.on_snapshot(Snapshot(domains=MappingProxyType({}),
                                    conflicts=MappingProxyType(cycle)))
    await controller.reconcile("a")
    status = controller.statuses.read("a")
    valid = status.condition(ConditionType.MANIFEST_VALID) if status is not None else None
    assert valid is not None and valid.reason == "DependencyCycle", valid
    assert "a dependsOn cycle: a, b" in valid.message and "a" in driver.running
