"""A running domain's figures (`Driver.stats`, virsh domstats) and the host-side readers both
drivers share.

DomainStats is what `Driver.stats(name)` returns: counters since the domain's process started
(CPU time, disk and NIC traffic) and gauges (memory). The engine (controller/engine/stats.py)
turns them into CPU % and JSON, the metrics collector into Prometheus series. Every NIC figure
is the guest's view, as libvirt reports it: the host end of a tap or veth transmits what the
guest receives, so `rx` here is the host end's tx and `tx` its rx (`host_nics`).

Readers of /proc and /sys live here because both drivers need them: a qemu domain's CPU time
and RSS are its process's (`process_cpu_seconds`, `process_rss`), a container's NICs are veths
read like a VM's taps. NIC counters come from /proc/thread-self/net/dev (the same counters as
/sys/class/net/IF/statistics, one read for all NICs): sysfs shows the network namespace of
whoever mounted it, /proc/thread-self/net the calling thread's, which is where the driver
made the taps and veths. Each raises OSError or ValueError when the file is gone or
malformed (a process that exited meanwhile); the drivers turn that into DriverError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
NET_DEV = Path("/proc/thread-self/net/dev")


@dataclass(frozen=True)
class DiskStats:
    """One block device's traffic since the domain started."""

    device: str  # the manifest's disk name (qemu), "cdrom", "cloud-init"; a container's rootfs
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int


@dataclass(frozen=True)
class NicStats:
    """One NIC's traffic since it was made, as the guest sees it (rx: received by the guest)."""

    name: str  # the host end: the tap (qemu) or veth (lxc) device
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


@dataclass(frozen=True)
class DomainStats:
    """`Driver.stats(name)`: the figures of one running domain, read when asked."""

    cpu_seconds: float  # cumulative CPU time (user + system) of the domain's processes
    rss_bytes: int  # qemu: the process's RSS; lxc: the cgroup's memory use (as libvirt's lxc)
    balloon_bytes: int | None = None  # qemu: the balloon's actual size; None without one
    disks: tuple[DiskStats, ...] = ()
    interfaces: tuple[NicStats, ...] = ()


def process_cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """utime + stime of /proc/PID/stat (fields 14 and 15, after the parenthesised comm, which
    may hold spaces), in seconds: clock ticks over SC_CLK_TCK."""
    text = (proc / str(pid) / "stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss(pid: int, proc: Path = PROC) -> int:
    """The resident set size in bytes: VmRSS of /proc/PID/status (kB)."""
    for line in (proc / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "VmRSS":
            return int(value.split()[0]) * 1024
    raise ValueError(f"no VmRSS in {proc / str(pid) / 'status'} (a zombie?)")


def host_nics(net_dev: Path = NET_DEV) -> dict[str, NicStats]:
    """Every interface of the calling thread's network namespace, by name, with its counters
    turned into the view of a guest behind it (what the host end transmits, the guest
    receives). Read on the thread that runs the driver: a thread moved into another
    namespace (a test's, `ip netns exec`) sees its own interfaces here."""
    nics = {}
    for line in net_dev.read_text().splitlines()[2:]:  # two header lines
        name, _, counters = line.partition(":")
        fields = [int(field) for field in counters.split()]
        # receive: bytes packets errs drop fifo frame compressed multicast; then transmit
        nics[name.strip()] = NicStats(name=name.strip(), rx_bytes=fields[8], tx_bytes=fields[0],
                                      rx_packets=fields[9], tx_packets=fields[1])
    return nics
