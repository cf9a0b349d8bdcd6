"""What the CLI shows of networks and of a domain's devices: `get networks`, the Interfaces
and Disks sections of `describe`; imported only by those. Imports only render.py.
"""

from __future__ import annotations

from controller.cli.render import age, cell, size

TYPE_CHECKING = False  # typing's constant without typing's import (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    Document = dict[str, Any]

NETWORK_COLUMNS = ["NAME", "STATE", "BRIDGE", "IPV4", "IPV6", "NAT", "LEASES", "USERS", "AGE",
                   "MESSAGE"]
# The network condition whose message explains it best, first match wins.
_NETWORK_HEADLINES = (("RemovalBlocked", "True"), ("ManifestValid", "False"),
                      ("Ready", "False"), ("Ready", "True"))


def network_row(doc: Document, now: float) -> list[str]:
    users = doc.get("users") or []
    return [cell(doc.get("name")), cell(doc.get("state")), cell(doc.get("bridge")),
            cell(doc.get("ipv4")), cell(doc.get("ipv6")), "yes" if doc.get("nat") else "no",
            str(len(doc.get("leases") or ())), ",".join(users) or "-", age(doc.get("since"), now),
            network_headline(doc) or "-"]


def network_headline(doc: Document) -> str:
    conditions = {(c.get("type"), c.get("status")): c for c in doc.get("conditions") or ()}
    for key in _NETWORK_HEADLINES:
        message = conditions.get(key, {}).get("message")
        if message:
            return str(message)
    return ""


def disk_rows(disks: list[Document]) -> list[list[str]]:
    """`describe`'s Disks table: what `virsh domblklist` and `domblkinfo` show."""
    return [[cell(disk.get("name")), cell(disk.get("device")), cell(disk.get("source")),
             cell(disk.get("image")), cell(disk.get("format")), size(disk.get("virtualSize")),
             size(disk.get("actualSize")) if "problem" not in disk else cell(disk["problem"])]
            for disk in disks]


def interface_rows(status: Document) -> list[list[str]]:
    """`describe`'s Interfaces table: what `virsh domifaddr` shows."""
    return [[cell(nic.get("name") or "user"), cell(nic.get("mac")),
             cell(nic.get("network") or nic.get("bridge")),
             ", ".join(nic.get("addresses") or ()) or "-"]
            for nic in status.get("interfaces") or ()]
