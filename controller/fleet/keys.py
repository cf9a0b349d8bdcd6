"""The fleet's keys in etcd, all under one prefix (default `/domctl/v1/`), and their values.

    <prefix>manifests/<file>     ManifestRecord: one published file, its name and whole text
                                 (so a host reports `file:line:column` like the directory source)
    <prefix>published            PublishRecord: the last publish; every publish compares and
                                 rewrites it, so two publishes can never interleave
    <prefix>hosts/<name>         HostRecord, under the host's lease: capacity, drivers, labels;
                                 gone when the lease expires (the host is NotReady)
    <prefix>cordons/<name>       Cordon {drain, at}, present while the host is cordoned (drain:
                                 its domains are moved off too): an operator's decision, so it
                                 is no part of the leased record and outlives the lease
    <prefix>placements/<domain>  Placement {host, epoch, previous}, written by the scheduler with
                                 a compare-and-swap (the epoch grows at each move; `previous`:
                                 the host it left, which must release it first when alive)
    <prefix>scheduling/<domain>  Scheduling {kind, message, at}: why a domain is unplaced or
                                 stuck on an unreachable host (the scheduler's last word on it)
    <prefix>status/<domain>      the status document of the host running the domain, with
                                 `host` and `epoch` added
    <prefix>scheduler            Leader {host, at}: the scheduler leader, under its lease (the
                                 election: put only while absent)

Values are JSON objects with camelCase fields, like the manifests and the status documents. A
value that does not parse raises ValueError naming the key. The `v1` in the prefix is the
layout's version: a layout change gets a new prefix, never an in-place migration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DEFAULT_PREFIX = "/domctl/v1/"


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"an etcd prefix starts and ends with '/': {self.prefix!r}")

    @property
    def manifests(self) -> str:
        return f"{self.prefix}manifests/"

    def manifest(self, file: str) -> str:
        return f"{self.manifests}{file}"

    def file_of(self, key: str) -> str:
        """The file name of a key under `manifests`."""
        if not key.startswith(self.manifests):
            raise ValueError(f"not a manifest key: {key!r}")
        return key[len(self.manifests):]

    @property
    def published(self) -> str:
        return f"{self.prefix}published"

    @property
    def hosts(self) -> str:
        return f"{self.prefix}hosts/"

    def host(self, name: str) -> str:
        return f"{self.hosts}{name}"

    def cordon(self, name: str) -> str:
        return f"{self.cordons}{name}"

    @property
    def cordons(self) -> str:
        return f"{self.prefix}cordons/"

    @property
    def placements(self) -> str:
        return f"{self.prefix}placements/"

    def placement(self, domain: str) -> str:
        return f"{self.placements}{domain}"

    @property
    def schedulings(self) -> str:
        return f"{self.prefix}scheduling/"

    def scheduling(self, domain: str) -> str:
        return f"{self.schedulings}{domain}"

    @property
    def statuses(self) -> str:
        return f"{self.prefix}status/"

    def status(self, domain: str) -> str:
        return f"{self.statuses}{domain}"

    @staticmethod
    def last(key: str) -> str:
        """The name a key ends with (a host's, a domain's)."""
        return key.rsplit("/", 1)[-1]

    @property
    def scheduler(self) -> str:
        return f"{self.prefix}scheduler"


def json_object(key: str, value: bytes) -> dict[str, Any]:
    """The JSON object stored at `key`; ValueError naming the key for anything else."""
    try:
        data = json.loads(value)
    except ValueError as err:
        raise ValueError(f"{key}: not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{key}: not a JSON object")
    return data


def _encode(data: Mapping[str, object]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ManifestRecord:
    """One published manifest file: its text, and the names it declares (for the prune guard
    of the next publish, without parsing every text again)."""

    file: str
    text: str
    domains: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return _encode({"file": self.file, "text": self.text, "domains": list(self.domains),
                        "networks": list(self.networks)})

    @classmethod
    def decode(cls, key: str, value: bytes) -> ManifestRecord:
        data = json_object(key, value)
        try:
            return cls(file=str(data["file"]), text=str(data["text"]),
                       domains=tuple(map(str, data.get("domains", ()))),
                       networks=tuple(map(str, data.get("networks", ()))))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{key}: not a manifest record: {err}") from None


@dataclass(frozen=True)
class PublishRecord:
    """Who published last, from where, and how many files."""

    source: str
    files: int
    at: str  # RFC 3339

    def encode(self) -> bytes:
        return _encode({"source": self.source, "files": self.files, "at": self.at})


@dataclass(frozen=True)
class HostRecord:
    """What a host offers, as it registered under its lease."""

    name: str
    cpus: int
    memory_mib: int
    drivers: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def encode(self) -> bytes:
        return _encode({"name": self.name, "cpus": self.cpus, "memoryMiB": self.memory_mib,
                        "drivers": list(self.drivers), "labels": dict(self.labels)})

    @classmethod
    def decode(cls, key: str, value: bytes) -> HostRecord:
        data = json_object(key, value)
        try:
            return cls(name=str(data["name"]), cpus=int(data["cpus"]),
                       memory_mib=int(data["memoryMiB"]),
                       drivers=tuple(map(str, data.get("drivers", ()))),
                       labels=MappingProxyType({str(k): str(v)
                                                for k, v in data.get("labels", {}).items()}))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{key}: not a host record: {err}") from None


@dataclass(frozen=True)
class Placement:
    """Where a domain runs: the host, and the epoch (grows at each placement, so a host that
    was cut off sees that the domain it still runs now lives elsewhere). `previous`: the host
    it was moved from; while that host holds its lease, the new one starts the domain only
    once the previous one's status says it is shut off there (a failover comes only after the
    previous host's lease expired, and that host fenced itself before)."""

    host: str
    epoch: int
    previous: str | None = None

    def encode(self) -> bytes:
        return _encode({"host": self.host, "epoch": self.epoch, "previous": self.previous})

    @classmethod
    def decode(cls, key: str, value: bytes) -> Placement:
        data = json_object(key, value)
        try:
            previous = data.get("previous")
            return cls(host=str(data["host"]), epoch=int(data["epoch"]),
                       previous=str(previous) if previous is not None else None)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{key}: not a placement: {err}") from None


