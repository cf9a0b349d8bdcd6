"""Names and addresses of the host side of networks: checked here, before any command sees them.

Role: the one gate for every value that bridge.py, nft.py and dnsmasq.py put on a command line
or into a generated file (interface, network and namespace names, MACs, IPv4 and IPv6
addresses and ranges, MTUs, lease times, paths, DNS domains), and the derivation of the names
domctl chooses itself (a network's default bridge, a NIC's tap or veth). Callers: the rest of
reconcilers/net, and the manifest loader for its cross-field checks (controller/manifests), so
a manifest is refused by the very rule a command would be. Never: runs a command, touches the
host, or escapes a value — a value that would need escaping is refused (UnsafeValue).

Derived names (at most 15 characters, IFNAMSIZ - 1; stable: a pure function of the inputs):

- bridge of network N: ``dc-N`` when N has at most 11 characters (at most 14 in all), else
  ``dc-`` + N's first 5 characters + ``-`` + 6 hex digits of SHA-256(N): always exactly 15
  characters, so a short form and a hashed form never collide.
- tap / veth of NIC i of domain D: ``dt-`` / ``dv-`` + 8 hex digits of SHA-256(D) + ``-`` + i
  (i < 1000): 32 bits of hash keep two domains apart; the index keeps one domain's NICs apart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import TypeVar

IFNAME_MAX = 15  # IFNAMSIZ (16) minus the terminating NUL
MAX_NICS = 1000  # NIC indexes 0..999 fit a derived tap/veth name

_IFNAME = re.compile(r"[a-zA-Z0-9_.-]{1,15}")
_OBJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")  # a network's or domain's name
_NETNS = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,63}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_PATH = re.compile(r"(/[a-zA-Z0-9_.+-]+)+")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

_Address = TypeVar("_Address", IPv4Address, IPv6Address)
_Parsed = TypeVar("_Parsed", IPv4Address, IPv6Address, IPv4Interface, IPv6Interface)


class UnsafeValue(ValueError):
    """A value refused before it could reach a command or a file; names the field."""

    def __init__(self, field: str, value: object, why: str) -> None:
        self.field = field
        self.value = value
        self.why = why
        super().__init__(f"{field} {value!r}: {why}")


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise UnsafeValue(field, value, "must be a string")
    return value


def check_ifname(value: object, field: str = "interface") -> str:
    """A Linux interface name: 1-15 of a-z A-Z 0-9 _ . -, not "." or "..", no leading "-"."""
    text = _text(field, value)
    if len(text) > IFNAME_MAX:
        raise UnsafeValue(field, value, f"longer than {IFNAME_MAX} characters")
    if not _IFNAME.fullmatch(text):
        raise UnsafeValue(field, value, "only a-z, A-Z, 0-9, '_', '.' and '-' are allowed")
    if text in (".", ".."):
        raise UnsafeValue(field, value, "is not an interface name")
    if text.startswith("-"):
        raise UnsafeValue(field, value, "must not start with '-' (it would read as an option)")
    return text


def check_object_name(value: object, field: str = "network") -> str:
    """A network's (or domain's) name, the manifests' pattern: [a-z0-9][a-z0-9_.-]{0,62}."""
    text = _text(field, value)
    if not _OBJECT_NAME.fullmatch(text):
        raise UnsafeValue(field, value, "1 to 63 of a-z, 0-9, '_', '.', '-', starting with a "
                                        "letter or digit")
    return text


def check_netns(value: object, field: str = "netns") -> str:
    """A network namespace name (a file in /run/netns): no '/', no leading '-' or '.'."""
    text = _text(field, value)
    if not _NETNS.fullmatch(text):
        raise UnsafeValue(field, value, "1 to 64 of a-z, A-Z, 0-9, '_', '.', '-', not starting "
                                        "with '-' or '.'")
    return text


