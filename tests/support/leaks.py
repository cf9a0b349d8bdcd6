"""What the leak guard of tests/conftest.py looks for once a test and its fixtures are done.

- asyncio tasks the test's loop still runs that were not there when the test began
  (`pending_tasks`);
- processes started during the test that still run (`ProcessGuard`): a qemu, an LXC
  container (seen as its `[lxc monitor] LXCPATH NAME` process) or any child of pytest, when it
  belongs to this session (a child of pytest, or a command line naming the session's basetemp or
  a scratch dir). Concurrent unrelated processes are never considered: only pids that did not
  exist at the start of the test, whose command line or parentage makes them ours.

A fixture wider than one test (a module's daemon) `hold()`s its directories while it lives:
what runs under them belongs to the fixture, not to the test that happened to start it.
The guard kills each leak by pid after describing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

_held: set[str] = set()


def hold(*directories: Path) -> None:
    """Processes naming one of `directories` belong to a fixture that outlives the test."""
    _held.update(f"{d}/" for d in directories)


def release(*directories: Path) -> None:
    _held.difference_update(f"{d}/" for d in directories)


@dataclass(frozen=True)
class Leak:
    what: str  # "qemu pid 123: qemu-system-x86_64 -name guest=vm,..."
    pids: tuple[int, ...]  # what to kill; for a container, its init (the monitor then exits)


def _names(argv: list[str], prefixes: Iterable[str]) -> bool:
    return any(prefix in arg for arg in argv for prefix in prefixes)


SETTLE = 3.0  # seconds a leftover may take to exit on its own before it counts as a leak


class ProcessGuard:
    """The pids alive at the start of a test; `leaks()` at its end."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.roots = tuple(roots)
        self.before = set(psutil.pids())

    def leaks(self, settle: float = SETTLE) -> list[Leak]:
        """What this test left running. A process already on its way out (an LXC monitor
        tearing down after its container stopped) gets `settle` seconds to go first."""
        suspects = []
        for pid in sorted(set(psutil.pids()) - self.before):
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if self._leak(process) is not None:
                    suspects.append(process)
        _, alive = psutil.wait_procs(suspects, timeout=settle) if suspects else ([], [])
        found = []
        for process in alive:
            with contextlib.suppress(psutil.Error):
                leak = self._leak(process)
                if leak is not None:
                    found.append(leak)
        return found

    def _leak(self, process: psutil.Process) -> Leak | None:
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        argv = process.cmdline()
        ours = (_names(argv, self.roots)
                or any(parent.pid == os.getpid() for parent in process.parents()))
        if not argv or not ours or _names(argv, _held):
            return None
        line = " ".join(argv)
        if len(line) > 240:
            line = line[:240] + " ..."
        if argv[:2] == ["[lxc", "monitor]"] and len(argv) == 4:
            inits = tuple(child.pid for child in process.children())
            return Leak(f"LXC container {argv[3]} on {argv[2]} (monitor pid {process.pid}, "
                        f"init {', '.join(map(str, inits)) or 'gone'})", inits or (process.pid,))
        kind = "qemu" if Path(argv[0]).name.startswith("qemu-system") else "process"
        return Leak(f"{kind} pid {process.pid}: {line}", (process.pid,))


async def pending_tasks(before: set[asyncio.Task[Any]], settle: float = 0.5
                        ) -> list[asyncio.Task[Any]]:
    """Tasks not in `before` still pending once the loop had `settle` s to finish them."""
    deadline = time.monotonic() + settle
    current = asyncio.current_task()
    rounds = 0
    while True:
        left = [task for task in asyncio.all_tasks()
                if task not in before and task is not current and not task.done()]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0 if rounds < 5 else 0.01)  # a cancelled task ends in a step or two
        rounds += 1


def describe_task(task: asyncio.Task[Any]) -> str:
    """The task's name, its coroutine and where that is suspended."""
    frames = task.get_stack(limit=1)
    where = (f" at {frames[0].f_code.co_filename}:{frames[0].f_lineno}" if frames else "")
    coro = task.get_coro()
    return f"{task.get_name()}: {getattr(coro, '__qualname__', coro)!s}{where}"
