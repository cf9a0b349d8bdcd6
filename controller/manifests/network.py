"""A `kind: Network` document: its cross-field checks and its normalised model.

Called by semantic.py (`check`, on a schema-valid Network document) and loader.py (`build`,
once `check` found nothing). Every value that will reach ip, nft or dnsmasq goes through
reconcilers/net/names.py here: a manifest is refused by the very rule of the commands' gate,
but when it is loaded, as FILE:LINE:COLUMN: FIELD, not when the network is created; a refusal
(UnsafeValue) becomes a finding at the field's path. `build` fills the defaults (the bridge
derived from the name, MTU 1500, leases of an hour), so `leaseTime: 1h` and `leaseTime: 3600`
are the same generation. Never touches the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any, TypeVar

from controller.manifests.errors import quote
from controller.manifests.normalise import metadata, parse_duration
from reconcilers.model import SourceRef
from reconcilers.net import names
from reconcilers.net.model import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MTU,
    Dhcp4,
    Dhcp6,
    Dns,
    Ipv4,
    Ipv6,
    Network,
    NetworkSpec,
)

Path = tuple[str | int, ...]
Finding = tuple[Path, str]
Raw = Mapping[str, Any]

IPV6_MIN_MTU = 1280  # RFC 8200: a link that carries IPv6 has at least this MTU

_Interface = TypeVar("_Interface", IPv4Interface, IPv6Interface)
_INDEXED = re.compile(r"(.*)\[([0-9]+)\]")


def check(doc: Raw) -> list[Finding]:
    """Every value of the spec through names.py, and the rules across its fields."""
    spec = doc["spec"]
    found: list[Finding] = []
    if "bridge" in spec:
        found += gate(("spec", "bridge"), names.check_ifname, spec["bridge"])
    if "ipv4" in spec:
        found += _family(spec["ipv4"], ("spec", "ipv4"), names.parse_interface,
                         names.check_dhcp_range)
    if "ipv6" in spec:
        found += _family(spec["ipv6"], ("spec", "ipv6"), names.parse_interface6,
                         names.check_dhcp_range6)
        if spec.get("mtu", DEFAULT_MTU) < IPV6_MIN_MTU:
            found.append((("spec", "mtu"), f"a network with IPv6 needs an MTU of at least "
                                           f"{IPV6_MIN_MTU} (got {spec['mtu']})"))
    if "dns" in spec:
        if "ipv4" not in spec and "ipv6" not in spec:
            found.append((("spec", "dns"), "DNS is served on the bridge's address: add "
                                           "spec.ipv4 or spec.ipv6, or remove spec.dns"))
        if "domain" in spec["dns"]:
            found += gate(("spec", "dns", "domain"), names.check_dns_domain,
                           spec["dns"]["domain"])
    return found


def _family(raw: Raw, path: Path, parse: Callable[[object, str], _Interface],
            check_range: Callable[[_Interface, object, object, str], object]) -> list[Finding]:
    """An address family's section: its address, then its DHCP range and lease time."""
    try:
        iface = parse(raw["address"], "address")
    except names.UnsafeValue as refused:
        return [_finding(path, refused)]
    dhcp = raw.get("dhcp")
    if dhcp is None:
        return []
    found = []
    try:
        check_range(iface, dhcp["range"][0], dhcp["range"][1], "range")
    except names.UnsafeValue as refused:
        found.append(_finding(path + ("dhcp",), refused))
    if "leaseTime" in dhcp:
        found += gate(path + ("dhcp", "leaseTime"), lease_seconds, dhcp["leaseTime"])
    return found


def lease_seconds(value: object, field: str = "leaseTime") -> int:
    """Whole seconds from a manifest's leaseTime (a duration), within dnsmasq's bounds."""
    assert isinstance(value, (int, float, str))  # the schema's duration
    seconds = parse_duration(value)
    if not seconds.is_integer():
        raise names.UnsafeValue(field, value, "must be a whole number of seconds")
    try:
        return names.check_lease_seconds(int(seconds), field)
    except names.UnsafeValue as refused:
        raise names.UnsafeValue(field, value, f"is {int(seconds)} s; {refused.why}") from None


def gate(path: Path, check_value: Callable[[object, str], object],
         value: object) -> list[Finding]:
    """`value` through one of names.py's gates (the NICs' values too, for semantic.py): its
    refusal as a finding at `path`, named by the path's last key."""
    try:
        check_value(value, str(path[-1]))
    except names.UnsafeValue as refused:
        return [(path, f"{quote(refused.value)}: {refused.why}")]
    return []


def _finding(prefix: Path, refused: names.UnsafeValue) -> Finding:
    """A refusal located at its field under `prefix`: "range[1]" → prefix + ("range", 1)."""
    indexed = _INDEXED.fullmatch(refused.field)
    field: Path = (indexed[1], int(indexed[2])) if indexed else (refused.field,)
    return prefix + field, f"{quote(refused.value)}: {refused.why}"


# --- normalisation ------------------------------------------------------------------------------

def build(raw: Raw, source: SourceRef) -> Network:
    """The Network of a document `check` found nothing wrong with."""
    meta = metadata(raw["metadata"])
    spec = raw["spec"]
    dns = spec.get("dns")
    return Network(metadata=meta, source=source, spec=NetworkSpec(
        bridge=spec.get("bridge") or names.bridge_name(meta.name),
        mtu=spec.get("mtu", DEFAULT_MTU),
        ipv4=_ipv4(spec["ipv4"]) if "ipv4" in spec else None,
        ipv6=_ipv6(spec["ipv6"]) if "ipv6" in spec else None,
        dns=Dns(domain=dns.get("domain")) if dns is not None else None,
    ))


def _lease(dhcp: Raw) -> int:
    return lease_seconds(dhcp["leaseTime"]) if "leaseTime" in dhcp else DEFAULT_LEASE_SECONDS


def _ipv4(raw: Raw) -> Ipv4:
    dhcp = raw.get("dhcp")
    return Ipv4(address=raw["address"], nat=raw.get("nat", False),
                dhcp=Dhcp4(dhcp["range"][0], dhcp["range"][1], _lease(dhcp)) if dhcp else None)


def _ipv6(raw: Raw) -> Ipv6:
    dhcp = raw.get("dhcp")
    return Ipv6(address=raw["address"],
                dhcp=Dhcp6(dhcp["range"][0], dhcp["range"][1], _lease(dhcp)) if dhcp else None)
