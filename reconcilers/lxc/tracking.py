"""The containers an LxcDriver holds, and what becomes of each one's init.

Owned by LxcDriver, which reads it as a mapping name -> Tracked and calls `watch` for a container
it started or adopted. From then on init's exit is seen through a pidfd (identity.ExitWatch),
its fate waited for (settle.py) and classified (exits.py), and the stop reported through
DriverContext.on_event, its reason kept in `last_stops` for observe(). When init asked for a
reboot, LXC starts a new init: that one is watched in its place and the reboot reported.
`settled` waits until an exit has been reported.

It never acts on a container (start, stop, freeze, kill: the driver does those); besides
reading LXC's state and log, it only resets the lxc log after a reboot and removes the empty
cgroups a stopped container leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import structlog

from reconcilers.driver import RuntimeEvent, RuntimeRecord
from reconcilers.errors import DriverError
from reconcilers.identity import ExitWatch
from reconcilers.lxc import host, settle
from reconcilers.lxc.exits import InitFate, Intent, exit_event, init_fate, reboot_event
from reconcilers.lxc.files import ContainerFiles
from reconcilers.lxc.tools import LxcTools
from reconcilers.model import Reason

SETTLE_TIMEOUT = 10.0  # seconds to wait for LXC's monitor to record init's fate

log = structlog.get_logger(__name__)


@dataclass
class Tracked:
    """A container this driver started or adopted, with what it last did to it."""

    record: RuntimeRecord
    watch: ExitWatch
    reason: Reason  # the reason of our last transition: booted, unpaused, user (paused)
    intent: Intent = Intent.NONE
    exit_task: asyncio.Task[None] | None = field(default=None)
    warning: str = ""  # for Live.message: e.g. init cannot receive its halt signal
    check_task: asyncio.Task[None] | None = field(default=None)


class Tracker(Mapping[str, Tracked]):
    """The containers the driver started or adopted, by name; `last_stops` outlives them."""

    def __init__(self, tools: LxcTools, files: ContainerFiles,
                 on_report: Callable[[RuntimeEvent], None]) -> None:
        self._tools = tools
        self._files = files
        self._report = on_report
        self._tracked: dict[str, Tracked] = {}
        self.last_stops: dict[str, Reason] = {}

    def __getitem__(self, name: str) -> Tracked:
        return self._tracked[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tracked)

    def __len__(self) -> int:
        return len(self._tracked)

    def watch(self, record: RuntimeRecord, reason: Reason) -> Tracked:
        previous = self._tracked.get(record.name)
        if previous is not None:
            previous.watch.cancel()
        watch = ExitWatch(record.pid, lambda: self._init_exited(record))
        tracked = Tracked(record=record, watch=watch, reason=reason)
        self._tracked[record.name] = tracked
        return tracked

    async def settled(self, tracked: Tracked) -> None:
        """Wait until the exit of `tracked` has been classified and reported."""
        # the pidfd callback creates exit_task in the same step that sets `exited`
        if not await tracked.watch.wait(SETTLE_TIMEOUT) or tracked.exit_task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(tracked.exit_task), SETTLE_TIMEOUT * 2)
        except TimeoutError:
            log.warning("exit not classified in time; reporting shutoff/unknown",
                        domain=tracked.record.name)

    def close(self) -> None:
        """Stop watching every container: the containers keep running."""
        for tracked in self._tracked.values():
            tracked.watch.cancel()
            for task in (tracked.exit_task, tracked.check_task):
                if task is not None:
                    task.cancel()
        self._tracked.clear()

    def _init_exited(self, record: RuntimeRecord) -> None:
        tracked = self._tracked.get(record.name)
        if tracked is not None and tracked.record is record:
            tracked.exit_task = asyncio.get_running_loop().create_task(
                self._classify_exit(tracked))

    async def _classify_exit(self, tracked: Tracked) -> None:
        name = tracked.record.name
        try:
            fate = await settle.await_fate(self._tools, self._files, name, SETTLE_TIMEOUT)
        except (TimeoutError, DriverError):
            fate = init_fate(self._files.read_lxc_log(name))
        if fate.fate is InitFate.REBOOTED and await self._follow_reboot(tracked):
            return
        event = exit_event(name, tracked.intent, fate)
        if self._tracked.get(name) is tracked:
            del self._tracked[name]
        await asyncio.to_thread(host.remove_empty_cgroups, name)
        self.last_stops[name] = event.reason
        log.info("container stopped", domain=name, reason=event.reason.value,
                 cause=event.cause.value, detail=event.message)
        self._report(event)

    async def _follow_reboot(self, tracked: Tracked) -> bool:
        """LXC restarts a container whose init asked for a reboot: watch the new init."""
        name = tracked.record.name
        found = await settle.rebooted_init(self._tools, name, tracked.record.pid, SETTLE_TIMEOUT)
        if found is None:
            return False
        pid, starttime = found
        self._files.reset_lxc_log(name)  # the next exit must not read this reboot's line
        record = dataclasses.replace(tracked.record, pid=pid, starttime=starttime)
        self.watch(record, Reason.BOOTED)
        log.info("container rebooted by its init; watching the new init", domain=name, pid=pid)
        self._report(reboot_event(name))
        return True
