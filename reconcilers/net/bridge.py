"""A managed Linux bridge: ensured (created or repaired), observed and deleted via iproute2.

Role: the bridge of one managed network with its IPv4 and IPv6 addresses, MTU and admin state
up. `ensure` is idempotent and repairs drift (a deleted bridge, a changed MTU, a removed or
extra address, the link set down). IPv6 link-local addresses are the kernel's and ignored; the
declared IPv6 address is added with `nodad` (the bridge is the prefix's only router, and DAD
would hold the address "tentative" for a second or two, while dnsmasq cannot bind it).
Callers: the network reconciler (reconcilers/net/network.py) and the tests.
Never: touches an interface that is not a bridge marked as ours — ours carry the interface
alias ``domctl:<network>`` (ip link ... alias), so a same-named bridge someone else made is
refused with a NetError, not adopted or deleted.

iproute2, not pyroute2: `ip -json -details address show` gives the whole state in one read, the
commands are exactly what an operator would type to check or repair by hand (and what the logs
and errors show), iproute2 is already on every Debian host (no new dependency, nothing
netlink-level loaded into the daemon), and `ip -n NS` runs the same code inside a network
namespace without setns in the daemon's own threads. The price is a fork per command, a few
milliseconds, paid only when a network is reconciled.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

from reconcilers.net.command import Place, run, show_interface
from reconcilers.net.errors import NetError
from reconcilers.net.names import check_ifname, check_mtu, check_object_name

ALIAS_PREFIX = "domctl:"


@dataclass(frozen=True)
class BridgeSpec:
    """What a network asks of its bridge."""

    network: str  # the owner: the alias says domctl:<network>
    name: str
    address: IPv4Interface | None  # None: no IPv4 address
    mtu: int = 1500
    address6: IPv6Interface | None = None

    def __post_init__(self) -> None:
        check_object_name(self.network)
        check_ifname(self.name, "bridge")
        check_mtu(self.mtu)

    @property
    def alias(self) -> str:
        return ALIAS_PREFIX + self.network


@dataclass(frozen=True)
class BridgeState:
    """What `ip -json -details address show` says about an interface."""

    name: str
    kind: str | None  # "bridge", "veth", None for a plain device
    up: bool  # administratively (IFF_UP), not "has carrier"
    mtu: int
    alias: str | None
    addresses: tuple[IPv4Interface, ...]  # IPv4, in the kernel's order
    addresses6: tuple[IPv6Interface, ...] = ()  # IPv6 but link-local

    def owned_by(self, network: str) -> bool:
        return self.kind == "bridge" and self.alias == ALIAS_PREFIX + network

    def matches(self, spec: BridgeSpec) -> bool:
        return (self.owned_by(spec.network) and self.up and self.mtu == spec.mtu
                and self.addresses == _wanted(spec.address)
                and self.addresses6 == _wanted(spec.address6))


def _wanted(address: IPv4Interface | IPv6Interface | None) -> tuple[Any, ...]:
    return () if address is None else (address,)


def _state(entry: dict[str, Any]) -> BridgeState:
    info = entry.get("addr_info", [])
    addresses = tuple(IPv4Interface(f"{a['local']}/{a['prefixlen']}")
                      for a in info if a.get("family") == "inet")
    addresses6 = tuple(IPv6Interface(f"{a['local']}/{a['prefixlen']}") for a in info
                       if a.get("family") == "inet6" and a.get("scope") != "link")
    return BridgeState(name=entry["ifname"], kind=entry.get("linkinfo", {}).get("info_kind"),
                       up="UP" in entry.get("flags", []), mtu=int(entry["mtu"]),
                       alias=entry.get("ifalias"), addresses=addresses, addresses6=addresses6)


async def observe(place: Place, name: str) -> BridgeState | None:
    """The interface `name` as it is now, or None when there is no such interface."""
    check_ifname(name, "bridge")
    entry = await show_interface(place, name, "address", "observe bridge")
    return _state(entry) if entry is not None else None


async def ensure(place: Place, spec: BridgeSpec) -> BridgeState:
    """Make the bridge exist as `spec` says; a no-op (one read) when it already does."""
    state = await observe(place, spec.name)
    if state is not None and state.matches(spec):
        return state
    if state is None:
        await run(place.ip("link", "add", "name", spec.name, "type", "bridge"),
                  subject=spec.name, operation="create bridge")
        await run(place.ip("link", "set", "dev", spec.name, "alias", spec.alias),
                  subject=spec.name, operation="mark bridge")
    elif not state.owned_by(spec.network):
        what = f"a {state.kind}" if state.kind else "a device"
        raise NetError(spec.name, "ensure bridge",
                       f"exists as {what} not managed by domctl for network "
                       f"{spec.network!r} (alias {state.alias!r}); refusing to touch it")
    await run(place.ip("link", "set", "dev", spec.name, "mtu", str(spec.mtu), "up"),
              subject=spec.name, operation="set bridge mtu and up")
    if spec.address is not None:
        await run(place.ip("address", "replace", str(spec.address), "dev", spec.name),
                  subject=spec.name, operation="set bridge address")
    if spec.address6 is not None:
        await run(place.ip("address", "replace", str(spec.address6), "dev", spec.name,
                           "nodad"), subject=spec.name, operation="set bridge IPv6 address")
    stale = (() if state is None else
             (*(a for a in state.addresses if a != spec.address),
              *(a for a in state.addresses6 if a != spec.address6)))
    for extra in stale:
        await run(place.ip("address", "del", str(extra), "dev", spec.name),
                  subject=spec.name, operation="remove stale bridge address")
    final = await observe(place, spec.name)
    if final is None or not final.matches(spec):
        raise NetError(spec.name, "ensure bridge", f"still differs after repair: {final}")
    return final


async def delete(place: Place, network: str, name: str) -> bool:
    """Delete our bridge `name`; False when it was already gone. Refuses one not ours."""
    state = await observe(place, name)
    if state is None:
        return False
    if not state.owned_by(network):
        raise NetError(name, "delete bridge",
                       f"not managed by domctl for network {network!r} (kind {state.kind!r}, "
                       f"alias {state.alias!r}); refusing to delete it")
    await run(place.ip("link", "del", "dev", name), subject=name, operation="delete bridge")
    return True
