"""dnsmasq for one managed network: its config (pure), started, observed and stopped by proof.

Role: one dnsmasq (Debian's dnsmasq-base) per network, serving DHCP (and DNS only when asked)
on the network's bridge alone. `render` is a pure function of a `DnsmasqConfig` whose every
field was checked by names.py, so no value can add a line (an option) to the file. `start`
writes the file and runs ``dnsmasq --conf-file=FILE`` (that file only: not /etc/dnsmasq.conf,
not /etc/dnsmasq.d); dnsmasq daemonises and survives the controller, like a domain.

Identity: a pid is ours only when the pid file names a live process whose command line is
exactly ``dnsmasq --conf-file=<our file>`` (read from /proc; see reconcilers/identity.py). Stop
never signals a pid it cannot prove that way: a stale pid file naming someone else's process is
left alone (reported as not running).

Privileges: dnsmasq starts as root to bind port 67 and open its pid, lease and log files, then
drops to `user`/`group` (nobody/nogroup by default) for the rest of its life — the least it
supports without file capabilities. It binds the bridge only (``interface=``,
``bind-interfaces``, ``except-interface=lo``), reads neither /etc/resolv.conf nor /etc/hosts
unless asked (`dns_upstream`, `host_hosts`), and with `dns` off it listens on no DNS port.
Callers: the future network reconciler (and the tests). Never: kills by name, reads another
config, or runs a shell.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path

from reconcilers.identity import ExitWatch, cmdline, is_alive
from reconcilers.net.command import Place, run
from reconcilers.net.errors import NetError
from reconcilers.net.names import (
    UnsafeValue,
    check_account,
    check_dhcp_range,
    check_dns_domain,
    check_ifname,
    check_lease_seconds,
    check_mac,
    check_object_name,
    check_path,
    check_reserved,
)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Reservation:
    """A static DHCP lease: this MAC always gets this address."""

    mac: str
    address: IPv4Address


@dataclass(frozen=True)
class Files:
    """A network's dnsmasq files, all in one directory of the controller's."""

    conf: Path
    pid: Path
    leases: Path
    log: Path

    @classmethod
    def in_dir(cls, directory: Path, network: str) -> Files:
        check_object_name(network)
        return cls(conf=directory / f"{network}.conf", pid=directory / f"{network}.pid",
                   leases=directory / f"{network}.leases", log=directory / f"{network}.log")


@dataclass(frozen=True)
class DnsmasqConfig:
    network: str
    interface: str  # the bridge
    address: IPv4Interface | None  # the bridge's address: the gateway, and dnsmasq's own
    dhcp_range: tuple[IPv4Address, IPv4Address] | None  # None: no DHCPv4
    files: Files
    lease_seconds: int = 3600
    reservations: tuple[Reservation, ...] = ()
    dns: bool = False  # answer DNS on the bridge (port 53); off: port=0
    domain: str | None = None  # with dns: names of leases resolve under this domain
    dns_upstream: bool = False  # forward to the servers of the host's /etc/resolv.conf
    host_hosts: bool = False  # serve the host's /etc/hosts
    user: str = "nobody"
    group: str = "nogroup"
    address6: IPv6Interface | None = None  # with it: router advertisements (SLAAC)
    dhcp6_range: tuple[IPv6Address, IPv6Address] | None = None  # and stateful DHCPv6

    def __post_init__(self) -> None:
        check_object_name(self.network)
        check_ifname(self.interface, "bridge")
        if self.dhcp_range is not None:
            if not isinstance(self.address, IPv4Interface):
                raise UnsafeValue("address", self.address, "must be an IPv4Interface")
            check_dhcp_range(self.address, str(self.dhcp_range[0]), str(self.dhcp_range[1]))
        if self.address6 is not None and not isinstance(self.address6, IPv6Interface):
            raise UnsafeValue("address6", self.address6, "must be an IPv6Interface")
        if self.dhcp6_range is not None:
            if self.address6 is None:
                raise UnsafeValue("dhcp6_range", self.dhcp6_range, "needs address6")
            if not all(isinstance(a, IPv6Address) and a in self.address6.network
                       for a in self.dhcp6_range):
                raise UnsafeValue("dhcp6_range", self.dhcp6_range,
                                  f"must be IPv6 addresses inside {self.address6.network}")
        if self.dhcp_range is None and self.address6 is None:
            raise UnsafeValue("dhcp_range", None, "dnsmasq needs DHCPv4 or IPv6 to serve")
        check_lease_seconds(self.lease_seconds)
        for path in (self.files.conf, self.files.pid, self.files.leases, self.files.log):
            check_path(path)
        if self.reservations and self.address is None:
            raise UnsafeValue("reservations", self.reservations, "need an IPv4 address")
        seen: set[str] = set()
        for reservation in self.reservations:
            assert self.address is not None
            mac = check_mac(reservation.mac, "reservation mac")
            check_reserved(self.address, str(reservation.address), "reservation ip")
            if mac in seen:
                raise UnsafeValue("reservation mac", mac, "is reserved twice")
            seen.add(mac)
        if self.domain is not None:
            check_dns_domain(self.domain)
        check_account(self.user, "user")
        check_account(self.group, "group")


def render(config: DnsmasqConfig) -> str:
    """The config file: one option a line, every value already checked (see names.py)."""
    lines = [
        f"# generated by domctl for network {config.network}; replaced on every start",
        f"interface={config.interface}",
        "except-interface=lo",
        "bind-interfaces",
        f"user={config.user}",
        f"group={config.group}",
        f"pid-file={config.files.pid}",
        f"dhcp-leasefile={config.files.leases}",
        f"log-facility={config.files.log}",
    ]
    if not config.dns_upstream:
        lines.append("no-resolv")
    if not config.host_hosts:
        lines.append("no-hosts")
    if not config.dns:
        lines.append("port=0")
    elif config.domain is not None:
        lines += [f"domain={config.domain}", f"local=/{config.domain}/", "expand-hosts"]
    if config.dhcp_range is not None and config.address is not None:
        first, last = config.dhcp_range
        lines += [
            f"dhcp-range={first},{last},{config.address.netmask},{config.lease_seconds}",
            f"dhcp-option=option:router,{config.address.ip}",
            "dhcp-authoritative",
            "dhcp-no-override",
        ]
        lines += [f"dhcp-host={check_mac(r.mac)},{r.address}" for r in config.reservations]
    if config.address6 is not None:
        lines.append("enable-ra")
        if config.dhcp6_range is not None:
            start, end = config.dhcp6_range
            lines.append(f"dhcp-range={start},{end},{config.address6.network.prefixlen},"
                         f"{config.lease_seconds}")
        else:
            lines.append(f"dhcp-range=::,constructor:{config.interface},ra-only")
    return "\n".join(lines) + "\n"


def argv(conf: Path) -> list[str]:
    """dnsmasq's whole command line: our config file and nothing else."""
    return ["dnsmasq", f"--conf-file={check_path(conf)}"]


