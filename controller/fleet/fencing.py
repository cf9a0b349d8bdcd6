"""Self-fencing: a host that cannot renew its lease destroys its failover domains before etcd can
expire the lease, so a failed-over domain never runs on two hosts (issue 18 point 4).

The scheduler moves a `failover: true` domain off a host once that host's lease has expired.
The host cannot know whether etcd still counts its lease, only when it last heard etcd confirm
a renewal: Registration's `renewed_at`, the monotonic time the last confirmed renewal was SENT,
so `renewed_at + ttl` is never later than etcd's own expiry. The deadline is

    renewed_at + ttl − margin,   margin = max(2 s, ttl / 5)

(2 s at the default TTL of 10 s, so the destroy has 2 s to finish before anyone else may start
the domain; the margin also absorbs a slow event loop and the clock rates of two machines).
Before the first registration of this run, the run's start stands for `renewed_at`.

When the deadline passes without a newer confirmed renewal, `Fencing` at once puts every
domain whose desired spec says `placement.failover: true` (the engine's: also one re-attached
while etcd could not be read yet) at `state: shutoff` in the host view
(so no pass starts it again) and destroys each one that runs (the engine's destroy: the destroy
job, which cuts a graceful shutdown short; not a pass). They stay off until the host has
renewed or registered again AND read `placements/` afresh; then the destroy's hold ends (a
controller started while etcd was away has no view to change: the hold alone kept them off)
and the host view's rules apply: a
domain still placed here starts again, one placed elsewhere meanwhile (a new epoch) stays off.
Domains without failover keep running: the scheduler never moves them, so they cannot run
twice, and a partition from etcd alone does not take them down (docs/fleet.md: etcd down
everywhere fences every failover domain of the fleet, the others keep running).

`step()` is the pure decision (tests/unit/test_fleet_fencing.py, with a fake clock).

Public surface: margin(ttl), Step, step(now, renewed_at, ttl, fenced_at, tick),
    Fencing(registration, view, engine, clock).start, stop, fenced_at
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from controller.fleet import background
from controller.fleet.hostview import HostView
from controller.fleet.registration import Registration
from controller.fleet.store import EtcdError

log = structlog.get_logger(__name__)

TICK = 0.25  # seconds between checks while fenced (waiting for a renewal)


def margin(ttl: float) -> float:
    """How long before the lease can expire the host fences itself."""
    return max(2.0, ttl / 5)


@dataclass(frozen=True)
class Step:
    fence: bool = False  # the deadline passed: fence now
    lift: bool = False  # renewed since the fence: read the placements again, then lift it
    wake_in: float = TICK  # seconds until the next check
    deadline: float | None = None


def step(now: float, renewed_at: float, ttl: float, fenced_at: float | None,
         tick: float = TICK) -> Step:
    """What to do at `now`, given the last confirmed renewal's send time."""
    deadline = renewed_at + ttl - margin(ttl)
    if fenced_at is None:
        if now >= deadline:
            return Step(fence=True, wake_in=tick, deadline=deadline)
        return Step(wake_in=deadline - now, deadline=deadline)
    if renewed_at > fenced_at:
        return Step(lift=True, wake_in=tick, deadline=deadline)
    return Step(wake_in=tick, deadline=deadline)


class FencingEngine(Protocol):
    """What fencing needs of the engine (the daemon gives it; fleet never imports the engine)."""

    def failover_domains(self) -> list[str]:
        """The domains whose desired spec (the last valid one: also a domain re-attached
        while etcd could not be read) says placement.failover."""

    def running(self, name: str) -> bool: ...

    def destroy(self, name: str) -> Coroutine[Any, Any, None]: ...

    def unfenced(self, name: str) -> None:
        """The fence on `name` is lifted: the destroy's hold on it ends (the host view's
        rules decide again)."""


class Fencing:
    def __init__(self, registration: Registration, view: HostView, engine: FencingEngine, *,
                 clock: Callable[[], float] = time.monotonic, tick: float = TICK) -> None:
        self._registration = registration
        self._view = view
        self._engine = engine
        self._clock = clock
        self._tick = tick
        self._renewed = clock()  # the run's start, until a renewal is confirmed
        self.fenced_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fencing")

    async def stop(self) -> None:
        await background.cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                wake_in = await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the fence die
                log.exception("fencing check failed", host=self._view.me)
                wake_in = self._tick
            await asyncio.sleep(wake_in)

    async def check(self) -> float:
        """One step; the seconds until the next."""
        renewed = self._registration.renewed_at
        if renewed is not None:
            self._renewed = max(self._renewed, renewed)
        now = self._clock()
        decided = step(now, self._renewed, self._registration.ttl, self.fenced_at, self._tick)
        if decided.fence:
            await self._fence(now, decided.deadline)
        elif decided.lift:
            await self._lift()
        return decided.wake_in

    async def _fence(self, now: float, deadline: float | None) -> None:
        self.fenced_at = now
        names = sorted(self._engine.failover_domains())
        log.error("lease renewal overdue: fencing this host's failover domains",
                  host=self._view.me, since_renewal=round(now - self._renewed, 2),
                  ttl=self._registration.ttl, margin=margin(self._registration.ttl),
                  domains=names)
        self._view.fence(names)  # first: no pass may start them again
        destroys = []
        for name in names:
            if self._engine.running(name):
                log.warning("fencing: destroying", domain=name, host=self._view.me)
                destroys.append(self._destroy(name))
            else:
                log.info("fencing: kept off", domain=name, host=self._view.me)
        await asyncio.gather(*destroys)

    async def _destroy(self, name: str) -> None:
        try:
            await self._engine.destroy(name)
            log.warning("fencing: destroyed", domain=name, host=self._view.me)
        except Exception as err:
            log.error("fencing: destroy failed", domain=name, host=self._view.me,
                      error=str(err))

    async def _lift(self) -> None:
        log.info("lease renewed after fencing: reading placements again", host=self._view.me)
        try:
            await self._view.placements.read_all()
            await self._view.hosts.read_all()
        except EtcdError as err:
            log.warning("cannot read placements yet; the fence stays", host=self._view.me,
                        error=str(err))
            return
        fenced = sorted(self._view.fenced)
        log.warning("fence lifted: the domains still placed here start again",
                    host=self._view.me, domains=fenced)
        self.fenced_at = None
        self._view.unfence()
        for name in fenced:
            self._engine.unfenced(name)