@dataclass(frozen=True)
class Cordon:
    """An operator's cordon of a host (`domctl cordon`): no new domain goes there; with
    `drain` (`domctl drain`) its domains are moved off too."""

    drain: bool
    at: str  # RFC 3339

    def encode(self) -> bytes:
        return _encode({"drain": self.drain, "at": self.at})

    @classmethod
    def decode(cls, key: str, value: bytes) -> Cordon:
        data = json_object(key, value)
        try:
            return cls(drain=bool(data["drain"]), at=str(data["at"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{key}: not a cordon: {err}") from None


@dataclass(frozen=True)
class Scheduling:
    """The scheduler's word on a domain it could not place, or that waits on a lost host:
    `kind` unschedulable | unreachable (scheduling.Kind), its message, when."""

    kind: str
    message: str
    at: str  # RFC 3339

    def encode(self) -> bytes:
        return _encode({"kind": self.kind, "message": self.message, "at": self.at})

    @classmethod
    def decode(cls, key: str, value: bytes) -> Scheduling:
        data = json_object(key, value)
        try:
            return cls(kind=str(data["kind"]), message=str(data["message"]), at=str(data["at"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{key}: not a scheduling record: {err}") from None


@dataclass(frozen=True)
class Leader:
    """The scheduler leader (`scheduler`, under the leader's lease): which host, since when."""

    host: str
    at: str  # RFC 3339

    def encode(self) -> bytes:
        return _encode({"host": self.host, "at": self.at})

    @classmethod
    def decode(cls, key: str, value: bytes) -> Leader:
        data = json_object(key, value)
        try:
            return cls(host=str(data["host"]), at=str(data["at"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{key}: not a leader record: {err}") from None
