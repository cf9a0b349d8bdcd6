"""The per-domain record the engine keeps across its own restarts: the persisted ledger.

One file per domain, `<state_dir>/domains/<name>.json`, written atomically. It holds what the
engine knows of a domain beyond its manifest and its live state, so that a controller restart
changes nothing: the uuid (from the manifest, or generated once and kept), the small integer
id (libvirt's domain id: the smallest free positive integer, reused only after release), the
RuntimeRecord of its running process (what re-attach proves identity with), the live spec it
runs with, restart and failure counts, the manifest epoch and generation, the last stop, the
API request and the stall in force, the state last seen and since when, and the conditions
with their transition times. The status document (controller/state/status.py) is built from
this record; it is an output, never read back.

Called by the engine's ledger (controller/engine/ledger.py) only. A corrupt or unreadable
file is logged and skipped, never raised. Records written before version 2 are upgraded on
load (the fields that re-attach needs are kept; epochs start at 0 under the generation of the
old status document). Never deletes a record except by `remove` (the domain was undefined).

Public surface:
    DomainRecord(...), RECORD_VERSION
    Registry(state_dir): load_all(), get(name), save(record), remove(name),
        uuid_for(name, manifest_uuid), allocate_id(name), release_id(name)
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from controller.state.jsondir import JsonDir, from_plain
from controller.state.status import Condition
from reconcilers.driver import RuntimeRecord
from reconcilers.history import ApiRequest, LastStop, Stalled
from reconcilers.model import Domain, DomainSpec, DriverName, Reason, State, to_plain

log = structlog.get_logger(__name__)

RECORD_VERSION = 2


@dataclass(frozen=True)
class DomainRecord:
    name: str
    uuid: str
    version: int = RECORD_VERSION
    driver: DriverName | None = None  # the manifest's, or the one running the domain
    desired: Domain | None = None  # the last valid manifest document (DesiredStore.seed)
    id: int | None = None  # libvirt's domain id while it holds one
    runtime: RuntimeRecord | None = None  # the running process, for re-attach
    live_spec: DomainSpec | None = None  # the spec the running domain has
    restarts: int = 0
    failures: int = 0  # consecutive failed runs (crash-loop backoff)
    epoch: int = 0
    """Counts changes of the desired spec (edits, reverts, removal): decide() compares the
    epochs of stops, requests and stalls with it."""
    generation: str | None = None  # of the desired spec the epoch belongs to
    observed_generation: str | None = None  # the last generation a pass fully applied
    last_stop: LastStop | None = None
    override: ApiRequest | None = None
    stalled: Stalled | None = None
    state: State | None = None  # the state and reason last seen
    reason: Reason | None = None
    since: float | None = None  # wall-clock seconds of the last change of state
    conditions: tuple[Condition, ...] = ()  # as last projected, with their transition times


def upgrade(data: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    """A version-1 record (and its status document) in version 2's form."""
    generation = status.get("generation") if status else None
    out = {k: v for k, v in data.items() if k not in ("last_stop", "override")}
    out["version"] = RECORD_VERSION
    if isinstance(out.get("runtime"), dict):
        out["runtime"] = {k: v for k, v in out["runtime"].items() if k != "started_at"}
    out["epoch"], out["generation"] = 0, generation
    stop, request = data.get("last_stop"), data.get("override")
    if isinstance(stop, dict):  # v1: epoch was the wall time, generation the manifest's
        out["last_stop"] = {"reason": stop["reason"], "cause": stop["cause"],
                            "epoch": 0 if stop.get("generation") == generation else -1,
                            "at": stop.get("epoch", 0.0)}
    if isinstance(request, dict):
        out["override"] = {"action": request["action"], "uid": request["uid"],
                           "epoch": 0 if request.get("generation") == generation else -1,
                           "at": request.get("at", 0.0)}
    if status:
        out["observed_generation"] = status.get("observedGeneration")
        out["state"], out["reason"] = status.get("state"), status.get("reason")
        out["conditions"] = status.get("conditions") or []
    return out


class Registry:
    """Every DomainRecord, cached in memory and persisted on each change."""

    def __init__(self, state_dir: Path) -> None:
        self._files = JsonDir(state_dir / "domains")
        self._old_statuses = JsonDir(state_dir / "status")  # read only to upgrade v1 records
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
        data = self._files.read(name)
        if not isinstance(data, dict):
            return None
        if "version" not in data:
            data = upgrade(data, self._old_statuses.read(name))
            log.info("domain record upgraded", domain=name, version=RECORD_VERSION)
        try:
            record: DomainRecord = from_plain(DomainRecord, data)
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("domain record invalid, skipped", domain=name, error=str(exc))
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

    def names(self) -> list[str]:
        return sorted(self._all())

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
