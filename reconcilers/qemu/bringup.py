"""What must hold before a qemu domain's `cont`: its process in its cgroup, its QMP connected.

Used by QemuDriver: a start hands `spawned` to process.launch_domain, so that both begin while
qemu initialises instead of after it (each waits on something other than qemu's start-up:
the cgroup move on an RCU grace period, 5-15 ms here (cgroups.py); the QMP greeting on qemu
serving the socket that process.py bound before the spawn, the negotiation on its main loop).
Then `ready(pid)` makes sure of both whatever the early work achieved: the daemon in the cgroup
of every controller (moved now if it was forked before the move landed), QMP connected
(connected now if the early connect failed: a slow qemu, or a relaunch for a VNC port). A
recovered start, found running, gets only `ready`. `abandon` undoes the early work of a launch
that failed, and removes the cgroup.

It never moves a process other than the one the launch just spawned, or the domain's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from pathlib import Path

from reconcilers.qemu.cgroups import CgroupError, DomainCgroup
from reconcilers.qemu.monitor import Monitor, MonitorError


class Bringup:
    """One start's cgroup placement and QMP connection."""

    def __init__(self, cgroup: DomainCgroup, monitor: Monitor, qmp: Path) -> None:
        self.cgroup, self._monitor, self._qmp = cgroup, monitor, qmp
        self._moves: list[asyncio.Future[None]] = []
        self._connecting: asyncio.Task[None] | None = None

    def spawned(self, launcher: int) -> None:
        """process.Spawned: move the launching process (so that the daemon it forks is born in
        the cgroup) and, on the first spawn, connect QMP."""
        self._moves.append(_in_thread(functools.partial(_move, self.cgroup, launcher)))
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._monitor.connect(self._qmp))

    async def ready(self, pid: int) -> None:
        """Daemon `pid` in its cgroup and QMP connected; CgroupError or MonitorError if not."""
        await asyncio.gather(*self._moves)
        if not self.cgroup.holds(pid):
            await asyncio.to_thread(self.cgroup.attach, pid)
        if not await self._connected():
            await self._monitor.connect(self._qmp)

    async def _connected(self) -> bool:
        if self._connecting is None:
            return False
        try:
            await self._connecting
        except MonitorError:  # the monitor closed itself: connect() may be tried again
            return False
        return True

    async def abandon(self) -> None:
        """The launch failed: stop connecting, close QMP, remove the cgroup once the moves
        have ended (a launch cut short, whose qemu may still run, leaves it in place)."""
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, MonitorError):
                await self._connecting
        await self._monitor.close()
        await asyncio.gather(*self._moves)
        await asyncio.to_thread(self.cgroup.remove)


def _move(cgroup: DomainCgroup, pid: int) -> None:
    """A failure (the process exited already) is left to `ready`'s check."""
    with contextlib.suppress(CgroupError):
        cgroup.attach(pid)


def _in_thread(call: Callable[[], None]) -> asyncio.Future[None]:
    """Run `call` in a thread of its own, started now: not queued behind the default executor's
    work, since the move must land while qemu initialises, and while the pid is the launching
    process's (it lives until qemu is ready; its reuse would need the pid counter to wrap)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not done.done():  # cancelled: nobody waits
            done.set_result(None)

    def run() -> None:
        try:
            call()
        finally:
            loop.call_soon_threadsafe(finish)

    threading.Thread(target=run, name="qemu-cgroup-move", daemon=True).start()
    return done
