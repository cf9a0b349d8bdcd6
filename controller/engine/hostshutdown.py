"""`domctl host-shutdown`: every running domain saved or shut down, in parallel, and held down.

libvirt-guests' ON_SHUTDOWN=suspend|shutdown for domctl. The API backend calls
`HostShutdowns.run(mode, parallel, timeout, uid)` (packaging/systemd/domctl-guests.service does,
at host shutdown, before the controller stops); the engine loop asks `holds` for each pass's
History and calls `returning()` once at start-up.

What one run does:
- writes the record (controller/state/hostshutdown.py) of every domain that runs and the mode
  it is taken down by, before it touches any;
- takes them down `parallel` at a time, dependents first (spec.dependsOn, in waves: a domain
  waits until every running domain that depends on it is down). Each one is held first
  (History.host_shutdown: decide() keeps it down, whatever its manifest or an API request
  say, until the controller restarts; its stop is recorded as a host shutdown's,
  LastStop.host). Mode save: a managed save at once
  (the reconciler's save_now, as `domctl save`); a save that fails falls back to a graceful
  shutdown (its result says why), and a domain that cannot be saved as it is (paused by an
  error, crashed) is brought down as a desired shutoff would be. Mode shutdown, and those: the
  hold makes the domain's next pass shut it down (resuming a paused guest first, destroying a
  crashed one), in the background like any graceful shutdown, and `run` waits for its status
  to show it off;
- `timeout` bounds the waits for graceful shutdowns (libvirt-guests' SHUTDOWN_TIMEOUT): what is
  still up then is destroyed. Saves are never cut short: a half-written image is worth nothing;
- writes each domain's result into the record and returns it.

The next controller (a fresh process: the holds are in memory only) finds the record, logs and
audits it and removes it; the domains' records say they were stopped by a host shutdown, so
decide() starts them again, restoring the saved ones with their memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from controller.engine.ledger import Ledger
from controller.engine.workqueue import WorkQueue
from controller.state.events import AuditLog
from controller.state.hostshutdown import HeldDomain, HostShutdownBook, HostShutdownRecord
from controller.state.status import StatusStore
from reconcilers.domain import DomainReconciler
from reconcilers.errors import DomctlError
from reconcilers.history import HostShutdown
from reconcilers.model import Cause, DriverName, State, StopMode

log = structlog.get_logger(__name__)


@dataclass
class HostShutdowns:
    book: HostShutdownBook
    ledger: Ledger
    reconciler: DomainReconciler
    statuses: StatusStore
    queue: WorkQueue
    audit: AuditLog
    wall: Callable[[], float]
    holds: dict[str, HostShutdown] = field(default_factory=dict)
    """The domains a host shutdown of this controller holds down (decide's History)."""

    def returning(self) -> HostShutdownRecord | None:
        """At start-up: the last host shutdown's record, logged, audited and removed (its
        holds ended with the controller that made them)."""
        record = self.book.read()
        if record is None:
            return None
        summary = ", ".join(f"{d.name} ({d.result})" for d in record.domains) or "none"
        log.info("back from a host shutdown; its domains follow their manifests again",
                 mode=record.mode.value, domains=summary)
        self.audit.record("-", "host-return", Cause.CONTROLLER, {"uid": record.uid},
                          f"back from host-shutdown --mode {record.mode.value}: {summary}")
        self.book.remove()
        return record

    async def run(self, mode: StopMode, parallel: int, timeout: float,
                  uid: int) -> HostShutdownRecord:
        running = self._running()
        hold = HostShutdown(mode, uid, self.wall())
        earlier = await asyncio.to_thread(self.book.read)
        kept = tuple(d for d in earlier.domains if d.name not in running) if earlier else ()
        record = HostShutdownRecord(mode, uid, earlier.at if earlier else hold.at,
                                    (*kept, *(HeldDomain(name, mode) for name in running)))
        await asyncio.to_thread(self.book.write, record)  # before any domain is touched
        self.audit.record("-", "host-shutdown", Cause.API, {"uid": uid},
                          f"--mode {mode.value} --parallel {parallel} --timeout {timeout:g}: "
                          f"{', '.join(running) or 'no domain runs'}")
        log.warning("host shutdown", mode=mode.value, domains=sorted(running), uid=uid)
        deadline = asyncio.get_running_loop().time() + timeout
        bound = asyncio.Semaphore(parallel)

        async def one(name: str, driver: DriverName) -> HeldDomain:
            async with bound:
                return await self._take_down(name, driver, hold, deadline)

        results: list[HeldDomain] = []
        for wave in self._waves(running):
            results += await asyncio.gather(*(one(name, running[name]) for name in wave))
        record = dataclasses.replace(
            record, domains=(*kept, *sorted(results, key=lambda d: d.name)))
        await asyncio.to_thread(self.book.write, record)
        return record

    def _running(self) -> Mapping[str, DriverName]:
        """Every domain with a process, and the driver that runs it."""
        return {name: record.runtime.driver for name in self.ledger.registry.names()
                if (record := self.ledger.get(name)) is not None and record.runtime is not None}

    def _waves(self, running: Mapping[str, DriverName]) -> list[list[str]]:
        """Dependents first: each wave holds the domains no running domain left depends on (the
        reverse of the start order). A cycle, which only an old record could hold (manifests
        refuse them), ends in one last wave."""
        depends = {name: set(self._depends_on(name)) & running.keys() for name in running}
        left, waves = set(running), []
        while left:
            wave = sorted(n for n in left if not any(n in depends[m] for m in left - {n}))
            waves.append(wave or sorted(left))
            left -= set(waves[-1])
        return waves

    def _depends_on(self, name: str) -> tuple[str, ...]:
        record = self.ledger.get(name)
        return record.desired.spec.depends_on if record is not None and record.desired else ()

    async def _take_down(self, name: str, driver: DriverName, hold: HostShutdown,
                         deadline: float) -> HeldDomain:
        self.holds[name] = hold
        detail, owner = {"uid": hold.uid}, f"host-shutdown:uid={hold.uid}"
        fallback = ""
        if hold.mode is StopMode.SAVE:
            try:
                image = await self.reconciler.save_now(name, driver, Cause.API, detail, owner)
            except DomctlError as err:
                log.error("save failed at host shutdown; shutting down instead", domain=name,
                          error=str(err))
                self.holds[name] = dataclasses.replace(hold, mode=StopMode.SHUTDOWN)
                fallback = f"save failed ({err}); "
            else:
                if image is not None:
                    return HeldDomain(name, StopMode.SAVE, "saved", ok=True)
        self.queue.add(name)  # its pass brings it down, as the hold says
        if not await self._down(name, deadline):
            log.warning("not down when host-shutdown's timeout passed; destroying", domain=name)
            await self.reconciler.destroy_now(name, driver, Cause.API, detail, owner)
            return HeldDomain(name, self.holds[name].mode, f"{fallback}destroyed at the timeout")
        status = self.statuses.read(name)
        seen = f"{status.state.value} ({status.reason.value})" if status is not None else "off"
        return HeldDomain(name, self.holds[name].mode, f"{fallback}{seen}", ok=not fallback)

    async def _down(self, name: str, deadline: float) -> bool:
        """Until `name`'s status shows it off (woken by every write of it, never polled)."""
        with contextlib.suppress(TimeoutError):
            async with (asyncio.timeout_at(deadline),
                        contextlib.aclosing(self.statuses.changes(name)) as changes):
                async for status in changes:
                    if status is None or status.state is State.SHUTOFF:
                        return True
        return False