def observe(files: Files) -> int | None:
    """The pid of the dnsmasq we started with `files.conf`, or None if none is proven alive."""
    try:
        pid = int(files.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if pid <= 1 or not is_alive(pid):
        return None
    seen = cmdline(pid)
    if not seen or Path(seen[0]).name != "dnsmasq" or seen[1:] != argv(files.conf)[1:]:
        return None
    return pid


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


async def start(place: Place, config: DnsmasqConfig, timeout: float = START_TIMEOUT) -> int:
    """Start the network's dnsmasq (or find it running); its pid, proven."""
    files = config.files
    running = observe(files)
    if running is not None:
        return running
    files.conf.parent.mkdir(parents=True, exist_ok=True)
    _write(files.conf, render(config))
    with contextlib.suppress(FileNotFoundError):
        files.pid.unlink()  # stale: it named no process of ours
    await run(place.inside(*argv(files.conf)), subject=config.network,
              operation="start dnsmasq", timeout=timeout)
    # dnsmasq's parent exits once the daemon has written its pid file and is serving
    pid = observe(files)
    if pid is None:
        raise NetError(config.network, "start dnsmasq",
                       f"no dnsmasq running with {files.conf} after start (see {files.log})")
    return pid


async def stop(files: Files, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop our dnsmasq: SIGTERM, then SIGKILL after `timeout`. False when none was proven
    running (nothing is signalled then, whatever the pid file says)."""
    pid = observe(files)
    if pid is None:
        return False
    watch = ExitWatch(pid, lambda: None)
    try:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not await watch.wait(timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not await watch.wait(timeout):
                raise NetError(files.conf.stem, "stop dnsmasq", f"pid {pid} survived SIGKILL")
    finally:
        watch.cancel()
    with contextlib.suppress(FileNotFoundError):
        files.pid.unlink()
    return True

