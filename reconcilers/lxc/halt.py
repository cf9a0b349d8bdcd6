"""Whether a container's init can receive its halt signal, read from /proc.

Called by LxcDriver after a start (to warn about an init that ignores the signal) and before a
graceful stop (not to wait shutdownTimeout for a signal the kernel drops). PID 1 of a pid
namespace gets only the signals it has a handler for or waits for, so `lxc-stop` cannot reach
an init like `exec sleep infinity`. Reads /proc only; never signals anything.
"""

from __future__ import annotations

import asyncio
import platform
import signal

from reconcilers.lxc.config import HALT_SIGNAL

HALT = signal.Signals[HALT_SIGNAL]


def catches(pid: int, sig: signal.Signals) -> bool | None:
    """Whether process `pid` takes `sig`: has a handler for it (SigCgt in /proc/PID/status) or
    blocks it to wait for it (SigBlk: busybox init's sigtimedwait; the kernel queues a blocked
    signal even for PID 1 of a pid namespace). None when it cannot be read (it is gone)."""
    masks = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("SigCgt", "SigBlk"):
                    masks[key] = int(value.strip(), 16)
    except (OSError, ValueError):
        return None
    if len(masks) < 2:
        return None
    taken = masks["SigCgt"] | masks["SigBlk"] | _waited_for(pid)
    return bool(taken >> (sig - 1) & 1)


_RT_SIGTIMEDWAIT = 128  # x86_64


def _waited_for(pid: int) -> int:
    """The signals `pid` waits for in rt_sigtimedwait (busybox init's main loop): the kernel
    unblocks them in SigBlk while it waits, so they are read from its first argument."""
    if platform.machine() != "x86_64":
        return 0
    try:
        with open(f"/proc/{pid}/syscall") as syscall:
            fields = syscall.read().split()
        if not fields or fields[0] != str(_RT_SIGTIMEDWAIT):
            return 0
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(int(fields[1], 16))
            return int.from_bytes(mem.read(8), "little")
    except (OSError, ValueError, IndexError, OverflowError):
        return 0


async def handler_within(pid: int, seconds: float) -> bool | None:
    """catches(pid, HALT), waiting up to `seconds` for a handler to appear (a shell
    sets its trap, an init its handlers, moments after it starts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (caught := catches(pid, HALT)) is False and loop.time() < deadline:
        await asyncio.sleep(0.1)
    return caught
