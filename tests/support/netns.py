"""Enter a network namespace from a test: the calling thread, and what it starts, run inside.

The driver-level NIC tests need the driver's own commands (ip, qemu, lxc-start) to run inside
the namespace the test created, as they would under a controller started with `ip netns exec`.
setns(2) moves only the calling thread; threads and processes it creates afterwards inherit
the namespace, threads created before do not (so code under test that hands work to an
already-running thread pool would escape: the drivers spawn from the loop's thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run the calling thread inside the named namespace (`ip netns add`) until the exit."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
