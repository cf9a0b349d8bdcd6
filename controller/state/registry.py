"""The per-domain record the controller keeps across its own restarts, and the JSON plumbing.

One file per domain, `<state_dir>/domains/<name>.json`, written atomically (fsutil): the
domain's UUID (from the manifest, or generated once and kept until the domain is undefined),
its small integer id (libvirt's domain id: the smallest free positive integer, unique among the
recorded domains, reused only after `release_id`), the RuntimeRecord of its running process
(what re-attach proves identity with), the live spec it was started with, its restart count and
its last stop (reason, cause, wall-clock epoch seconds).

The reconciler and the daemon's start-up re-attach call `Registry`; `controller/state/status.py`
reuses `JsonDir` and `from_plain`. A corrupt or unreadable file is logged and skipped, never
raised: a bad state file must not stop the controller (atomic writes make it rare).
Never deletes a record except by `remove` (the domain was undefined), never reads manifests.

Public surface:
    from_plain(cls, data): rebuild a frozen dataclass (or enum, tuple, Optional, ...) of the
        model from its `to_plain` form, guided by the dataclass field types
    JsonDir(directory): path(name), write(name, obj), read(name), names(), remove(name)
    LastStop(reason, cause, epoch, generation), ApiOverride(action, uid, generation, at),
    DomainRecord(name, uuid, driver, id, runtime, live_spec, restarts, last_stop, override,
        failures)
    Registry(state_dir): load_all(), get(name), save(record), remove(name),
        uuid_for(name, manifest_uuid), allocate_id(name), release_id(name)
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import itertools
import json
import types
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import structlog

from controller.state.fsutil import atomic_write_json, fsync_dir
from reconcilers.driver import RuntimeRecord
from reconcilers.model import Cause, DomainSpec, DriverName, Reason, to_plain

T = TypeVar("T")
log = structlog.get_logger(__name__)

_SCALARS = (str, int, float, bool)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def from_plain(tp: Any, data: Any) -> Any:
    """The inverse of `model.to_plain` for the type `tp`; TypeError/ValueError on a mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return data
    if origin in (Union, types.UnionType):
        return _from_optional(tp, data)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _from_dataclass(tp, data)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if origin is tuple:
        return _from_tuple(get_args(tp), data)
    if origin in (Mapping, dict):
        key_type, value_type = get_args(tp)
        _expect(data, dict, tp)
        return {from_plain(key_type, k): from_plain(value_type, v) for k, v in data.items()}
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if tp in _SCALARS:
        _expect(data, tp, tp)
        if tp is not bool and isinstance(data, bool):
            raise TypeError(f"expected {tp.__name__}, got bool")
        return data
    raise TypeError(f"from_plain: unsupported type {tp!r}")


def _from_optional(tp: Any, data: Any) -> Any:
    if data is None and type(None) in get_args(tp):
        return None
    options = [arg for arg in get_args(tp) if arg is not type(None)]
    if len(options) != 1:
        raise TypeError(f"from_plain: ambiguous union {tp!r}")
    return from_plain(options[0], data)


def _from_dataclass(cls: type, data: Any) -> Any:
    _expect(data, dict, cls)
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**{name: from_plain(hints[name], data[name]) for name in names if name in data})


def _from_tuple(args: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    _expect(data, list, tuple)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(from_plain(args[0], item) for item in data)
    if len(args) != len(data):
        raise ValueError(f"expected {len(args)} items, got {len(data)}")
    return tuple(from_plain(arg, item) for arg, item in zip(args, data, strict=True))


def _expect(data: Any, kind: type, tp: Any) -> None:
    if not isinstance(data, kind):
        raise TypeError(f"expected {kind.__name__} for {tp!r}, got {type(data).__name__}")


class JsonDir:
    """A directory of `<name>.json` documents, one per domain, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise ValueError(f"not a domain name usable as a file name: {name!r}")
        return self.directory / f"{name}.json"

    def write(self, name: str, obj: Any) -> None:
        path = self.path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, obj)

    def read(self, name: str) -> Any | None:
        """The parsed document; None when missing or unreadable (the latter is logged)."""
        path = self.path(name)
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("state file unreadable, skipped", path=str(path), error=str(exc))
            return None

    def read_as(self, tp: type[T], name: str) -> T | None:
        """The document rebuilt as `tp`; None when missing, unreadable or malformed (logged)."""
        data = self.read(name)
        if data is None:
            return None
        try:
            result: T = from_plain(tp, data)
        except (TypeError, ValueError) as exc:
            log.warning("state file invalid, skipped", path=str(self.path(name)), error=str(exc))
            return None
        return result

    def names(self) -> list[str]:
        """Names with a document, sorted; temp files (`.x.json.*.tmp`) are not documents."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json")
                      if not p.name.startswith("."))

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()
            fsync_dir(self.directory)


