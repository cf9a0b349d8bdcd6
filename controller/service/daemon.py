"""The controller process behind `domctl run`: wiring, the single-instance lock, signals, shutdown.

Order at start (DESIGN §7, libvirt's reconnect): take the flock on the state dir (one
controller per state dir), open the stores, build the drivers, bind the `--metrics` listener
(a busy port ends `domctl run` before anything is touched), re-attach every recorded domain
(no domain is started, stopped or restarted by this), queue every recorded network (its pass
re-checks it and leaves an intact one alone), then start watching the manifests (the first
full scan queues every name), then the workers (the domains' and the networks') and the API.
The daemon is ready (sd_notify READY=1) once the first passes of all of them are over.
With `--etcd` (settings.fleet), the manifests come from etcd through the fleet's host view in
place of the directory (controller/fleet/host.py), and once it gave its first snapshot the host
joins the fleet: registered under its lease with the drivers that probed available, fencing
and the status documents' publisher started; the API's `get` then answers with the fleet's
domains (controller/fleet/fleetview.py).

SIGTERM or SIGINT stop the controller and leave every domain running: the queue stops taking
work, passes in progress get `stop_timeout` seconds to finish, the drivers drop their
connections (qemu and LXC keep running in their own sessions), the lock is released. A second
signal during that wait exits at once.

The settings tree (controller/settings.py) comes in whole, built by `domctl run`
(service/command.py); each part gets its own branch of it.

Public surface:
    Daemon(settings: Settings).run() -> None (async; returns when stopped)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

import structlog

from controller.api.backend import ControllerBackend
from controller.api.server import ApiServer
from controller.engine.controller import Controller
from controller.engine.hooks import HookRunner
from controller.engine.leasewatch import LeaseWatch
from controller.engine.networks import NetworkController
from controller.fleet.host import FleetHost
from controller.manifests.source import ManifestSource, Snapshot
from controller.paths import Paths
from controller.service import sdnotify, statusline
from controller.service.metrics import Metrics, MetricsServer
from controller.settings import Settings
from controller.state.events import AuditLog, EventBus
from controller.state.fsutil import InstanceLock
from controller.state.networks import NetworkStore
from controller.state.registry import Registry
from controller.state.status import StatusStore
from reconcilers.driver import Driver, DriverContext, RuntimeEvent
from reconcilers.history import ApiAction
from reconcilers.lxc import LxcDriver
from reconcilers.model import DesiredState, DriverName, State
from reconcilers.net.network import NetworkHost
from reconcilers.qemu import QemuDriver

log = structlog.get_logger(__name__)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # helpers that end with the daemon

    async def run(self) -> None:
        paths = self.settings.paths
        paths.ensure()
        # one controller per state dir, and per runtime dir (its sockets, QMP sockets, pidfiles)
        lock = InstanceLock.acquire(paths.state_dir / "domctl.lock")
        try:
            runtime_lock = InstanceLock.acquire(paths.runtime_dir / "domctl.lock")
        except BaseException:
            lock.release()
            raise
        try:
            await self._run_locked(paths)
        finally:
            runtime_lock.release()
            lock.release()
            log.info("controller stopped; domains left running")

    async def _run_locked(self, paths: Paths) -> None:
        events = EventBus(paths.state_dir, self.settings.events)
        audit = AuditLog(paths.state_dir, self.settings.events)
        controller: Controller | None = None

        def on_event(event: RuntimeEvent) -> None:
            if controller is not None:
                controller.on_runtime_event(event)

        drivers = self._drivers(DriverContext(runtime_dir=paths.runtime_dir,
                                              state_dir=paths.state_dir,
                                              log_dir=paths.log_dir, on_event=on_event))
        networks = NetworkController(NetworkHost(paths.state_dir / "networks" / "dnsmasq"),
                                     NetworkStore(paths.state_dir), events,
                                     self.settings.networks)
        controller = Controller(
            drivers=drivers, registry=Registry(paths.state_dir),
            statuses=StatusStore(paths.state_dir), events=events, audit=audit,
            hooks=HookRunner(paths.hooks_dir, self.settings.hooks), settings=self.settings.engine,
            networks=networks)

        def on_snapshot(snapshot: Snapshot) -> None:
            networks.on_snapshot(snapshot)  # first: a domain's pass resolves against networks
            controller.on_snapshot(snapshot)

        fleet = self._fleet(controller, on_snapshot, paths)
        source = fleet if fleet is not None else ManifestSource(paths.manifests, on_snapshot,
                                                                self.settings.source)
        with self._signals():
            metrics: MetricsServer | None = None
            try:
                metrics = self._metrics(controller, events)  # first: a busy port stops here
                available = await self._probe(drivers)
                await controller.reattach_all()
                networks.start()
                leases = LeaseWatch(networks.host.directory, networks.leases_changed)
                await source.start()
                if fleet is not None:
                    await fleet.join(available)
                workers = asyncio.gather(controller.workers(), networks.worker())
                api = ApiServer(ControllerBackend(controller, paths,
                                                  self.settings.api.act_timeout, source.rescan,
                                                  fleet.fleetview.documents if fleet else None),
                                paths.runtime_dir / "domctl.sock",
                                paths.runtime_dir / "domctl-ro.sock", self.settings.api)
                await api.start()
                log.info("controller running", manifests=str(paths.manifests)
                         if fleet is None else "etcd",
                         state_dir=str(paths.state_dir), workers=self.settings.engine.workers,
                         socket=str(paths.runtime_dir / "domctl.sock"))
                self._tasks |= {asyncio.create_task(self._notify_ready(controller, networks)),
                                asyncio.create_task(_watchdog())}
                await self._stop.wait()
                log.info("stopping controller; domains keep running")
                sdnotify.stopping()
                for task in self._tasks:
                    task.cancel()
                await api.close()
                await source.stop()
                leases.close()
                networks.stop()
                await controller.stop()
                await self._drain(workers)
            finally:
                if metrics is not None:
                    metrics.close()
                for driver in drivers.values():
                    await driver.close()
                events.close()
                audit.close()

    def _fleet(self, controller: Controller, on_snapshot: Callable[[Snapshot], None],
               paths: Paths) -> FleetHost | None:
        """Fleet mode's host side (`--etcd`), the source of the engine's snapshots in place of
        the manifests directory; None without `--etcd`."""
        if self.settings.fleet is None:
            return None
        return FleetHost(self.settings.fleet, on_snapshot, _FleetEngine(controller),
                         controller.statuses, resync=self.settings.source.resync,
                         removal_grace=self.settings.engine.prune.grace,
                         lease_file=paths.state_dir / "fleet-lease")

    def _metrics(self, controller: Controller, events: EventBus) -> MetricsServer | None:
        """The Prometheus listener of `--metrics`, fed by the controller (domains, queue,
        statistics) and the event bus; MetricsAddressError (a ValueError: `domctl run`
        prints its one line) when the address cannot be served."""
        address = self.settings.metrics.address
        if address is None:
            return None
        metrics = Metrics(controller.ledger.samples, lambda: len(controller.queue),
                          loop=asyncio.get_running_loop(), settings=self.settings.metrics,
                          manifests=controller.invalid.problem_counts, stats=controller.stats)
        controller.on_pass = lambda _name, seconds, result: metrics.observe_reconcile(seconds,
                                                                                       result)
        subscription = events.subscribe()

        async def count_events() -> None:
            async for record in subscription:
                metrics.event(record)

        self._tasks.add(asyncio.create_task(count_events()))
        server = metrics.serve(address)
        log.info("metrics listening", url=server.url)
        return server

    async def _notify_ready(self, controller: Controller, networks: NetworkController) -> None:
        """READY=1 once the first full pass is over: every network and domain found was
        reconciled once; then STATUS= kept current until the daemon stops."""
        await asyncio.gather(networks.queue.wait_idle(), controller.queue.wait_idle())
        sdnotify.ready("reconciling")
        log.info("first full pass done; ready")
        await statusline.keep_current(controller.statuses)  # STATUS=: "12 domains, 11 ready"

    def _drivers(self, context: DriverContext) -> dict[DriverName, Driver]:
        return {DriverName.QEMU: QemuDriver(context, self.settings.qemu),
                DriverName.LXC: LxcDriver(context)}

    async def _probe(self, drivers: dict[DriverName, Driver]) -> list[str]:
        """Each driver's capabilities logged; the names of those available."""
        available = []
        for name, driver in drivers.items():
            caps = await driver.capabilities()
            if caps.available:
                log.info("driver ready", driver=name.value, version=caps.version,
                         note=caps.message)
                available.append(name.value)
            else:
                log.warning("driver unavailable; its domains will not start",
                            driver=name.value, why=caps.message)
        return available

    async def _drain(self, workers: asyncio.Future[Any]) -> None:
        """Give passes in progress time to finish; then cancel them."""
        try:
            await asyncio.wait_for(asyncio.shield(workers),
                                   self.settings.engine.stop_timeout)
        except TimeoutError:
            log.warning("passes still running at shutdown; cancelling them")
            workers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await workers

    @contextlib.contextmanager
    def _signals(self):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("second signal; exiting now", signal=sig.name)
            raise SystemExit(1)
        log.info("signal received", signal=sig.name)
        self._stop.set()


