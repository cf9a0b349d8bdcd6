"""Spec → LXC config text: a pure function, golden-file tested.

Called by the lxc driver (validate and start) and by the golden tests. It reads nothing from the
host: host facts (cgroup version, AppArmor, CPUs, the id map) and paths come in as arguments,
so both cgroup variants can be rendered anywhere.

An unprivileged container (the default) gets `lxc.idmap` lines: the host's map (idmap.py), to
which its rootfs is shifted on disk (shift.py, storage.py).

It must never let a manifest value add a config line: LXC's config format has no escape for a
newline, so values containing control characters are refused (ConfigValueError naming the
field); a whole value (`dir:` or `overlay:` prefix included) with leading/trailing blanks or a
leading quote is quoted the way LXC's parser strips it (`lxc-info -c KEY` reads back the
validated value: tests/lxc/test_config.py); mount paths use fstab's octal escapes, which LXC's
getmntent decodes.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from reconcilers.lxc.idmap import IdMap
from reconcilers.model import (
    BUSYBOX_ROOTFS,
    Domain,
    DomainSpec,
    LinkState,
    LxcSpec,
    Mount,
    Nic,
    NicMode,
)
from reconcilers.net.names import UnsafeValue, check_ifname, check_mac, veth_name

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUOTE_CHARS = 60
# fstab escapes, decoded by getmntent(3) when LXC reads lxc.mount.entry (control characters,
# which fstab could escape too, are refused before this)
_FSTAB_ESCAPES = {" ": "\\040", "\\": "\\134"}

HALT_SIGNAL = "SIGPWR"  # LXC's default; busybox init (1.35) powers off on it
CAP_DROP = "mac_admin mac_override sys_time sys_module sys_rawio"
# what a cgroup file goes back to when the spec drops its limit (apply_live)
UNLIMITED = {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000",
             "cpu.weight": "100", "cpu.max": "max 100000", "pids.max": "max"}


class CgroupVersion(str, enum.Enum):
    V1 = "v1"  # legacy or hybrid hierarchy: lxc.cgroup.* keys
    V2 = "v2"  # unified hierarchy: lxc.cgroup2.* keys


class ConfigValueError(ValueError):
    """A manifest value that cannot be written into an LXC config safely."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class HostFacts:
    """What the rendered config depends on from the host (probed once by host.py)."""

    cgroup: CgroupVersion
    apparmor: bool  # AppArmor enabled: the container runs unconfined (see render_config)
    cpus: tuple[int, ...]  # the host's online CPUs: a cpuset is the first `vcpus` of them
    idmap: IdMap | None  # unprivileged containers' ids; None: no safe range (idmap_problem)
    idmap_problem: str = ""


@dataclass(frozen=True)
class ConfigPaths:
    """Where the container's files live, decided by the driver."""

    rootfs: str  # the resolved rootfs directory: the shared busybox tree (the lower layer of
    # a busybox container's overlay), the container's own (an unpacked image) or the user's
    delta: str  # a busybox container's overlay upper dir over the shared tree
    console_log: str  # the domain log: console output is appended there
    lxc_log: str  # LXC's own log, quoted when lxc-start fails and read to classify exits
    file_sources: frozenset[str] = frozenset()  # mount sources that are files: create=file


def cgroup_limits(spec: DomainSpec, version: CgroupVersion, cpus: tuple[int, ...]
                  ) -> list[tuple[str, str]]:
    """The cgroup files and values for the spec's memory, cpu, cpuset and pids limits, in a
    fixed order; ConfigValueError for more vcpus than the host's `cpus`.

    Shared by the config (as lxc.cgroup[2].KEY lines) and apply_live (lxc-cgroup KEY VALUE).
    """
    tune = spec.cputune
    if version is CgroupVersion.V1:
        limits = [("memory.limit_in_bytes", str(spec.memory))]
        if tune.shares is not None:
            limits.append(("cpu.shares", str(tune.shares)))
        if tune.period is not None:
            limits.append(("cpu.cfs_period_us", str(tune.period)))
        if tune.quota is not None:
            limits.append(("cpu.cfs_quota_us", str(tune.quota)))
    else:
        limits = [("memory.max", str(spec.memory))]
        if tune.shares is not None:
            limits.append(("cpu.weight", str(shares_to_weight(tune.shares))))
        if tune.quota is not None or tune.period is not None:
            quota = "max" if tune.quota is None or tune.quota < 0 else str(tune.quota)
            limits.append(("cpu.max", f"{quota} {tune.period or 100000}"))
    limits.append(("cpuset.cpus", cpuset(spec.vcpus, cpus)))
    if spec.lxc is not None and spec.lxc.pids_limit is not None:
        limits.append(("pids.max", str(spec.lxc.pids_limit)))
    return limits