def check_mac(value: object, field: str = "mac") -> str:
    """A unicast Ethernet MAC as six colon-separated hex pairs; returned in lower case."""
    text = _text(field, value).lower()
    if not _MAC.fullmatch(text):
        raise UnsafeValue(field, value, "must be six hex pairs separated by ':'")
    if int(text[:2], 16) & 1:
        raise UnsafeValue(field, value, "is a multicast address")
    return text


def check_mtu(value: object, field: str = "mtu") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 68 <= value <= 65535:
        raise UnsafeValue(field, value, "must be an integer from 68 to 65535")
    return value


def check_lease_seconds(value: object, field: str = "leaseTime") -> int:
    """dnsmasq's minimum lease is 120 s; a year is plenty as a maximum."""
    if not isinstance(value, int) or isinstance(value, bool) or not 120 <= value <= 31536000:
        raise UnsafeValue(field, value, "must be an integer number of seconds, 120 to 31536000")
    return value


def check_path(value: object, field: str = "path") -> str:
    """An absolute path of plain characters (a-z A-Z 0-9 _ . + -), no '..' component."""
    text = str(value) if hasattr(value, "__fspath__") else _text(field, value)
    if not _PATH.fullmatch(text) or "/../" in f"{text}/" or "/./" in f"{text}/":
        raise UnsafeValue(field, value, "must be an absolute path of a-z, A-Z, 0-9, '_', '.', "
                                        "'+' and '-'")
    return text


def check_dns_domain(value: object, field: str = "domain") -> str:
    """A DNS domain: dot-separated labels of a-z 0-9 '-', at most 253 characters."""
    text = _text(field, value)
    if len(text) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in text.split(".")):
        raise UnsafeValue(field, value, "must be dot-separated labels of a-z, 0-9 and '-'")
    return text


def check_account(value: object, field: str = "user") -> str:
    """A user or group name to pass to dnsmasq (user=, group=)."""
    text = _text(field, value)
    if not _ACCOUNT.fullmatch(text):
        raise UnsafeValue(field, value, "must be a plain user or group name")
    return text


def _digest(name: str, digits: int) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:digits]


def bridge_name(network: str) -> str:
    """The default bridge of `network` (see the module docstring for the two forms)."""
    check_object_name(network)
    if len(network) <= 11:
        return check_ifname(f"dc-{network}", "bridge")
    return check_ifname(f"dc-{network[:5]}-{_digest(network, 6)}", "bridge")


def _nic_name(prefix: str, domain: str, index: int) -> str:
    check_object_name(domain, "domain")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < MAX_NICS:
        raise UnsafeValue("nic index", index, f"must be an integer from 0 to {MAX_NICS - 1}")
    return check_ifname(f"{prefix}-{_digest(domain, 8)}-{index}", "nic")


def tap_name(domain: str, index: int) -> str:
    """The tap device of a VM's NIC number `index`."""
    return _nic_name("dt", domain, index)


def veth_name(domain: str, index: int) -> str:
    """The host end of a container's veth pair for NIC number `index`."""
    return _nic_name("dv", domain, index)


def parse_interface(value: object, field: str = "address") -> IPv4Interface:
    """An IPv4 host address with its prefix ("192.168.122.1/24"): not the network or broadcast
    address of its subnet, not loopback, multicast or unspecified."""
    if "/" not in _text(field, value):
        raise UnsafeValue(field, value, "must be an address with a prefix length (a.b.c.d/n)")
    iface = _canonical(IPv4Interface, value, field)
    net = iface.network
    if net.prefixlen > 30:
        raise UnsafeValue(field, value, "the prefix must be /30 or shorter (room for guests)")
    if iface.ip in (net.network_address, net.broadcast_address):
        raise UnsafeValue(field, value, "is the network or broadcast address of its subnet")
    if iface.ip.is_loopback or iface.ip.is_multicast or iface.ip.is_unspecified:
        raise UnsafeValue(field, value, "is not a usable host address")
    return iface


def parse_host(value: object, field: str = "address") -> IPv4Address:
    """A bare IPv4 address in canonical dotted form."""
    return _canonical(IPv4Address, value, field)