class _FleetEngine:
    """What fleet mode asks of the engine (controller/fleet/host.py's Engine)."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def known(self) -> list[str]:
        return self._controller.registry.names()

    def failover_domains(self) -> list[str]:
        store = self._controller.store
        return [name for name in store.names() if (desired := store.desired(name)) is not None
                and desired.spec.placement.failover]

    def running(self, name: str) -> bool:
        record = self._controller.ledger.get(name)
        return record is not None and record.runtime is not None

    async def destroy(self, name: str) -> None:
        await self._controller.destroy(name, os.getuid())

    def unfenced(self, name: str) -> None:
        """The fence's destroy request ends (it would hold the domain off until its manifest
        changes, and a fence lifted without a change of the view would leave it off)."""
        record = self._controller.ledger.get(name)
        if record is not None and record.override is not None \
                and record.override.action is ApiAction.DESTROY:
            self._controller.ledger.set_request(name, None)
            self._controller.queue.add(name)

    def settled_off(self, name: str) -> bool:
        desired = self._controller.desired_resolved(name)
        status = self._controller.statuses.read(name)
        return (desired is not None and desired.spec.state is DesiredState.SHUTOFF
                and status is not None and status.state is State.SHUTOFF
                and status.generation == desired.generation)


async def _watchdog() -> None:
    """WATCHDOG=1 at half the interval systemd asked for, from the loop (a wedged loop is seen)."""
    interval = sdnotify.watchdog_interval()
    if interval is None:
        return
    while True:
        sdnotify.ping()
        await asyncio.sleep(interval / 2)
