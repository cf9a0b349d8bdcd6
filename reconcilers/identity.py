"""Process identity and exit watching, shared by both drivers.

A pid alone proves nothing after a controller restart (pids are reused, pidfiles go stale).
A process is ours only when the boot id, the kernel's start time of the process and its
command line all agree with what we recorded when we started it. Exits are seen through a
pidfd, which becomes readable when the process exits, before it is reaped, so a zombie left
to a slow PID 1 never looks alive.

Write-ahead starts: the engine records a per-start token before a driver spawns anything, and
the driver hands it to the process in its environment (START_TOKEN_ENV). A controller killed
between the spawn and the record finds the process again by its command line (`find`) and
proves it is the start it recorded by the token (`start_token`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import psutil

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    return _BOOT_ID.read_text().strip()


def proc_starttime(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


def is_alive(pid: int) -> bool:
    """True for a live process; False for none or a zombie (kill(pid, 0) succeeds on zombies)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cmdline(pid: int) -> list[str] | None:
    """The argv of `pid` ([] for a zombie), None when there is no such process to read.

    Read from /proc directly, split like psutil splits it (a title rewritten with spaces, as
    LXC's monitor does, is split on them): `find` calls it for every process on the host,
    three times in a start, where psutil's per-process objects cost several times as much.
    """
    try:
        fd = os.open(f"/proc/{pid}/cmdline", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    try:  # os.read, not open(): a file object per process doubles the cost of a scan
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:  # it exited meanwhile (ESRCH), or its memory cannot be read
        return None
    finally:
        os.close(fd)
    data = os.fsdecode(b"".join(chunks))
    if not data:
        return []
    sep = "\0" if data.endswith("\0") else " "
    data = data.removesuffix(sep)
    argv = data.split(sep)
    return data.split(" ") if sep == "\0" and len(argv) == 1 and " " in data else argv


START_TOKEN_ENV = "DOMCTL_START_TOKEN"


def start_token(pid: int) -> str | None:
    """The start token in the process's environment, if it has one we may read."""
    try:
        return psutil.Process(pid).environ().get(START_TOKEN_ENV)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def find(matches: Callable[[list[str]], bool]) -> list[int]:
    """The pids of live processes whose command line `matches` (a scan of /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        pid = int(entry) if entry.isdigit() else 0
        if pid and (argv := cmdline(pid)) and matches(argv) and is_alive(pid):
            found.append(pid)
    return sorted(found)


def same_process(pid: int, recorded_boot_id: str, recorded_starttime: int) -> bool:
    """The pid still names the very process recorded (same boot, same kernel start time)."""
    return (recorded_boot_id == boot_id() and is_alive(pid)
            and proc_starttime(pid) == recorded_starttime)


class ExitWatch:
    """Calls `on_exit()` once, on the event loop, when process `pid` exits. No polling."""

    def __init__(self, pid: int, on_exit: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_exit = on_exit
        self._fd: int | None = None
        self.exited = asyncio.Event()
        try:
            self._fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            # already gone (ESRCH) or just died (EINVAL on some kernels): report it at once
            self._loop.call_soon(self._fire)
            return
        self._loop.add_reader(self._fd, self._fire)

    def _fire(self) -> None:
        if self.exited.is_set():
            return
        self.cancel()
        self.exited.set()
        self._on_exit()

    def cancel(self) -> None:
        """Stop watching without calling on_exit (the controller is letting go of the domain)."""
        if self._fd is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for the exit; True if it happened within `timeout` seconds."""
        try:
            await asyncio.wait_for(self.exited.wait(), timeout)
        except TimeoutError:
            return False
        return True