def cpuset(vcpus: int, cpus: tuple[int, ...]) -> str:
    """The first `vcpus` of the host's CPUs as a cpu list ("0-2,4"): a container's vcpus are
    host CPUs it may run on, not virtual ones."""
    if vcpus > len(cpus):
        raise ConfigValueError("spec.vcpus", f"{vcpus} vcpus asked, the host has {len(cpus)} "
                                             "CPUs")
    ranges: list[list[int]] = []
    for cpu in sorted(cpus[:vcpus]):
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] → v2 cpu.weight [1, 10000] (the runc/systemd mapping)."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def render_config(domain: Domain, host: HostFacts, paths: ConfigPaths) -> str:
    """The complete LXC config file for `domain`; raises ConfigValueError on unsafe values."""
    lines = [f"# generated by domctl for {domain.name}; rewritten at every start, do not edit"]
    lines += [f"{key} = {value}" for key, value in _entries(domain, host, paths)]
    return "\n".join(lines) + "\n"


def _entries(domain: Domain, host: HostFacts, paths: ConfigPaths) -> Iterator[tuple[str, str]]:
    if not NAME_RE.fullmatch(domain.name):
        raise ConfigValueError("metadata.name",
                               f"{_quote(domain.name)} is not a valid domain name")
    lxc = domain.spec.lxc
    if lxc is None:
        raise ConfigValueError("spec.lxc", "missing for an lxc domain")
    yield "lxc.uts.name", domain.name
    yield from _rootfs(lxc, host, paths)
    yield from _init_cmd(lxc.init)
    yield "lxc.signal.halt", HALT_SIGNAL
    yield from _nics(domain.name, lxc.nics)
    yield "lxc.autodev", "1"
    # with a cgroup namespace LXC skips the cgroup mount unless forced; it shows the container
    # its own cgroup as the root. Unprivileged: read-write, so that an init such as systemd can
    # make its sub-cgroups (LXC hands the cgroup's directory to the mapped root), while the
    # limit files stay the host's root's; privileged: read-only, as root could write them all
    cgroup = "cgroup:ro:force" if lxc.privileged else "cgroup:rw:force"
    yield "lxc.mount.auto", f"proc:mixed sys:ro {cgroup}"
    yield "lxc.tty.max", "0"
    yield "lxc.pty.max", "16"
    yield "lxc.cap.drop", CAP_DROP
    if host.apparmor:
        # LXC's generated profile needs apparmor_parser and a nesting-aware host policy; a
        # container under our own cgroup/cap limits (and id map) runs unconfined instead
        yield "lxc.apparmor.profile", "unconfined"
    yield "lxc.console.logfile", _value("log_dir", paths.console_log)
    yield "lxc.log.file", _value("state_dir", paths.lxc_log)
    yield "lxc.log.level", "DEBUG"  # exit classification reads init's fate from this log
    for name, value in lxc.env:
        if not ENV_NAME_RE.fullmatch(name):
            raise ConfigValueError(f"spec.lxc.env.{name}", "not a valid environment name")
        yield "lxc.environment", _value(f"spec.lxc.env.{name}", f"{name}={value}")
    for index, mount in enumerate(lxc.mounts):
        kind = "file" if mount.source in paths.file_sources else "dir"
        yield "lxc.mount.entry", _mount_entry(f"spec.lxc.mounts[{index}]", mount, kind)
    prefix = "lxc.cgroup." if host.cgroup is CgroupVersion.V1 else "lxc.cgroup2."
    for key, value in cgroup_limits(domain.spec, host.cgroup, host.cpus):
        yield prefix + key, value


def uses_overlay(lxc: LxcSpec) -> bool:
    """Whether the container's rootfs is an overlay over the shared busybox tree (the others
    have a directory of their own, or the user's)."""
    return lxc.image is None and lxc.rootfs == BUSYBOX_ROOTFS


def _rootfs(lxc: LxcSpec, host: HostFacts, paths: ConfigPaths) -> Iterator[tuple[str, str]]:
    if uses_overlay(lxc):
        # the cached rootfs is shared by every busybox container: each writes to its own overlay
        lower, upper = _overlay_part(paths.rootfs), _overlay_part(paths.delta)
        yield "lxc.rootfs.path", _value("state_dir", f"overlay:{lower}:{upper}")
    else:
        # quoted as a whole when needed: LXC strips quotes around the value, not its parts
        field = "spec.lxc.rootfs" if lxc.image is None else "state_dir"
        yield "lxc.rootfs.path", _value(field, "dir:" + paths.rootfs)
    if lxc.privileged:
        return
    if host.idmap is None:
        raise ConfigValueError("spec.lxc.privileged", "an unprivileged container needs an id "
                                                      f"range: {host.idmap_problem}")
    yield "lxc.idmap", f"u 0 {host.idmap.uid} {host.idmap.count}"
    yield "lxc.idmap", f"g 0 {host.idmap.gid} {host.idmap.count}"


