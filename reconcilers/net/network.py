"""One managed network on this host: what it asks for, what is there, and the repair between.

Role: turn a `Network` (reconcilers/net/model.py) plus the static reservations of the domains
on it into host parts (`plan`: a bridge, an nftables table, a dnsmasq config), read what the
host has (`NetworkHost.observe`), make the host match, repairing only what differs
(`ensure`: a deleted bridge is recreated, a killed dnsmasq restarted, a stale table
replaced — an intact network is left alone, which is what makes a controller restart
non-disruptive: leases, taps and veths stay), and take it all down (`remove`). Also reads
dnsmasq's lease file (`leases`). Callers: the engine's network controller
(controller/engine/networks.py). Never decides whether a network should exist, and never
touches a bridge, table or dnsmasq that is not this network's (bridge.py, nft.py and
dnsmasq.py each refuse what they cannot prove is ours).

Forwarding: a network with NAT needs net.ipv4.ip_forward, one with IPv6 needs IPv6
forwarding; `ensure` turns them on (in the controller's network namespace) and never off, as
libvirt does: another network or the host's own routing may rely on them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path

import structlog

from reconcilers.net import bridge, dnsmasq, nft
from reconcilers.net.bridge import BridgeSpec
from reconcilers.net.command import Place, run
from reconcilers.net.dnsmasq import DnsmasqConfig, Files, Reservation
from reconcilers.net.model import DEFAULT_LEASE_SECONDS, Network

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Plan:
    """The host parts one network asks for."""

    name: str
    bridge: BridgeSpec
    rules: nft.Rules
    dnsmasq: DnsmasqConfig | None  # None: no DHCP and no router advertisements to serve
    forward4: bool
    forward6: bool


def plan(network: Network, directory: Path, reservations: Sequence[Reservation] = (),
         user: str = "nobody", group: str = "nogroup") -> Plan:
    """The parts of `network`; raises names.UnsafeValue (a ValueError) for a value that the
    loader should have refused (a reservation outside the subnet: the domain's file said so)."""
    spec = network.spec
    address = IPv4Interface(spec.ipv4.address) if spec.ipv4 is not None else None
    address6 = IPv6Interface(spec.ipv6.address) if spec.ipv6 is not None else None
    nat = spec.ipv4 is not None and spec.ipv4.nat
    config = None
    dhcp4 = spec.ipv4.dhcp if spec.ipv4 is not None else None
    dhcp6 = spec.ipv6.dhcp if spec.ipv6 is not None else None
    lease = dhcp4 or dhcp6
    if dhcp4 is not None or address6 is not None:
        config = DnsmasqConfig(
            network=network.name, interface=spec.bridge, address=address,
            dhcp_range=((IPv4Address(dhcp4.start), IPv4Address(dhcp4.end))
                        if dhcp4 is not None else None),
            files=Files.in_dir(directory, network.name),
            lease_seconds=lease.lease_seconds if lease is not None else DEFAULT_LEASE_SECONDS,
            reservations=tuple(reservations) if dhcp4 is not None else (),
            dns=spec.dns is not None, domain=spec.dns.domain if spec.dns else None,
            user=user, group=group, address6=address6,
            dhcp6_range=((IPv6Address(dhcp6.start), IPv6Address(dhcp6.end))
                         if dhcp6 is not None else None))
    return Plan(name=network.name,
                bridge=BridgeSpec(network=network.name, name=spec.bridge, address=address,
                                  mtu=spec.mtu, address6=address6),
                rules=nft.Rules(network.name, spec.bridge, address, nat, address6),
                dnsmasq=config, forward4=nat, forward6=address6 is not None)


@dataclass(frozen=True)
class Observed:
    """What the host has of one network's parts."""

    bridge: bool  # present, ours, up, with the declared addresses and MTU
    rules: bool  # the table is there, made from exactly the declared rules
    dnsmasq_pid: int | None  # our dnsmasq, proven; None: not running (or none wanted)
    dnsmasq_current: bool  # running with the config the plan renders (or none wanted)

    @property
    def complete(self) -> bool:
        return self.bridge and self.rules and self.dnsmasq_current

    def missing(self) -> list[str]:
        """What differs, in words, for events and conditions."""
        return [what for ok, what in ((self.bridge, "bridge"), (self.rules, "nftables table"),
                                      (self.dnsmasq_current, "dnsmasq")) if not ok]


@dataclass(frozen=True)
class Lease:
    mac: str
    address: str
    hostname: str | None
    expires: int  # seconds since the epoch; 0: never


class NetworkHost:
    """The host side of every managed network, with dnsmasq's files in `directory`."""

    def __init__(self, directory: Path, place: Place = Place()) -> None:
        self.directory = directory
        self.place = place

    def files(self, name: str) -> Files:
        return Files.in_dir(self.directory, name)

    def dnsmasq_pid(self, name: str) -> int | None:
        """The network's dnsmasq, proven ours; None when it does not run."""
        return dnsmasq.observe(self.files(name))

    async def observe(self, wanted: Plan) -> Observed:
        state = await bridge.observe(self.place, wanted.bridge.name)
        pid = dnsmasq.observe(self.files(wanted.name))
        if wanted.dnsmasq is None:
            current = pid is None
        else:
            current = pid is not None and _conf_is(wanted.dnsmasq)
        return Observed(bridge=state is not None and state.matches(wanted.bridge),
                        rules=await nft.is_current(self.place, wanted.rules),
                        dnsmasq_pid=pid, dnsmasq_current=current)

    async def ensure(self, wanted: Plan) -> tuple[Observed, list[str]]:
        """Make the host match `wanted`; what it found, and the parts it had to repair."""
        found = await self.observe(wanted)
        repaired = found.missing()
        if not found.bridge:
            await bridge.ensure(self.place, wanted.bridge)
        if not found.rules:
            await nft.apply(self.place, wanted.rules)
        await self._forwarding(wanted)
        if not found.dnsmasq_current:
            if found.dnsmasq_pid is not None:
                await dnsmasq.stop(self.files(wanted.name))
            if wanted.dnsmasq is not None:
                await dnsmasq.start(self.place, wanted.dnsmasq)
        if repaired:
            log.info("network repaired", network=wanted.name, parts=repaired)
        return found, repaired

    async def _forwarding(self, wanted: Plan) -> None:
        keys = [key for on, key in ((wanted.forward4, "net.ipv4.ip_forward"),
                                    (wanted.forward6, "net.ipv6.conf.all.forwarding")) if on]
        for key in keys:
            if _sysctl_is_on(key) and self.place.netns is None:
                continue
            await run(self.place.inside("sysctl", "-qw", f"{key}=1"), subject=wanted.name,
                      operation=f"turn on {key}")

    async def remove(self, name: str, bridge_name: str) -> list[str]:
        """Take the network's parts down (dnsmasq, table, bridge); the parts that were there."""
        removed = []
        if await dnsmasq.stop(self.files(name)):
            removed.append("dnsmasq")
        if await nft.delete(self.place, name):
            removed.append("nftables table")
        if await bridge.delete(self.place, name, bridge_name):
            removed.append("bridge")
        files = self.files(name)
        for path in (files.conf, files.pid, files.leases, files.log):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return removed

    def leases(self, name: str) -> list[Lease]:
        """dnsmasq's current DHCPv4 leases of the network (its lease file; [] if none)."""
        try:
            text = self.files(name).leases.read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            return []
        return parse_leases(text)


def parse_leases(text: str) -> list[Lease]:
    """The IPv4 lines of a dnsmasq lease file: `EXPIRY MAC IP HOSTNAME CLIENT-ID`."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] == "duid" or fields[1].count(":") != 5:
            continue  # the DUID line, and DHCPv6 leases (IAID in the MAC's place)
        try:
            expires = int(fields[0])
            address = str(IPv4Address(fields[2]))
        except ValueError:
            continue
        found.append(Lease(mac=fields[1].lower(), address=address,
                           hostname=None if fields[3] == "*" else fields[3], expires=expires))
    return found


def _conf_is(config: DnsmasqConfig) -> bool:
    try:
        return config.files.conf.read_text() == dnsmasq.render(config)
    except (FileNotFoundError, UnicodeDecodeError):
        return False


def _sysctl_is_on(key: str) -> bool:
    path = Path("/proc/sys") / key.replace(".", "/")
    try:
        return path.read_text().strip() == "1"
    except OSError:
        return False

