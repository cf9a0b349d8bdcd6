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
from pathlib import Path

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


def command_inside(netns: str, scratch: Path) -> list[str]:
    """The argv prefix that runs a command the way `ip netns exec NETNS` does, in a mount
    namespace of its own whose /sys shows `netns` (LXC looks a veth's bridge up in
    /sys/class/net) — but keeping the host's cgroup mounts, which `ip netns exec` hides under
    the fresh sysfs (LXC sets a container's limits there). `scratch`: an empty directory the
    cgroup mounts are moved through; nothing reaches the host's mounts (they are slaves)."""
    script = ('set -e; mount --rbind /sys/fs/cgroup "$0"; mount -t sysfs sysfs /sys; '
              'mount --move "$0" /sys/fs/cgroup; exec "$@"')
    return ["unshare", "--mount", "--propagation", "slave", "nsenter",
            f"--net=/run/netns/{netns}", "sh", "-c", script, str(scratch)]


def lxc_prefix(netns: str) -> list[str]:
    """The prefix for LXC's tools talking to containers started in `netns` (their monitor's
    socket is abstract, so bound to the network namespace)."""
    return ["nsenter", f"--net=/run/netns/{netns}"]