def _init_cmd(argv: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """lxc.init.cmd, when LXC can read it back exactly.

    LXC 5 splits lxc.init.cmd at spaces and knows no quoting, so an argument with a blank cannot
    be written there. The driver always passes the exact argv to lxc-start after `--`; this line
    documents it for a human running lxc-start by hand, and is omitted when it would lie.
    """
    if not argv:
        raise ConfigValueError("spec.lxc.init", "must name a program")
    for index, arg in enumerate(argv):
        _value(f"spec.lxc.init[{index}]", arg)
    if any(not arg or re.search(r"\s", arg) or arg[0] in "'\"" for arg in argv):
        yield "# lxc.init.cmd", "(omitted: it cannot quote blanks) " + json.dumps(list(argv))
        return
    yield "lxc.init.cmd", " ".join(argv)


def _nics(name: str, nics: tuple[Nic, ...]) -> Iterator[tuple[str, str]]:
    """A veth pair per NIC: the host end `veth.pair` (derived from the domain's name and the
    index) on the bridge, the container end `ethN` with the NIC's MAC. No NIC: an empty network
    namespace (only lo). LXC gives both ends the bridge's MTU when none is set, so none is.

    A NIC's `ip` is a DHCP reservation of its network's dnsmasq, not an lxc.net.N.ipv4.address:
    the container asks for it like any other lease (one source of truth). `linkState: down` is
    a lost carrier, as QMP set_link gives a VM: the host end is down (the start-host hook sets
    it down before init runs; apply_live sets it later), the container's own end stays up, its
    to configure; the guest cannot bring a carrier back from inside.
    """
    if not nics:
        yield "lxc.net.0.type", "empty"
        return
    down = []
    for index, nic in enumerate(nics):
        veth, bridge, mac = nic_values(name, index, nic)
        key = f"lxc.net.{index}."
        yield key + "type", "veth"
        yield key + "link", bridge
        yield key + "veth.pair", veth
        yield key + "hwaddr", mac
        yield key + "name", container_ifname(index)
        yield key + "flags", "up"
        if nic.link_state is LinkState.DOWN:
            down.append(veth)
    if down:
        # hook version 1: LXC appends no arguments to the command (a shell line of our own,
        # of checked interface names only)
        yield "lxc.hook.version", "1"
        for veth in down:
            yield "lxc.hook.start-host", f"ip link set dev {veth} down"


def nic_values(name: str, index: int, nic: Nic) -> tuple[str, str, str]:
    """(host veth, bridge, MAC) of NIC `index` of container `name`, each checked by names.py;
    ConfigValueError naming the field for a NIC that is refused or not resolved."""
    field = f"spec.lxc.nics[{index}]"
    if nic.mode is NicMode.USER:
        raise ConfigValueError(f"{field}.mode", "a container's NIC is a veth pair on a bridge: "
                                                "mode network or bridge")
    if nic.bridge is None or nic.mac is None:
        raise ConfigValueError(f"{field}.network", "not resolved to a bridge and a MAC")
    try:
        bridge = check_ifname(nic.bridge, f"{field}.bridge")
        return veth_name(name, index), bridge, check_mac(nic.mac, f"{field}.mac")
    except UnsafeValue as exc:  # the veth's: more NICs than names.MAX_NICS
        where = exc.field if exc.field.startswith(field) else "spec.lxc.nics"
        raise ConfigValueError(where, exc.why) from None


def container_ifname(index: int) -> str:
    """The name of NIC `index` inside the container."""
    return f"eth{index}"


def _quote(value: str) -> str:
    """`repr(value)`, of at most a short prefix: a manifest value may be megabytes long."""
    if len(value) <= _QUOTE_CHARS:
        return repr(value)
    return f"{value[:_QUOTE_CHARS]!r}… ({len(value)} characters)"


def _value(field: str, value: str) -> str:
    """A config value LXC reads back unchanged, or ConfigValueError."""
    if _CONTROL.search(value):
        raise ConfigValueError(field, "control characters (newline, tab, NUL...) are not allowed")
    if value != value.strip() or value[:1] in ("'", '"'):
        # LXC trims blanks around a value and then strips one pair of matching outer quotes
        return f'"{value}"'
    return value


def _overlay_part(path: str) -> str:
    if ":" in path:
        raise ConfigValueError("state_dir", f"{_quote(path)}: an overlay path cannot contain ':'")
    return path


def _mount_entry(field: str, mount: Mount, kind: str) -> str:
    for part, path in (("source", mount.source), ("target", mount.target)):
        _value(f"{field}.{part}", path)
        pure = PurePosixPath(path)
        if not pure.is_absolute() or ".." in pure.parts:
            raise ConfigValueError(f"{field}.{part}", "must be an absolute path without '..'")
    target = str(PurePosixPath(mount.target).relative_to("/"))
    if target == ".":
        raise ConfigValueError(f"{field}.target", "cannot mount over the container's root")
    options = "bind,ro" if mount.readonly else "bind"
    return f"{_fstab(mount.source)} {_fstab(target)} none {options},create={kind} 0 0"


def _fstab(path: str) -> str:
    return "".join(_FSTAB_ESCAPES.get(char, char) for char in path)
