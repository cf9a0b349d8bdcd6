"""`domctl run`: the controller process — wiring, the single-instance lock, signals, shutdown.

Order at start (DESIGN §7, libvirt's reconnect): take the flock on the state dir (one
controller per state dir), open the stores, build the drivers, re-attach every recorded domain
(no domain is started, stopped or restarted by this), then start watching the manifests (the
first full scan queues every name), then the workers and the API. Only then is the daemon
ready (sd_notify READY=1).

SIGTERM or SIGINT stop the controller and leave every domain running: the queue stops taking
work, passes in progress get `stop_timeout` seconds to finish, the drivers drop their
connections (qemu and LXC keep running in their own sessions), the lock is released. A second
signal during that wait exits at once.

Public surface:
    DaemonSettings(paths, controller, resync, debounce, hook_timeout, qemu)
    Daemon(settings).run() -> None (async; returns when stopped)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field

import structlog

from controller.api import ApiServer
from controller.backend import ControllerBackend
from controller.config import Paths
from controller.controller import Controller, ControllerSettings
from controller.events import AuditLog, EventBus
from controller.fsutil import InstanceLock
from controller.hooks import HookRunner, HookSettings
from controller.registry import Registry
from controller.source import ManifestSource, SourceSettings
from controller.status import StatusStore
from reconcilers.driver import Driver, DriverContext, RuntimeEvent
from reconcilers.lxc import LxcDriver
from reconcilers.model import DriverName
from reconcilers.qemu import QemuDriver, QemuSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DaemonSettings:
    paths: Paths
    controller: ControllerSettings = ControllerSettings()
    resync: float = 30.0
    debounce: float = 0.3
    hook_timeout: float = 30.0
    qemu: QemuSettings = field(default_factory=QemuSettings)


class Daemon:
    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        paths = self.settings.paths
        paths.ensure()
        lock = InstanceLock.acquire(paths.state_dir / "domctl.lock")
        try:
            await self._run_locked(paths)
        finally:
            lock.release()
            log.info("controller stopped; domains left running")

    async def _run_locked(self, paths: Paths) -> None:
        events, audit = EventBus(paths.state_dir), AuditLog(paths.state_dir)
        controller: Controller | None = None

        def on_event(event: RuntimeEvent) -> None:
            if controller is not None:
                controller.on_runtime_event(event)

        drivers = self._drivers(DriverContext(runtime_dir=paths.runtime_dir,
                                              state_dir=paths.state_dir,
                                              log_dir=paths.log_dir, on_event=on_event))
        controller = Controller(
            drivers=drivers, registry=Registry(paths.state_dir),
            statuses=StatusStore(paths.state_dir), events=events, audit=audit,
            hooks=HookRunner(HookSettings(paths.hooks_dir, self.settings.hook_timeout)),
            settings=self.settings.controller)
        self.controller = controller
        source = ManifestSource(paths.manifests, controller.on_snapshot,
                                SourceSettings(debounce=self.settings.debounce,
                                               resync=self.settings.resync))
        with self._signals():
            try:
                await self._probe(drivers)
                await controller.reattach_all()
                await source.start()
                workers = asyncio.create_task(controller.workers())
                api = ApiServer(ControllerBackend(controller, paths),
                                paths.runtime_dir / "domctl.sock",
                                paths.runtime_dir / "domctl-ro.sock")
                await api.start()
                log.info("controller running", manifests=str(paths.manifests),
                         state_dir=str(paths.state_dir), workers=self.settings.controller.workers,
                         socket=str(paths.runtime_dir / "domctl.sock"))
                await self._stop.wait()
                log.info("stopping controller; domains keep running")
                await api.close()
                await source.stop()
                await controller.stop()
                await self._drain(workers)
            finally:
                for driver in drivers.values():
                    await driver.close()
                events.close()
                audit.close()

    def _drivers(self, context: DriverContext) -> dict[DriverName, Driver]:
        return {DriverName.QEMU: QemuDriver(context, self.settings.qemu),
                DriverName.LXC: LxcDriver(context)}

    async def _probe(self, drivers: dict[DriverName, Driver]) -> None:
        for name, driver in drivers.items():
            caps = await driver.capabilities()
            if caps.available:
                log.info("driver ready", driver=name.value, version=caps.version,
                         note=caps.message)
            else:
                log.warning("driver unavailable; its domains will not start",
                            driver=name.value, why=caps.message)

    async def _drain(self, workers: asyncio.Task[None]) -> None:
        """Give passes in progress time to finish; then cancel them."""
        try:
            await asyncio.wait_for(asyncio.shield(workers),
                                   self.settings.controller.stop_timeout)
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
