"""The qemu domains a QemuDriver holds, and what happens when one acts on its own.

Owned by QemuDriver, which reads it as a mapping name -> Running and calls `track` for a domain
it started or adopted (its exit is watched from that moment) and `monitor` for the QMP client
whose events arrive here. A QMP event is classified by events.py and reported through
DriverContext.on_event; a destroy- or restart-type lifecycle action is carried out here (quit,
reset); the pidfd exit is classified and reported, what the process leaves is released, and its
reason kept in `last_stops` for observe(). `end` is the SIGTERM-then-SIGKILL that a destroy and
an ignored quit share.

It never starts, adopts or proves a process (the driver does), and signals only a tracked one:
the driver tracks a process only once it has launched it or proven its identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog

from reconcilers.driver import RuntimeEvent, RuntimeRecord
from reconcilers.errors import DriverError
from reconcilers.identity import ExitWatch
from reconcilers.model import Lifecycle, Reason
from reconcilers.qemu import process
from reconcilers.qemu.cgroups import DomainCgroup
from reconcilers.qemu.events import FollowUp, RunState, on_event, on_exit
from reconcilers.qemu.layout import DomainFiles, QemuSettings
from reconcilers.qemu.monitor import Monitor, MonitorError
from reconcilers.qemu.runtime import Running

SETTLE_TIMEOUT = 10.0  # seconds SIGKILL may take to end the process

log = structlog.get_logger(__name__)


class Tracker(Mapping[str, Running]):
    """The domains the driver started or adopted, by name; `last_stops` outlives them."""

    def __init__(self, settings: QemuSettings, on_report: Callable[[RuntimeEvent], None]
                 ) -> None:
        self._settings = settings
        self._report = on_report
        self._tracked: dict[str, Running] = {}
        self.last_stops: dict[str, Reason] = {}

    def __getitem__(self, name: str) -> Running:
        return self._tracked[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tracked)

    def __len__(self) -> int:
        return len(self._tracked)

    def monitor(self, name: str) -> Monitor:
        return Monitor(name, lambda e, d: self.on_qmp(name, e, d), self._settings.monitor_timeout)

    def track(self, record: RuntimeRecord, lifecycle: Lifecycle, monitor: Monitor,
              run: RunState, files: DomainFiles, cgroup: DomainCgroup | None = None
              ) -> Running:
        """Hold a started or adopted domain, its exit watched from this moment on; `cgroup`
        when the start made it, else the recorded one."""
        name = record.name
        if cgroup is None:
            cgroup = DomainCgroup(name, record.extra.get("cgroup_parent",
                                                         self._settings.cgroup_parent))
        tracked = Running(record=record, lifecycle=lifecycle, files=files,
                          monitor=monitor, run=run, note=record.extra.get("accel", ""),
                          cgroup=cgroup, watch=ExitWatch(record.pid, lambda: self._exited(record)))
        self._tracked[name] = tracked
        return tracked

    async def end(self, tracked: Running, operation: str) -> None:
        """SIGTERM the (proven) process, SIGKILL after the grace period, wait for the report."""
        name = tracked.record.name
        for sig, wait in ((signal.SIGTERM, self._settings.kill_grace),
                          (signal.SIGKILL, SETTLE_TIMEOUT)):
            if tracked.gone:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(tracked.record.pid, sig)  # pid proven ours: the pidfd has not fired
            if await tracked.watch.wait(wait):
                break
        else:
            raise DriverError(name, operation, f"pid {tracked.record.pid} survived SIGKILL")
        await tracked.settled()

    async def close(self) -> None:
        """Let go of every domain: the processes keep running."""
        for tracked in self._tracked.values():
            await tracked.let_go()
        self._tracked.clear()

    # --- events and exits -------------------------------------------------------------------

    def on_qmp(self, name: str, event: str, data: Mapping[str, Any]) -> None:
        tracked = self._tracked.get(name)
        if tracked is None:
            return
        if event == "DEVICE_DELETED" and "device" in data:
            tracked.device_deleted(str(data["device"]))
        reaction = on_event(name, event, data, tracked.run, tracked.lifecycle)
        log.debug("qmp event", domain=name, qmp_event=event, data=dict(data),
                  state=tracked.run.state.value, follow_up=reaction.follow_up.value)
        if reaction.event is not None:
            self._report(reaction.event)
        if reaction.follow_up is FollowUp.QUIT:
            tracked.spawn(self.quit(tracked))
        elif reaction.follow_up is FollowUp.RESET:
            tracked.spawn(self._reset(tracked))

    async def quit(self, tracked: Running) -> None:
        """QMP quit, then signals if qemu does not go: a destroy-type lifecycle action, or the
        end of a managed save."""
        await tracked.qmp.quit()
        if not await tracked.watch.wait(self._settings.kill_grace):
            log.warning("qemu ignored quit; killing it", domain=tracked.record.name)
            await self.end(tracked, "quit")

    async def _reset(self, tracked: Running) -> None:
        """A restart-type lifecycle action, in the same process (libvirt's fake reboot)."""
        try:
            await tracked.qmp.system_reset()
            await tracked.qmp.cont()
        except MonitorError as exc:
            tracked.run.resetting = False  # observe() reports what qemu says again
            log.warning("in-place restart failed", domain=tracked.record.name, error=exc.message)

    def _exited(self, record: RuntimeRecord) -> None:
        tracked = self._tracked.get(record.name)
        if tracked is not None and tracked.record is record:
            tracked.exit_task = asyncio.get_running_loop().create_task(self._finish(tracked))

    async def _release(self, tracked: Running) -> None:
        if self._tracked.get(tracked.record.name) is tracked:
            del self._tracked[tracked.record.name]
        await tracked.release()

    async def _finish(self, tracked: Running) -> None:
        name = tracked.record.name
        last_words = process.qemu_error(tracked.files.stderr)  # read before release removes it
        await self._release(tracked)
        event = on_exit(name, tracked.run, last_words)
        self.last_stops[name] = event.reason
        process.log_line(tracked.files, f"stopped: {event.reason.value}: {event.message}")
        log.info("domain stopped", domain=name, reason=event.reason.value,
                 cause=event.cause.value, detail=event.message)
        self._report(event)
