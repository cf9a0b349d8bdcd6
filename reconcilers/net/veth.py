"""A running container's veth pairs, changed from the host, and the addresses inside it.

Role: what the lxc driver does to a running container's NICs after LXC made those of its
config at the start: `plug` a new NIC (one `ip link add` makes the pair, puts the host end on
the bridge and creates the peer directly inside the container's network namespace under its
final name and MAC: no moment where it exists half-made on the host), `unplug` one (deleting
the host end takes the pair away), `set_carrier` (the host end up or down: the container sees
its NIC lose or regain its carrier, which it cannot override from inside), and `addresses`
(`ip -json address show` run inside the container's namespace by nsenter with the host's
iproute2: the container's own tools may have no JSON, or no ip at all). Callers: reconcilers/lxc.

Host ends are handled in the caller's network namespace (the controller's, where LXC's
monitor made the container's other veths); the container's side is reached through its init
pid (`netns PID`, `nsenter --target PID --net`). Never: runs a shell, or passes a value that
names.py has not checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from reconcilers.net.command import run
from reconcilers.net.errors import NetError
from reconcilers.net.names import UnsafeValue, check_ifname, check_mac, check_mtu

ADDRESS_TIMEOUT = 5.0


def _pid(pid: int) -> str:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        raise UnsafeValue("pid", pid, "must be the pid of a container's init (> 1)")
    return str(pid)


def _inside(pid: int, *argv: str) -> list[str]:
    """`argv` run in the network namespace of process `pid` (and in no other of its)."""
    return ["nsenter", f"--target={_pid(pid)}", "--net", "--", *argv]


async def plug(veth: str, bridge: str, mtu: int, pid: int, guest: str, mac: str,
               carrier: bool) -> None:
    """A veth pair: `veth` on `bridge` (up when `carrier`), its peer `guest` with `mac` inside
    the namespace of `pid`, up. A leftover `veth` (of an attempt that failed) is replaced."""
    veth, bridge = check_ifname(veth, "veth"), check_ifname(bridge, "bridge")
    guest, mac, size = check_ifname(guest, "guest interface"), check_mac(mac), str(check_mtu(mtu))
    await unplug(veth)
    await run(["ip", "link", "add", "name", veth, "mtu", size, "master", bridge,
               *(["up"] if carrier else []),
               "type", "veth", "peer", "name", guest, "address", mac, "mtu", size,
               "netns", _pid(pid)], subject=veth, operation="add veth pair")
    try:
        await run(_inside(pid, "ip", "link", "set", "dev", guest, "up"), subject=veth,
                  operation=f"set {guest} up in the container")
    except NetError:
        await unplug(veth)
        raise


async def unplug(veth: str) -> bool:
    """Delete the pair of host end `veth`; False when there was none."""
    veth = check_ifname(veth, "veth")
    done = await run(["ip", "link", "del", "dev", veth], subject=veth,
                     operation="delete veth pair", check=False)
    if done.returncode == 0:
        return True
    if "Cannot find device" in done.stderr or "does not exist" in done.stderr:
        return False
    raise NetError(veth, "delete veth pair", done.stderr.strip())


async def set_carrier(veth: str, up: bool) -> None:
    """The host end `veth` up or down: the container's end gains or loses its carrier."""
    veth = check_ifname(veth, "veth")
    await run(["ip", "link", "set", "dev", veth, "up" if up else "down"], subject=veth,
              operation="set link " + ("up" if up else "down"))


async def addresses(pid: int, timeout: float = ADDRESS_TIMEOUT) -> dict[str, tuple[str, ...]]:
    """MAC → the addresses with prefix of each interface in the namespace of `pid`."""
    done = await run(_inside(pid, "ip", "-json", "address", "show"), subject=f"pid {pid}",
                     operation="read addresses", timeout=timeout)
    try:
        return parse_addresses(json.loads(done.stdout))
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise NetError(f"pid {pid}", "read addresses", f"unexpected ip output: {error}") \
            from None


def parse_addresses(entries: Any) -> dict[str, tuple[str, ...]]:
    """`ip -json address show` → MAC → ("10.0.0.5/24", "fd00::5/64"): IPv4 and IPv6 of every
    Ethernet interface, without lo (no MAC of its own) and link-local (fe80::/10) addresses."""
    found: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("link_type") != "ether":
            continue
        mac = str(entry.get("address", "")).lower()
        listed = tuple(f"{info['local']}/{info['prefixlen']}"
                       for info in entry.get("addr_info", ())
                       if info.get("family") in ("inet", "inet6") and info.get("scope") != "link")
        found[mac] = found.get(mac, ()) + listed
    return found
