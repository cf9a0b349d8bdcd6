"""NAT and forwarding of one managed network, in an nftables table of its own.

Role: generate the network's ruleset (`ruleset`, a pure function, golden-tested), apply it
atomically (`apply`: one `nft -f -` transaction that creates, empties and refills the table, so
a reader never sees half a ruleset), observe it and delete it. Callers: the future network
reconciler (and the tests). Never: lists, flushes or edits another table — every command names
``table inet domctl_<network>``; nothing here runs `flush ruleset`.

Layout: one table per network (``inet domctl_<network>``), not one shared ``domctl`` table with
per-network chains. A network's apply and delete are then one table each, with no
read-modify-write of a table other networks share and no ordering between their chains; a stray
or half-removed network is visible by name in `nft list tables`. Per-network tables compose
because a packet must pass every base chain of a hook: each table accepts only what concerns its
own bridge and drops only what enters or leaves its own bridge, so traffic from one network to
another's bridge is dropped by the destination's table (isolation), while traffic unrelated to
the bridge falls through its `policy accept` untouched.

The forward chain: traffic inside the bridge is accepted; with NAT, traffic from the subnet out
of the bridge is accepted and replies to it (conntrack established/related) come back; IPv6
from the network's prefix is routed out the same way (no NAT for IPv6, as libvirt does); anything
else entering or leaving the bridge is dropped (a guest spoofing another source, a host behind
another interface opening connections to guests). The postrouting chain masquerades the subnet
when it leaves through any other interface. The input chain drops packets for the bridge's own
addresses that arrive on any other interface but lo: a guest on another network cannot reach
this one's gateway through the host (the forward chain does not see those, they are local).
IPv4 forwarding itself (the net.ipv4.ip_forward sysctl) is the network reconciler's.

The table carries a comment with a digest of the ruleset it was made from (`digest`), so the
reconciler can tell "present and as declared" from one `nft list` without parsing rules, and
leaves an unchanged table alone after a controller restart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface

from reconcilers.net.command import Place, run
from reconcilers.net.errors import NetError
from reconcilers.net.names import UnsafeValue, check_ifname, check_object_name

FAMILY = "inet"


def table_name(network: str) -> str:
    return f"domctl_{check_object_name(network)}"


@dataclass(frozen=True)
class Rules:
    """What a network's table enforces."""

    network: str
    bridge: str
    ipv4: IPv4Interface | None = None  # the bridge's address and subnet
    nat: bool = False
    ipv6: IPv6Interface | None = None

    def __post_init__(self) -> None:
        check_object_name(self.network)
        check_ifname(self.bridge, "bridge")
        if self.ipv4 is not None and not isinstance(self.ipv4, IPv4Interface):
            raise UnsafeValue("ipv4", self.ipv4, "must be an IPv4Interface")
        if self.ipv6 is not None and not isinstance(self.ipv6, IPv6Interface):
            raise UnsafeValue("ipv6", self.ipv6, "must be an IPv6Interface")
        if self.nat and self.ipv4 is None:
            raise UnsafeValue("nat", self.nat, "needs an IPv4 address")


def _body(rules: Rules) -> list[str]:
    br = f'"{rules.bridge}"'
    forward = [f"iifname {br} oifname {br} accept"]
    local = []
    if rules.ipv4 is not None:
        subnet = rules.ipv4.network
        if rules.nat:
            forward += [f"iifname {br} ip saddr {subnet} accept",
                        f"oifname {br} ip daddr {subnet} ct state established,related accept"]
        local.append(f'iifname != {{ {br}, "lo" }} ip daddr {rules.ipv4.ip} drop')
    if rules.ipv6 is not None:
        prefix = rules.ipv6.network
        forward += [f"iifname {br} ip6 saddr {prefix} accept",
                    f"oifname {br} ip6 daddr {prefix} ct state established,related accept"]
        local.append(f'iifname != {{ {br}, "lo" }} ip6 daddr {rules.ipv6.ip} drop')
    forward += [f"iifname {br} drop", f"oifname {br} drop"]
    lines = ["\tchain forward {",
             "\t\ttype filter hook forward priority filter; policy accept;",
             *(f"\t\t{rule}" for rule in forward), "\t}"]
    if local:
        lines += ["\tchain input {", "\t\ttype filter hook input priority filter; policy accept;",
                  *(f"\t\t{rule}" for rule in local), "\t}"]
    if rules.nat and rules.ipv4 is not None:
        lines += ["\tchain postrouting {",
                  "\t\ttype nat hook postrouting priority srcnat; policy accept;",
                  f"\t\tip saddr {rules.ipv4.network} oifname != {br} masquerade", "\t}"]
    return lines


def digest(rules: Rules) -> str:
    """16 hex digits naming the ruleset; kept in the table's comment."""
    return hashlib.sha256("\n".join(_body(rules)).encode()).hexdigest()[:16]


def ruleset(rules: Rules) -> str:
    """The nft script that (re)defines the network's table, whole, in one transaction."""
    table = f"{FAMILY} {table_name(rules.network)}"
    lines = [
        f"# generated by domctl for network {rules.network}: replaced whole on every apply",
        f"table {table}",
        f"delete table {table}",
        f"table {table} {{",
        f'\tcomment "domctl {digest(rules)}"',
        *_body(rules),
        "}",
    ]
    return "\n".join(lines) + "\n"


async def apply(place: Place, rules: Rules) -> None:
    """Replace the network's table with `ruleset(rules)`, atomically."""
    await run(place.inside("nft", "-f", "-"), stdin=ruleset(rules),
              subject=table_name(rules.network), operation="apply nftables ruleset")


async def observe(place: Place, network: str) -> str | None:
    """The table as `nft list table` prints it, or None when it does not exist."""
    table = table_name(network)
    done = await run(place.inside("nft", "list", "table", FAMILY, table), subject=table,
                     operation="list nftables table", check=False)
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return None
        raise NetError(table, "list nftables table", done.stderr.strip())
    return done.stdout


async def is_current(place: Place, rules: Rules) -> bool:
    """The table exists and was made from exactly `rules` (its comment says so)."""
    listed = await observe(place, rules.network)
    return listed is not None and f'comment "domctl {digest(rules)}"' in listed


async def delete(place: Place, network: str) -> bool:
    """Delete the network's table (only it); False when it was already gone."""
    if await observe(place, network) is None:
        return False
    table = table_name(network)
    await run(place.inside("nft", "delete", "table", FAMILY, table), subject=table,
              operation="delete nftables table")
    return True