def _canonical(kind: Callable[[str], _Parsed], value: object, field: str) -> _Parsed:
    """`value` parsed by `kind` and written exactly as it prints: refuses leading zeros, a
    netmask instead of a prefix, upper case or uncompressed IPv6, spaces."""
    text = _text(field, value)
    try:
        parsed = kind(text)
    except ValueError as error:
        raise UnsafeValue(field, value, str(error)) from None
    if str(parsed) != text:
        raise UnsafeValue(field, value, f"write it as {parsed}")
    return parsed


def _guest_address(iface: IPv4Interface | IPv6Interface, address: _Address,
                   field: str) -> _Address:
    net = iface.network
    if address not in net:
        raise UnsafeValue(field, str(address), f"is outside the subnet {net}")
    if address in (net.network_address, net.broadcast_address):
        raise UnsafeValue(field, str(address), "is the network or broadcast address")
    if address == iface.ip:
        raise UnsafeValue(field, str(address), "is the gateway (the bridge's own address)")
    return address


def check_dhcp_range(iface: IPv4Interface, start: object, end: object,
                     field: str = "dhcp.range") -> tuple[IPv4Address, IPv4Address]:
    """[start, end] inside the subnet, start <= end, the gateway not inside it."""
    first = _guest_address(iface, parse_host(start, f"{field}[0]"), f"{field}[0]")
    last = _guest_address(iface, parse_host(end, f"{field}[1]"), f"{field}[1]")
    return _ordered(iface.ip, first, last, field)


def _ordered(gateway: _Address, first: _Address, last: _Address,
             field: str) -> tuple[_Address, _Address]:
    if first > last:
        raise UnsafeValue(field, f"{first}-{last}", "the start comes after the end")
    if first <= gateway <= last:
        raise UnsafeValue(field, f"{first}-{last}", f"contains the gateway {gateway}")
    return first, last


def check_reserved(iface: IPv4Interface, value: object, field: str = "ip") -> IPv4Address:
    """A static reservation's address: in the subnet, not the gateway (the range may exclude it:
    dnsmasq serves reservations anywhere in a subnet it has a dhcp-range for)."""
    return _guest_address(iface, parse_host(value, field), field)


def parse_interface6(value: object, field: str = "address") -> IPv6Interface:
    """An IPv6 host address with a /64 prefix ("fd00:42::1/64"), written canonically (lower
    case, zeros compressed): router advertisements for SLAAC need a /64, and a text in another
    form would differ from what the kernel reports. Not the prefix's subnet-router anycast
    address (all host bits zero), not loopback, multicast, unspecified, link-local (the kernel
    gives the bridge one of those itself) or IPv4-mapped."""
    if "/" not in _text(field, value):
        raise UnsafeValue(field, value, "must be an address with a prefix length (such as "
                                        "fd00:42::1/64)")
    iface = _canonical(IPv6Interface, value, field)
    if iface.network.prefixlen != 64:
        raise UnsafeValue(field, value, "the prefix must be /64 (SLAAC and router "
                                        "advertisements need one)")
    address = iface.ip
    if address == iface.network.network_address:
        raise UnsafeValue(field, value, "is the subnet-router anycast address of its prefix")
    if (address.is_loopback or address.is_multicast or address.is_unspecified
            or address.is_link_local or address.ipv4_mapped is not None):
        raise UnsafeValue(field, value, "is not a usable host address")
    return iface


def parse_host6(value: object, field: str = "address") -> IPv6Address:
    """A bare IPv6 address in canonical form (lower case, zeros compressed)."""
    return _canonical(IPv6Address, value, field)


def check_dhcp_range6(iface: IPv6Interface, start: object, end: object,
                      field: str = "dhcp.range") -> tuple[IPv6Address, IPv6Address]:
    """A DHCPv6 [start, end] inside the prefix, start <= end, the gateway not inside it."""
    first = _guest_address(iface, parse_host6(start, f"{field}[0]"), f"{field}[0]")
    last = _guest_address(iface, parse_host6(end, f"{field}[1]"), f"{field}[1]")
    return _ordered(iface.ip, first, last, field)
