"""A running container's figures for `LxcDriver.stats` (virsh domstats): its cgroup and veths.

A container is a set of processes, so its figures are its cgroup's, as libvirt's LXC driver
reads them: on cgroup v1 `cpuacct.usage` (ns), `memory.usage_in_bytes` and
`blkio.throttle.io_service_bytes` / `io_serviced`; on v2 `cpu.stat` usage_usec,
`memory.current` and `io.stat`. Memory is the cgroup's use (page cache included), the figure
`free` inside the container shows with lxcfs, not a process RSS. Block devices are named by
/sys/dev/block (`vda`, `dm-0`): a container has no disks of its own, only its share of the
host's.

The cgroup is the one of the container's init (/proc/PID/cgroup, from the host's cgroup
namespace), cut back to LXC's `lxc.payload.NAME` when init sits in a child of it (a systemd
init). NICs are the host ends of the veth pairs (`veth_name(name, index)`, in the network
namespace of the thread that runs the driver), read in index order until one is missing: NICs
are added and removed only at the end of the list, so the indexes are contiguous. Counters
are the guest's view (reconcilers/stats.py). It reads only.
"""

from __future__ import annotations

from pathlib import Path

from reconcilers.lxc.config import CgroupVersion
from reconcilers.lxc.host import CGROUP_ROOT
from reconcilers.net.names import MAX_NICS, veth_name
from reconcilers.stats import NET_DEV, PROC, DiskStats, DomainStats, NicStats, host_nics

SYS_BLOCK = Path("/sys/dev/block")
_PAYLOAD = "lxc.payload."


def read(name: str, pid: int, version: CgroupVersion, root: Path = CGROUP_ROOT,
         proc: Path = PROC, net_dev: Path = NET_DEV, sys_block: Path = SYS_BLOCK
         ) -> DomainStats:
    """The figures of container `name` whose init is `pid`; OSError or ValueError when its
    cgroup files are gone or malformed (it stopped meanwhile)."""
    paths = _cgroup_paths(proc / str(pid) / "cgroup")
    if version is CgroupVersion.V2:
        group = _under(root, paths[""])
        usage = _keyed(group / "cpu.stat")["usage_usec"]
        cpu, memory = usage / 1e6, _number(group / "memory.current")
        disks = _io_stat(group / "io.stat", sys_block)
    else:
        cpu = _number(_under(root / "cpuacct", paths["cpuacct"]) / "cpuacct.usage") / 1e9
        memory = _number(_under(root / "memory", paths["memory"]) / "memory.usage_in_bytes")
        blkio = _under(root / "blkio", paths["blkio"])
        disks = _blkio(blkio / "blkio.throttle.io_service_bytes",
                       blkio / "blkio.throttle.io_serviced", sys_block)
    return DomainStats(cpu_seconds=cpu, rss_bytes=memory, disks=disks,
                       interfaces=_veths(name, host_nics(net_dev)))


def _cgroup_paths(file: Path) -> dict[str, str]:
    """/proc/PID/cgroup as controller → path ("" for the v2 hierarchy), each path cut back
    to LXC's payload cgroup."""
    paths: dict[str, str] = {}
    for line in file.read_text().splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        parts = path.split("/")
        top = next((i for i, part in enumerate(parts) if part.startswith(_PAYLOAD)), None)
        path = "/".join(parts[:top + 1]) if top is not None else path
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _under(mount: Path, path: str) -> Path:
    return mount / path.lstrip("/")


def _number(file: Path) -> int:
    return int(file.read_text().split()[0])


def _keyed(file: Path) -> dict[str, int]:
    """A flat keyed file (cpu.stat): `key value` lines."""
    return {key: int(value) for key, value in
            (line.split() for line in file.read_text().splitlines() if line.strip())}


def _device(majmin: str, sys_block: Path) -> str:
    """The kernel's name of block device MAJ:MIN (`vda`), or MAJ:MIN when it has none."""
    try:
        return (sys_block / majmin).readlink().name  # ../../devices/.../block/vda
    except OSError:
        return majmin


def _io_stat(file: Path, sys_block: Path) -> tuple[DiskStats, ...]:
    """v2 io.stat: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` per device."""
    disks = []
    for line in file.read_text().splitlines():
        majmin, *pairs = line.split()
        fields = {key: int(value) for key, _, value in (pair.partition("=") for pair in pairs)}
        disks.append(DiskStats(_device(majmin, sys_block), fields.get("rbytes", 0),
                               fields.get("wbytes", 0), fields.get("rios", 0),
                               fields.get("wios", 0)))
    return tuple(disks)


def _blkio(service_bytes: Path, serviced: Path, sys_block: Path) -> tuple[DiskStats, ...]:
    """v1 blkio.throttle: `MAJ:MIN Read|Write|... N` lines (and a `Total N`) in two files."""
    counts: dict[str, dict[str, int]] = {}
    for file, unit in ((service_bytes, "bytes"), (serviced, "ops")):
        for line in file.read_text().splitlines():
            words = line.split()
            if len(words) == 3 and words[1] in ("Read", "Write"):
                counts.setdefault(words[0], {})[f"{words[1]}_{unit}"] = int(words[2])
    return tuple(DiskStats(_device(majmin, sys_block), c.get("Read_bytes", 0),
                           c.get("Write_bytes", 0), c.get("Read_ops", 0), c.get("Write_ops", 0))
                 for majmin, c in sorted(counts.items()))


def _veths(name: str, host: dict[str, NicStats]) -> tuple[NicStats, ...]:
    nics = []
    for index in range(MAX_NICS):
        host_end = veth_name(name, index)
        if host_end not in host:
            break
        nics.append(host[host_end])
    return tuple(nics)
