"""Self-fencing's deadline (controller/fleet/fencing.py) with a fake clock: fenced exactly when
`renewed_at + ttl − margin` passes without a newer confirmed renewal, failover domains only,
destroyed only when they run, and lifted only after a renewal sent after the fence AND a fresh
read of the placements."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import cast

import pytest

from controller.fleet.fencing import Fencing, margin, step
from controller.fleet.hostview import HostView
from controller.fleet.registration import Registration
from controller.fleet.store import EtcdUnavailable
from reconcilers.model import Domain, Placement

from .domains import domain


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_margin() -> None:
    assert margin(10) == 2.0
    assert margin(30) == 6.0
    assert margin(3) == 2.0


def test_the_deadline_passes_without_a_renewal() -> None:
    # renewed at 100, TTL 10: fenced from 108 (etcd may expire the lease from 110 on)
    before = step(107.9, 100.0, 10, None)
    assert not before.fence and before.wake_in == pytest.approx(0.1)
    assert before.deadline == 108.0
    assert step(108.0, 100.0, 10, None).fence
    assert not step(108.0, 103.4, 10, None).fence  # a renewal moved the deadline on


def test_fenced_until_a_renewal_sent_after_the_fence() -> None:
    assert not step(120.0, 100.0, 10, fenced_at=108.0).lift  # still no renewal
    assert not step(120.0, 107.0, 10, fenced_at=108.0).lift  # sent before the fence
    assert step(120.0, 118.0, 10, fenced_at=108.0).lift


class FakeRegistration:
    def __init__(self) -> None:
        self.renewed_at: float | None = None
        self.ttl = 10


class FakeMirror:
    def __init__(self) -> None:
        self.reads = 0
        self.fail = False

    async def read_all(self) -> None:
        if self.fail:
            raise EtcdUnavailable("cut off")
        self.reads += 1


class FakeView:
    me = "a"

    def __init__(self, domains: dict[str, Domain]) -> None:
        self.domains = domains
        self.roles = dict.fromkeys(domains, "run")
        self.fenced: set[str] = set()
        self.placements = FakeMirror()
        self.hosts = FakeMirror()

    def fence(self, names: Collection[str]) -> None:
        self.fenced |= set(names)

    def unfence(self) -> None:
        self.fenced.clear()


class FakeEngine:
    def __init__(self, running: set[str], failover: tuple[str, ...]) -> None:
        self.up = running
        self.failover = failover
        self.destroyed: list[str] = []
        self.unheld: list[str] = []

    def failover_domains(self) -> list[str]:
        return list(self.failover)

    def unfenced(self, name: str) -> None:
        self.unheld.append(name)

    def running(self, name: str) -> bool:
        return name in self.up

    async def destroy(self, name: str) -> None:
        self.destroyed.append(name)
        self.up.discard(name)


def failover(name: str) -> Domain:
    d = domain(name)
    return dataclasses.replace(d, spec=dataclasses.replace(d.spec,
                                                           placement=Placement(failover=True)))


async def test_fencing_destroys_the_running_failover_domains_and_lifts_after_a_reread() -> None:
    clock = Clock()
    registration = FakeRegistration()
    view = FakeView({"fo": failover("fo"), "fo-off": failover("fo-off"), "keep": domain("keep")})
    engine = FakeEngine({"fo", "keep"}, ("fo-off", "fo"))
    fencing = Fencing(cast(Registration, registration), cast(HostView, view), engine,
                      clock=clock)
    registration.renewed_at = 1000.0
    assert await fencing.check() == pytest.approx(8.0)  # the deadline is 1008
    clock.now = 1005.0
    registration.renewed_at = 1003.3  # renewed: the deadline moves to 1011.3
    await fencing.check()
    clock.now = 1011.2
    await fencing.check()
    assert engine.destroyed == [] and fencing.fenced_at is None
    clock.now = 1011.3
    await fencing.check()
    assert fencing.fenced_at == 1011.3
    assert view.fenced == {"fo", "fo-off"}  # kept off, both
    assert engine.destroyed == ["fo"]  # destroyed: only the one that ran
    assert engine.up == {"keep"}  # no failover: keeps running
    clock.now = 1015.0
    view.placements.fail = True
    registration.renewed_at = 1014.0  # registered again, but the placements cannot be read
    await fencing.check()
    assert view.fenced == {"fo", "fo-off"} and fencing.fenced_at is not None
    view.placements.fail = False
    await fencing.check()
    assert view.placements.reads == 1
    assert view.fenced == set() and fencing.fenced_at is None
    assert engine.destroyed == ["fo"] and engine.unheld == ["fo", "fo-off"]


async def test_before_the_first_registration_the_run_start_counts() -> None:
    clock = Clock()
    view = FakeView({"fo": failover("fo")})
    engine = FakeEngine({"fo"}, ("fo",))
    fencing = Fencing(cast(Registration, FakeRegistration()), cast(HostView, view), engine,
                      clock=clock)
    clock.now = 1007.9
    await fencing.check()
    assert engine.destroyed == []
    clock.now = 1008.0
    await fencing.check()
    assert engine.destroyed == ["fo"]
