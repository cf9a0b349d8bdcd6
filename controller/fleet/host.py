"""FleetHost: what `domctl run --etcd ... --host NAME` adds to the daemon, as one piece.

The daemon (controller/service/daemon.py) builds it in place of the directory's ManifestSource
and drives it in the order a host joins the fleet:

1. `start()` (after the engine re-attached its domains): the host view (hostview.py) reads the
   placements, hosts and status documents, then the published manifests, and hands the engine
   its first snapshot: the domains placed here, the ones it must release at shutoff; and the
   fleet view (fleetview.py: every domain of the fleet, for the API's `get`) follows etcd;
2. `join(drivers)`: registers `hosts/NAME` under a lease (registration.py: CPUs, memory, the
   drivers that probed available, the labels), then starts the self-fencing watch
   (fencing.py), the status documents' publisher (statuspub.py) and, unless the settings say
   `scheduler=False` (`--no-scheduler`), its candidacy in the scheduler's election
   (scheduler.py: one host of the fleet places the domains);
3. `stop()`: all of it stopped, the scheduler's leadership resigned (another host takes over
   at once), the host's lease left to expire (the domains keep running, as a stopping
   controller leaves them; the next run takes the lease over, registration.py).

What it needs of the engine is the `Engine` protocol below: fleet code never imports the
engine (the layers of pyproject.toml), the daemon hands an adapter in.

Public surface: Engine, FleetHost(settings, on_snapshot, engine, statuses, lease_file)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Iterable
from pathlib import Path
from typing import Any, Protocol

import structlog

from controller.fleet.fencing import Fencing
from controller.fleet.fleetview import FleetView
from controller.fleet.hostview import HostView
from controller.fleet.keys import Keys
from controller.fleet.registration import Registration, local_host
from controller.fleet.scheduler import Scheduler
from controller.fleet.statuspub import StatusPublisher
from controller.fleet.store import EtcdStore
from controller.manifests.source import Snapshot
from controller.settings import FleetSettings
from controller.state.status import StatusStore

log = structlog.get_logger(__name__)


class Engine(Protocol):
    def known(self) -> Collection[str]:
        """The domains this host has a record of."""

    def failover_domains(self) -> list[str]:
        """The domains whose last valid desired spec says placement.failover."""

    def running(self, name: str) -> bool:
        """Whether `name` runs here now."""

    def destroy(self, name: str) -> Coroutine[Any, Any, None]:
        """Off at once (the destroy job), held off until `unfenced`."""

    def unfenced(self, name: str) -> None:
        """The destroy's hold on `name` ends."""

    def settled_off(self, name: str) -> bool:
        """A pass over the desired spec handed over last (shutoff) observed it shut off."""


class FleetHost:
    def __init__(self, settings: FleetSettings, on_snapshot: Callable[[Snapshot], None],
                 engine: Engine, statuses: StatusStore, *, resync: float = 30.0,
                 removal_grace: float = 3.0, lease_file: Path | None = None) -> None:
        self.settings = settings
        self._resync = resync
        self._removal_grace = removal_grace
        self._engine = engine
        self._statuses = statuses
        self._lease_file = lease_file
        self.keys = Keys(settings.prefix)
        self.store = EtcdStore(settings.endpoints)
        self.view = HostView(self.store, self.keys, settings.host, on_snapshot, engine.known,
                             resync=resync)
        self.fleetview = FleetView(self.view, self.store, self.keys, resync=resync)
        self.registration: Registration | None = None
        self.fencing: Fencing | None = None
        self.publisher: StatusPublisher | None = None
        self.scheduler: Scheduler | None = None

    async def start(self) -> None:
        await self.view.start()
        self.fleetview.start()

    async def rescan(self) -> Snapshot:
        return await self.view.rescan()

    async def join(self, drivers: Iterable[str]) -> None:
        record = local_host(self.settings.host, drivers, self.settings.labels)
        self.registration = Registration(self.store, self.keys, record, ttl=self.settings.ttl,
                                         lease_file=self._lease_file)
        await self.registration.start()
        self.fencing = Fencing(self.registration, self.view, self._engine)
        self.fencing.start()
        self.publisher = StatusPublisher(self.store, self.keys, self.view, self._statuses,
                                         self._engine.settled_off)
        self.publisher.start()
        if self.settings.scheduler:
            self.scheduler = Scheduler(self.store, self.keys, record.name, ttl=self.settings.ttl,
                                       removal_grace=self._removal_grace, resync=self._resync)
            await self.scheduler.start()
        log.info("host in the fleet", host=record.name, cpus=record.cpus,
                 memory_mib=record.memory_mib, drivers=list(record.drivers),
                 labels=dict(record.labels), etcd=list(self.store.endpoints),
                 prefix=self.keys.prefix, ttl=self.settings.ttl,
                 scheduler=self.settings.scheduler)

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()  # resigns: another host leads at once
        for part in (self.publisher, self.fencing):
            if part is not None:
                await part.stop()
        if self.registration is not None:
            await self.registration.stop()  # no revoke: the lease expires by itself
        await self.fleetview.stop()
        await self.view.stop()
        await self.store.close()
