"""The persisted books of managed networks: one record and one status document per network.

The record (`<state_dir>/networks/records/NAME.json`) is what the engine must still know
after a restart: the spec it last applied (so a network whose manifest vanished while the
controller was down is still taken down, bridge and all), its generation and whether it was
up. The status document (`<state_dir>/networks/status/NAME.json`) is what `domctl get
networks` and `-o json` show; like a domain's, it is an output the engine never reads back.
Both are JsonDir documents: a damaged file is quarantined and treated as absent.

Public surface:
    NetworkRecord, LeaseStatus, NetworkStatus (to_dict)
    NetworkStore(state_dir): record(name), save(record), records(), status(name),
        publish(status), statuses(), remove(name), get_document(name)
    NoSuchNetwork(name)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.state.jsondir import Damaged, JsonDir
from controller.state.status import Condition, ConditionType
from reconcilers.errors import TerminalError
from reconcilers.model import Metadata, SourceRef, to_plain
from reconcilers.net.model import Network, NetworkSpec


@dataclass(frozen=True)
class NetworkRecord:
    name: str
    bridge: str
    spec: NetworkSpec  # as last applied
    generation: str
    file: str = ""  # the manifest file it was declared in
    active: bool = False
    since: float | None = None  # wall-clock seconds of the last change of `active`
    conditions: tuple[Condition, ...] = ()  # as last shown (their transition times)

    def as_network(self) -> Network:
        """The network as last applied (its file is invalid, or it is in a conflict)."""
        return Network(Metadata(self.name), self.spec, SourceRef(self.file, 1))


@dataclass(frozen=True)
class LeaseStatus:
    mac: str
    address: str
    hostname: str | None
    expires: str | None  # RFC 3339; None: an infinite lease
    domain: str | None  # the domain whose NIC has this MAC, when one does


@dataclass(frozen=True)
class NetworkStatus:
    """The status document of one network; field names are the JSON keys."""

    name: str
    state: str  # "active" (bridge, rules and dnsmasq in place) or "inactive"
    bridge: str
    generation: str | None  # None: the manifest is gone (being removed)
    observedGeneration: str | None  # noqa: N815
    since: str | None
    ipv4: str | None = None
    ipv6: str | None = None
    nat: bool = False
    dnsmasqPid: int | None = None  # noqa: N815
    users: tuple[str, ...] = ()  # running domains with a NIC on it
    leases: tuple[LeaseStatus, ...] = ()
    conditions: tuple[Condition, ...] = ()
    kind: str = "Network"

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = to_plain(self)
        return plain

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class NoSuchNetwork(TerminalError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no network named {name}")


class NetworkStore:
    def __init__(self, state_dir: Path) -> None:
        self._records = JsonDir(state_dir / "networks" / "records")
        self._statuses = JsonDir(state_dir / "networks" / "status")
        self._shown: dict[str, NetworkStatus] = {}

    def record(self, name: str) -> NetworkRecord | None:
        try:
            return self._records.read_as(NetworkRecord, name, lambda r: _named(r.name, name))
        except Damaged:
            return None

    def records(self) -> dict[str, NetworkRecord]:
        found = {name: self.record(name) for name in self._records.names()}
        return {name: record for name, record in found.items() if record is not None}

    def save(self, record: NetworkRecord) -> None:
        if self.record(record.name) != record:
            self._records.write(record.name, to_plain(record))

    async def publish(self, status: NetworkStatus) -> None:
        """Write the status document (in a worker thread) when it changed."""
        if self._shown.get(status.name) == status:
            return
        await asyncio.to_thread(self._statuses.write, status.name, status.to_dict())
        self._shown[status.name] = status

    def status(self, name: str) -> NetworkStatus | None:
        if name in self._shown:
            return self._shown[name]
        try:
            return self._statuses.read_as(NetworkStatus, name, lambda s: _named(s.name, name))
        except Damaged:
            return None

    def statuses(self) -> list[NetworkStatus]:
        found = (self.status(name) for name in self._statuses.names())
        return [status for status in found if status is not None]

    def get_document(self, name: str) -> dict[str, Any]:
        status = self.status(name)
        if status is None:
            raise NoSuchNetwork(name)
        return status.to_dict()

    def remove(self, name: str) -> None:
        self._shown.pop(name, None)
        self._records.remove(name)
        self._statuses.remove(name)


def _named(found: str, name: str) -> None:
    if found != name:
        raise ValueError(f"names network {found!r}, not {name!r}")
