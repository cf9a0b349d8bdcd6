"""What the qemu driver holds for one running domain, and how it lets go of it.

Held by QemuDriver's Tracker (tracking.py): one Running per domain it started or adopted.
`release()` frees what a process that is gone leaves behind (QMP connection, follow-up tasks,
cgroup, runtime files, the taps of its NICs); `let_go()` drops only our side (watch, tasks,
QMP) and leaves the process running, for `close()`; `confine()` gives a domain its cgroup
(before its launch, or a recovered one as it is adopted). It never signals a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from reconcilers.driver import RuntimeRecord
from reconcilers.errors import DriverError
from reconcilers.identity import ExitWatch
from reconcilers.model import DomainSpec, Lifecycle
from reconcilers.net import tap
from reconcilers.net.command import Place
from reconcilers.net.errors import NetError
from reconcilers.qemu import process
from reconcilers.qemu.cgroups import (
    CgroupError,
    DomainCgroup,
    Unconfined,
    limits,
    tuning_fields,
)
from reconcilers.qemu.commands import QmpCommands
from reconcilers.qemu.events import RunState
from reconcilers.qemu.layout import DomainFiles
from reconcilers.qemu.monitor import Monitor, MonitorError

SETTLE_TIMEOUT = 10.0  # seconds to wait for an exit to be seen and classified

log = structlog.get_logger(__name__)


@dataclass
class Running:
    """A domain the driver started or adopted."""

    record: RuntimeRecord
    lifecycle: Lifecycle  # the live lifecycle actions (apply_live may change them)
    files: DomainFiles
    monitor: Monitor
    cgroup: DomainCgroup
    run: RunState
    note: str  # the accelerator note for Live.message
    watch: ExitWatch
    exit_task: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    unplugs: dict[str, asyncio.Future[None]] = field(default_factory=dict)  # device id → waiter
    agent_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one agent session at once
    taps: bool = True  # may own taps: a start's or hotplug's tap NICs say; unknown if adopted

    @property
    def qmp(self) -> QmpCommands:
        """The domain's QMP commands, over `monitor`."""
        return QmpCommands(self.monitor)

    @property
    def message(self) -> str:
        """Live.message: the accelerator note, and whether limits are enforced."""
        if isinstance(self.cgroup, Unconfined):
            return f"{self.note}; no cgroup (rootless): limits not enforced"
        return self.note

    def confine(self, spec: DomainSpec, cgroup_parent: str) -> None:
        """`confine()` for a domain found running (a recovered start)."""
        self.cgroup = confine(self.record.name, spec, cgroup_parent)

    @contextlib.contextmanager
    def failing_as(self, operation: str) -> Iterator[None]:
        """A failed QMP command of `operation` as the DriverError the reconciler handles."""
        try:
            yield
        except MonitorError as exc:
            raise DriverError(self.record.name, operation, exc.message) from exc

    @property
    def gone(self) -> bool:
        return self.watch.exited.is_set()

    def device_deleted(self, device: str) -> None:
        """qemu's DEVICE_DELETED: the guest released `device`; wakes its unplug."""
        waiter = self.unplugs.pop(device, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a follow-up (quit, reset) without blocking the QMP reader; kept until done."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settled(self) -> None:
        """Wait until the process's exit has been classified and reported."""
        if not await self.watch.wait(SETTLE_TIMEOUT):
            return
        if self.exit_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exit_task), SETTLE_TIMEOUT)

    async def release(self) -> None:
        """Free what the exited process leaves: QMP, follow-ups, cgroup, runtime files, taps
        (looked for only when it may have had some: the look is a command, and its exit is
        reported after this)."""
        for task in list(self.tasks):
            task.cancel()
        await self.monitor.close()
        if not await asyncio.to_thread(self.cgroup.remove):
            log.warning("cgroup still busy; left in place", domain=self.record.name)
        process.remove_stale(self.files)
        if self.taps:
            await release_taps(self.record.name)

    async def let_go(self) -> None:
        """Stop watching and close QMP; the process keeps running."""
        self.watch.cancel()
        for task in [*self.tasks, *([self.exit_task] if self.exit_task else [])]:
            task.cancel()
        await self.monitor.close()


def confine(name: str, spec: DomainSpec, cgroup_parent: str) -> DomainCgroup:
    """The domain's own cgroup, created, its limits written (qemu is moved in afterwards); as
    a user without one (libvirt's session mode), Unconfined: the domain runs, its memory and
    pids limits unenforced (CPU tuning, which needs one, is refused by validation, naming the
    field)."""
    cgroup = DomainCgroup(name, cgroup_parent)
    try:
        cgroup.create()
    except CgroupError as exc:
        if os.geteuid() == 0 or tuning_fields(spec):
            raise
        log.warning("no cgroup of its own (run as a user): limits not enforced",
                    domain=name, error=str(exc))
        return Unconfined(name, cgroup_parent)
    cgroup.write(limits(spec, cgroup.version))
    return cgroup


async def release_taps(name: str) -> None:
    """Delete the taps of a domain whose qemu is gone (found by their mark: also those of NICs
    hotplugged since the start); a failure is logged (the next start repairs or reuses them)."""
    try:
        gone = await tap.sweep(Place(), name)
    except NetError as exc:
        log.warning("taps of a stopped domain not removed", domain=name, error=str(exc))
        return
    if gone:
        log.info("taps removed", domain=name, taps=gone)
