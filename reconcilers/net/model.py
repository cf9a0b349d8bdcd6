"""The normalised `kind: Network` document: what a managed network declares.

Role: the frozen, validated form of a Network manifest (the loader builds it; names.py has
already checked every value), read by the network reconciler (reconcilers/net/network.py)
and by the engine when it resolves a domain's NICs. Never touches the host.

Shape (manifest → here): `spec.bridge` (default derived from the name, names.bridge_name),
`spec.mtu`, `spec.ipv4: {address, dhcp: {range: [start, end], leaseTime}, nat}`,
`spec.ipv6: {address, dhcp: {range: [start, end]}}` (router advertisements always; with a
range DHCPv6 hands out addresses, without one guests use SLAAC), `spec.dns: {domain}` (dnsmasq
answers DNS on the bridge; without `dns` it listens on no DNS port).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from reconcilers.model import Metadata, SourceRef, content_hash, sparse_plain

DEFAULT_LEASE_SECONDS = 3600
DEFAULT_MTU = 1500


@dataclass(frozen=True)
class Dhcp4:
    start: str  # canonical dotted IPv4, inside the subnet, the gateway not in [start, end]
    end: str
    lease_seconds: int = DEFAULT_LEASE_SECONDS


@dataclass(frozen=True)
class Ipv4:
    address: str  # the bridge's address with its prefix: "192.168.122.1/24"
    dhcp: Dhcp4 | None = None  # None: no DHCP server (static addresses only)
    nat: bool = False  # masquerade the subnet out of every other interface


@dataclass(frozen=True)
class Dhcp6:
    start: str  # canonical IPv6 addresses inside the bridge's prefix
    end: str
    lease_seconds: int = DEFAULT_LEASE_SECONDS


@dataclass(frozen=True)
class Ipv6:
    address: str  # the bridge's address with its prefix: "fd00:42::1/64"
    dhcp: Dhcp6 | None = None  # None: SLAAC from router advertisements alone


@dataclass(frozen=True)
class Dns:
    domain: str | None = None  # lease names resolve as NAME.domain on the bridge address


@dataclass(frozen=True)
class NetworkSpec:
    bridge: str  # the bridge's interface name (derived when the manifest leaves it out)
    mtu: int = DEFAULT_MTU
    ipv4: Ipv4 | None = None
    ipv6: Ipv6 | None = None
    dns: Dns | None = None  # None: dnsmasq serves no DNS


@dataclass(frozen=True)
class Network:
    """One validated, normalised `kind: Network` document."""

    metadata: Metadata
    spec: NetworkSpec
    source: SourceRef

    @property
    def name(self) -> str:
        return self.metadata.name

    @functools.cached_property
    def generation(self) -> str:
        """A content hash of the spec, like a domain's: reformatting is not a new generation."""
        return content_hash({"spec": sparse_plain(self.spec), "kind": "Network"})
