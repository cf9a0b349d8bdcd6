"""A VM NIC's tap device: created on a bridge, observed, repaired and deleted via iproute2.

Role: the host end of a qemu NIC in mode network or bridge. The qemu driver ensures one tap per
such NIC before qemu starts (and before a hotplug), hands it to qemu by name (`-netdev
tap,ifname=...`), and deletes it when the domain stops. The taps are persistent
(`ip tuntap add`): they outlive a qemu killed by anyone, so a stop of any kind ends with
`sweep`, which finds the domain's taps by their mark, never by a name pattern.

Ours are marked by the interface alias ``domctl:tap:<domain>:<index>`` (as bridge.py marks its
bridges), so a same-named device someone else made is refused with a NetError, never reused or
deleted. A leftover tap of ours (a crash between a start and its stop) is reused and repaired
(its bridge, MTU and up state). The MAC is not set here: it is the guest's, on qemu's device;
the tap's own MAC is the kernel's random one. The tap takes the bridge's MTU.

Creation is two commands (ip tuntap add has no alias option): a crash between them leaves an
unmarked tap that is then refused like a foreign one (the message says to delete it by hand).
Callers: the qemu driver (reconcilers/qemu/nics.py) and the tests. Never: touches a device
without our mark, or sets anything on the bridge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from reconcilers.net import bridge
from reconcilers.net.command import Place, run, show_interface
from reconcilers.net.errors import NetError
from reconcilers.net.names import check_ifname, check_object_name, tap_name

ALIAS_PREFIX = "domctl:tap:"


@dataclass(frozen=True)
class TapSpec:
    """What a NIC asks of its tap: whose it is, and the bridge it joins."""

    domain: str
    index: int
    bridge: str
    vnet_hdr: bool = False  # for vhost-net: the virtio-net header on the tap's queue

    def __post_init__(self) -> None:
        check_ifname(self.bridge, "bridge")

    @property
    def name(self) -> str:
        return tap_name(self.domain, self.index)  # checks the domain name and the index

    @property
    def alias(self) -> str:
        return mark(self.domain, self.index)


def mark(domain: str, index: int) -> str:
    """The alias that makes the tap of `domain`'s NIC `index` ours."""
    return f"{ALIAS_PREFIX}{domain}:{index}"


@dataclass(frozen=True)
class TapState:
    """What `ip -json -details link show` says about an interface of that name."""

    name: str
    kind: str | None  # "tun" for a tun/tap device
    mode: str | None  # "tap" or "tun"
    master: str | None  # the bridge it is a port of
    up: bool  # administratively
    mtu: int
    alias: str | None

    def owned_by(self, spec: TapSpec) -> bool:
        return (self.kind, self.mode, self.alias) == ("tun", "tap", spec.alias)

    def matches(self, spec: TapSpec, mtu: int) -> bool:
        return (self.owned_by(spec) and self.master == spec.bridge and self.up
                and self.mtu == mtu)


def _state(entry: dict[str, Any]) -> TapState:
    info = entry.get("linkinfo", {})
    return TapState(name=entry["ifname"], kind=info.get("info_kind"),
                    mode=info.get("info_data", {}).get("type"), master=entry.get("master"),
                    up="UP" in entry.get("flags", []), mtu=int(entry["mtu"]),
                    alias=entry.get("ifalias"))


async def observe(place: Place, name: str) -> TapState | None:
    """The interface `name` as it is now, or None when there is none."""
    check_ifname(name, "tap")
    entry = await show_interface(place, name, "link", "observe tap")
    return _state(entry) if entry is not None else None


async def ensure(place: Place, spec: TapSpec) -> TapState:
    """Make the tap exist as `spec` says: a port of its bridge, the bridge's MTU, up."""
    name = spec.name
    port_of = await bridge.observe(place, spec.bridge)
    if port_of is None or port_of.kind != "bridge":
        what = "does not exist" if port_of is None else f"is a {port_of.kind or 'device'}"
        raise NetError(name, "ensure tap", f"bridge {spec.bridge!r} {what}")
    state = await observe(place, name)
    if state is not None and state.matches(spec, port_of.mtu):
        return state
    if state is None:
        await run(place.ip("tuntap", "add", "dev", name, "mode", "tap",
                           *(("vnet_hdr",) if spec.vnet_hdr else ())),
                  subject=name, operation="create tap")
        await run(place.ip("link", "set", "dev", name, "alias", spec.alias),
                  subject=name, operation="mark tap")
    elif not state.owned_by(spec):
        raise NetError(name, "ensure tap",
                       f"exists as a {state.kind or 'device'} ({state.mode or '-'}) not marked "
                       f"as domctl's for {spec.domain} NIC {spec.index} (alias {state.alias!r}); "
                       "refusing to touch it (delete it by hand if it is a leftover)")
    await run(place.ip("link", "set", "dev", name, "mtu", str(port_of.mtu), "master",
                       spec.bridge, "up"), subject=name, operation="attach tap to bridge")
    final = await observe(place, name)
    if final is None or not final.matches(spec, port_of.mtu):
        raise NetError(name, "ensure tap", f"still differs after repair: {final}")
    return final


async def delete(place: Place, domain: str, index: int) -> bool:
    """Delete the tap of `domain`'s NIC `index`; False when it was already gone. Refuses a
    device not marked as that NIC's."""
    name, alias = tap_name(domain, index), mark(domain, index)
    state = await observe(place, name)
    if state is None:
        return False
    if (state.kind, state.mode, state.alias) != ("tun", "tap", alias):
        raise NetError(name, "delete tap", f"not marked as domctl's (kind {state.kind!r}, "
                                           f"alias {state.alias!r}); refusing to delete it")
    await _remove(place, name)
    return True


async def _remove(place: Place, name: str) -> None:
    """`ip link del`; a tap already gone (a concurrent sweep) is not an error."""
    done = await run(place.ip("link", "del", "dev", name), subject=name,
                     operation="delete tap", check=False)
    if done.returncode != 0 and "Cannot find device" not in done.stderr:
        raise NetError(name, "delete tap", done.stderr.strip() or f"exit {done.returncode}")


async def owned(place: Place, domain: str) -> list[TapState]:
    """Every tap marked as one of `domain`'s, found by the mark (whatever its index)."""
    check_object_name(domain, "domain")
    done = await run(place.ip("-json", "-details", "link", "show", "type", "tun"),
                     subject=domain, operation="list taps")
    mark = f"{ALIAS_PREFIX}{domain}:"
    return [state for state in map(_state, json.loads(done.stdout or "[]"))
            if state.kind == "tun" and state.mode == "tap"
            and (state.alias or "").startswith(mark)]


async def sweep(place: Place, domain: str, keep: frozenset[str] = frozenset()) -> list[str]:
    """Delete every tap of `domain` but those named in `keep`; the names deleted."""
    gone = []
    for state in await owned(place, domain):
        if state.name not in keep:
            await _remove(place, state.name)
            gone.append(state.name)
    return gone