@dataclass(frozen=True)
class LastStop:
    reason: Reason
    cause: Cause
    epoch: float  # wall-clock seconds of the stop
    generation: str | None = None
    """The manifest generation the domain had when it stopped: after a controller restart, a
    stop under an unchanged manifest still counts for the restart policy (a guest power-off
    stays respected), while a manifest changed meanwhile allows a fresh start."""


@dataclass(frozen=True)
class ApiOverride:
    """An imperative API request in force (domctl stop, ...), kept across controller restarts
    while the manifest generation it was made under is unchanged."""

    action: str
    uid: int
    generation: str | None
    at: float  # wall-clock seconds of the request


@dataclass(frozen=True)
class DomainRecord:
    name: str
    uuid: str
    driver: DriverName | None = None  # known once the domain was first started
    id: int | None = None  # libvirt's domain id while it holds one
    runtime: RuntimeRecord | None = None  # the running process, for re-attach
    live_spec: DomainSpec | None = None  # the spec the running domain was started with
    restarts: int = 0
    last_stop: LastStop | None = None
    override: ApiOverride | None = None
    failures: int = 0  # consecutive failed runs (crash-loop backoff), kept across restarts


class Registry:
    """Every DomainRecord, cached in memory and persisted on each change."""

    def __init__(self, state_dir: Path) -> None:
        self._files = JsonDir(state_dir / "domains")
        self._records: dict[str, DomainRecord] | None = None

    def load_all(self) -> dict[str, DomainRecord]:
        """Read every record from disk (corrupt ones logged and skipped); refreshes the cache."""
        records = {}
        for name in self._files.names():
            record = self._load(name)
            if record is not None:
                records[name] = record
        self._records = records
        return dict(records)

    def _load(self, name: str) -> DomainRecord | None:
        record = self._files.read_as(DomainRecord, name)
        if record is None:
            return None
        if record.name != name:
            log.warning("domain record names another domain, skipped", domain=name,
                        recorded=record.name)
            return None
        return record

    def _all(self) -> dict[str, DomainRecord]:
        if self._records is None:
            self.load_all()
        assert self._records is not None
        return self._records

    def get(self, name: str) -> DomainRecord | None:
        return self._all().get(name)

    def save(self, record: DomainRecord) -> None:
        self._files.write(record.name, to_plain(record))
        self._all()[record.name] = record

    def remove(self, name: str) -> None:
        """Forget the domain (it was undefined): its uuid and id are released with it."""
        self._files.remove(name)
        self._all().pop(name, None)

    def uuid_for(self, name: str, manifest_uuid: str | None) -> str:
        """The manifest's uuid when it has one, else the kept one, else a new one (saved)."""
        record = self.get(name)
        if manifest_uuid is not None:
            wanted = manifest_uuid
        elif record is not None:
            return record.uuid
        else:
            wanted = str(uuidlib.uuid4())
        if record is None:
            self.save(DomainRecord(name=name, uuid=wanted))
        elif record.uuid != wanted:
            self.save(dataclasses.replace(record, uuid=wanted))
        return wanted

    def allocate_id(self, name: str) -> int:
        """The domain's id: the one it holds, else the smallest positive integer nobody holds."""
        self.uuid_for(name, None)  # makes sure the domain has a record
        record = self._all()[name]
        if record.id is not None:
            return record.id
        taken = {r.id for r in self._all().values() if r.id is not None}
        domain_id = next(i for i in itertools.count(1) if i not in taken)
        self.save(dataclasses.replace(record, id=domain_id))
        return domain_id

    def release_id(self, name: str) -> None:
        """Give the id back (the domain stopped); it may then go to another domain."""
        record = self.get(name)
        if record is not None and record.id is not None:
            self.save(dataclasses.replace(record, id=None))
