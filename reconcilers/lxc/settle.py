"""The moments right after a container's init exits: waiting for LXC to record what happened.

Used by LxcDriver's Tracker (tracking.py) once the pidfd on init has fired (the exit itself is
never polled for). LXC's monitor reaps init, logs its fate, then either tears the container
down (STOPPED) or, when init asked for a reboot, starts a new init. These helpers wait, briefly
and with a deadline, for that record; they never act on the container.
"""

from __future__ import annotations

import asyncio

from reconcilers.errors import DriverError
from reconcilers.identity import proc_starttime
from reconcilers.lxc.exits import Fate, InitFate, init_fate
from reconcilers.lxc.files import ContainerFiles
from reconcilers.lxc.tools import LxcState, LxcTools

STEP = 0.05  # seconds between looks, only within the short window after an exit


async def await_fate(tools: LxcTools, files: ContainerFiles, name: str, timeout: float) -> Fate:
    """Init's fate once LXC has logged it, or once the container is STOPPED (plain exit)."""
    async with asyncio.timeout(timeout):
        while True:
            fate = init_fate(files.read_lxc_log(name))
            if fate.fate is not InitFate.EXITED:
                break
            if (await _state(tools, name)) is LxcState.STOPPED:
                return init_fate(files.read_lxc_log(name))  # LXC logs before it reports STOPPED
            await asyncio.sleep(STEP)
    if fate.fate is not InitFate.REBOOTED:
        await tools.wait(name, "STOPPED", timeout)  # teardown finishes after the log line
    return fate


async def rebooted_init(tools: LxcTools, name: str, old_pid: int, timeout: float
                        ) -> tuple[int, int] | None:
    """(pid, kernel start time) of the init LXC started after a reboot, or None."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                info = await tools.info(name)
                if info.state is LxcState.STOPPED:
                    return None
                pid = info.pid if info.state is LxcState.RUNNING else None
                starttime = proc_starttime(pid) if pid is not None and pid != old_pid else None
                if pid is not None and starttime is not None:
                    return pid, starttime
                await asyncio.sleep(STEP)
    except TimeoutError:
        return None


async def _state(tools: LxcTools, name: str) -> LxcState | None:
    try:
        return (await tools.info(name)).state
    except DriverError:
        return None
