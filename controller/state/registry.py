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

Called by the engine's ledger (controller/engine/ledger.py) only. Records written before
version 2 are upgraded on load (the fields that re-attach needs are kept; epochs start at 0
under the generation of the old status document). Never deletes a record except by `remove`
(the domain was undefined).

A damaged record (unreadable, not JSON, the wrong shape, or impossible: a pid <= 0, a negative
starttime, a name not its file's, a version we do not know) never stops the controller
(crash-only start-up, issue 11 point 3): it is moved aside (jsondir/fsutil.quarantine, logged
with the file named) and rebuilt at once from what can still be trusted: the fields of the old
document that pass their checks one by one, and the domain's status document (uuid, driver).
What cannot be rebuilt is the proof of a running process. So unless the old document itself
said that no process ran (`"runtime": null`) and the status agrees, the rebuilt record carries
a Stalled "record unreadable; check for a running process" that holds every start until an
operator's explicit `domctl start` (or, later, the engine's stray-process check) clears it:
starting the manifest's domain blindly could run a second qemu on the same disks. The stall
is set for the epoch the first pass gives the domain (the rebuilt record has no generation,
so the pass always begins a new epoch), so a manifest edited while the controller was down
does not slip past it. `Registry.quarantined` lists what was rebuilt this run.

Public surface:
    DomainRecord(...), RECORD_VERSION, check_record(record, name)
    Registry(state_dir): load_all(), get(name), save(record), remove(name),
        uuid_for(name, manifest_uuid), allocate_id(name), release_id(name), quarantined
    UNREADABLE (the stall message's start)
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import structlog

from controller.state.jsondir import Damaged, JsonDir, from_plain
from controller.state.status import Condition, StatusStore
from reconcilers.driver import RuntimeRecord
from reconcilers.history import ApiRequest, LastStop, Stalled
from reconcilers.model import Domain, DomainSpec, DriverName, Reason, State, to_plain

log = structlog.get_logger(__name__)

RECORD_VERSION = 2


@dataclass(frozen=True)
class StartIntent:
    """Written before a driver spawns anything (write-ahead): a controller that dies before
    the runtime record is written finds the process again by its token (Driver.recover)."""

    token: str  # also in the spawned process's environment (identity.START_TOKEN_ENV)
    driver: DriverName
    at: float  # wall-clock seconds


@dataclass(frozen=True)
class DomainRecord:
    name: str
    uuid: str
    version: int = RECORD_VERSION
    driver: DriverName | None = None  # the manifest's, or the one running the domain
    desired: Domain | None = None  # the last valid manifest document (DesiredStore.seed)
    id: int | None = None  # libvirt's domain id while it holds one
    runtime: RuntimeRecord | None = None  # the running process, for re-attach
    starting: StartIntent | None = None  # a start under way: spawned, maybe, not recorded
    live_spec: DomainSpec | None = None  # the spec the running domain has
    restarts: int = 0
    failures: int = 0  # consecutive failed runs (crash-loop backoff)
    epoch: int = 0
    """Counts changes of the desired spec (edits, reverts, removal): decide() compares the
    epochs of stops, requests and stalls with it."""
    generation: str | None = None  # of the desired spec the epoch belongs to
    observed_generation: str | None = None  # the last generation a pass acted on
    last_stop: LastStop | None = None
    override: ApiRequest | None = None
    stalled: Stalled | None = None
    state: State | None = None  # the state and reason last seen
    reason: Reason | None = None
    since: float | None = None  # wall-clock seconds of the last change of state
    conditions: tuple[Condition, ...] = ()  # as last projected, with their transition times


UNREADABLE = "record unreadable; check for a running process"
_RUNNING_STATES = frozenset(set(State) - {State.SHUTOFF, State.NOSTATE})


def _uuid(value: str, field: str) -> None:
    try:
        uuidlib.UUID(value)
    except ValueError:
        raise ValueError(f"{field} is not a UUID: {value[:40]!r}") from None


def _times(*pairs: tuple[str, float | None]) -> None:
    for field, value in pairs:
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{field} must be a time in seconds >= 0, got {value}")


def check_record(record: DomainRecord, name: str) -> None:
    """ValueError for a record no controller of ours writes (from_plain only checks types)."""
    if record.name != name:
        raise ValueError(f"names domain {record.name!r}, not {name!r}")
    if record.version != RECORD_VERSION:
        raise ValueError(f"version {record.version} is not {RECORD_VERSION}")
    _uuid(record.uuid, "uuid")
    if record.id is not None and record.id <= 0:
        raise ValueError(f"id must be positive, got {record.id}")
    for field in ("restarts", "failures", "epoch"):
        if getattr(record, field) < 0:
            raise ValueError(f"{field} must not be negative, got {getattr(record, field)}")
    _times(("since", record.since),
           ("last_stop.at", record.last_stop.at if record.last_stop else None),
           ("override.at", record.override.at if record.override else None),
           ("stalled.at", record.stalled.at if record.stalled else None))
    runtime = record.runtime
    if runtime is not None:
        if runtime.name != name:
            raise ValueError(f"runtime.name is {runtime.name!r}, not {name!r}")
        if runtime.pid <= 0:
            raise ValueError(f"runtime.pid must be positive, got {runtime.pid}")
        if runtime.starttime < 0:
            raise ValueError(f"runtime.starttime must not be negative, got {runtime.starttime}")
        if not runtime.boot_id:
            raise ValueError("runtime.boot_id is empty")
    if len({c.type for c in record.conditions}) != len(record.conditions):
        raise ValueError("a condition type appears twice")


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

    def __init__(self, state_dir: Path, wall: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self._files = JsonDir(state_dir / "domains")
        self._old_statuses = JsonDir(state_dir / "status")  # read only to upgrade v1 records
        self._statuses = StatusStore(state_dir)  # read only to check them and to rebuild
        self._wall = wall
        self._records: dict[str, DomainRecord] | None = None
        self._unsaved: set[str] = set()  # kept in memory, their writes failed: see flush()
        self._held: set[str] = set()  # names whose writes wait for `release` (a pass runs)
        self._pending: set[str] = set()  # held names changed since `hold`
        self.quarantined: dict[str, Damaged] = {}
        """The records found damaged (and rebuilt) by this controller, by domain name."""

    def load_all(self) -> dict[str, DomainRecord]:
        """Read every record from disk (damaged ones moved aside and rebuilt, see the module
        docstring); refreshes the cache. Also checks every status document, so that a damaged
        one is reported at start-up (the engine never reads them back)."""
        records: dict[str, DomainRecord] = {}
        rebuilt: list[DomainRecord] = []
        for name in self._files.names():
            try:
                record = self._load(name)
            except Damaged as damage:
                record = self._rebuild(name, damage)
                if record is not None:
                    rebuilt.append(record)
            if record is not None:
                records[name] = record
        self._records = records
        for record in rebuilt:
            self.save(record)
        self._statuses.check_all()  # after the records: a v1 upgrade reads its status first
        return dict(records)

    def _load(self, name: str) -> DomainRecord | None:
        """The record, None when gone; Damaged (already moved aside) when it cannot be used."""
        data = self._files.read(name)
        if data is None:
            return None
        if not isinstance(data, dict):
            raise self._files.quarantine(name, f"not a JSON object but {type(data).__name__}",
                                         data)
        if "version" not in data:
            try:
                data = upgrade(data, self._old_status_plain(name))
            except Exception as exc:  # any shape of an old record: damaged, not fatal
                raise self._files.quarantine(name, f"version-1 record not upgradable: "
                                             f"{str(exc)[:200]}", data) from None
            upgraded = True
        else:
            upgraded = False
        try:
            record: DomainRecord = from_plain(DomainRecord, data)
            check_record(record, name)
        except Exception as exc:  # whatever one file's content raises, it must not stop us
            raise self._files.quarantine(name, f"invalid: {str(exc)[:300]}", data) from None
        if upgraded:
            log.info("domain record upgraded", domain=name, version=RECORD_VERSION)
        return record

    def _old_status_plain(self, name: str) -> dict[str, Any] | None:
        try:
            status = self._old_statuses.read(name)
        except Damaged:
            return None
        return status if isinstance(status, dict) else None

    def _rebuild(self, name: str, damage: Damaged) -> DomainRecord | None:
        """A record in place of a damaged one, from its salvageable fields and the status
        document; stalled unless both say no process ran (module docstring). None when the
        file's name is no domain name we could have written."""
        try:
            self._files.path(name)
        except ValueError:
            return None
        old = _salvage(damage.data, name)
        status = self._statuses.read(name)
        uuid = old.get("uuid") or (status.uuid if status is not None and _is_uuid(status.uuid)
                                   else str(uuidlib.uuid4()))
        driver = old.get("driver") or (status.driver if status is not None else None)
        epoch = old.get("epoch", 1)
        keep = {k: v for k, v in old.items()
                if k not in ("uuid", "driver", "epoch", "runtime", "live_spec")}
        said_stopped = "runtime" in old and old["runtime"] is None and (
            status is None or status.state not in _RUNNING_STATES)
        runtime = old.get("runtime")
        stalled = None
        if runtime is None and not said_stopped:
            where = f"{damage.path}" + (f", moved to {damage.moved_to.name}"
                                        if damage.moved_to is not None else "")
            stalled = Stalled(f"{UNREADABLE} ({where}: {damage.error[:200]}); if none runs, "
                              f"`domctl start {name}`", epoch + 1, self._wall())
        record = DomainRecord(name=name, uuid=uuid, driver=driver, epoch=epoch, generation=None,
                              runtime=runtime, live_spec=old.get("live_spec"),
                              stalled=stalled, **keep)
        self.quarantined[name] = damage
        log.error("domain record rebuilt", domain=name, path=str(damage.path),
                  moved_to=str(damage.moved_to) if damage.moved_to else None,
                  stalled=stalled is not None, kept=sorted(old))
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

    def save(self, record: DomainRecord) -> bool:
        """Keep and persist `record`; whether it reached the disk (or, while the name is
        held, will at `release`). A write that fails (a full disk) keeps the record in
        memory, is reported, and is retried by `flush` until it succeeds: never forgotten."""
        self._all()[record.name] = record
        if record.name in self._held:
            self._pending.add(record.name)
            return True
        return self._written(record.name, self._write_file(record))

    def hold(self, name: str) -> None:
        """Defer the writes of `name`'s record until `release`: a pass changes the record
        several times and writes it once, in a worker thread, never blocking the loop."""
        self._held.add(name)

    def hold_if_free(self, name: str) -> bool:
        """`hold`, unless a hold is already in place (a pass's); whether this one took it
        (and so must `release` it)."""
        if name in self._held:
            return False
        self.hold(name)
        return True

    async def release(self, name: str) -> None:
        """Write `name`'s record if it changed since `hold`, off the event loop."""
        self._held.discard(name)
        record = self._all().get(name)
        if name in self._pending and record is not None:
            self._pending.discard(name)
            self._written(name, await asyncio.to_thread(self._write_file, record))

    async def save_now(self, record: DomainRecord) -> bool:
        """Keep `record` and write it before returning, off the loop, held or not: what must
        be on disk before the next step (a start's write-ahead intent)."""
        self._all()[record.name] = record
        self._pending.discard(record.name)
        return self._written(record.name, await asyncio.to_thread(self._write_file, record))

    def _write_file(self, record: DomainRecord) -> OSError | None:
        """The atomic write itself (any thread); the error, if it failed."""
        try:
            self._files.write(record.name, to_plain(record))
        except OSError as exc:
            return exc
        return None

    def _written(self, name: str, error: OSError | None) -> bool:
        if error is None:
            self._unsaved.discard(name)
            return True
        if name not in self._unsaved:
            log.error("domain record not written; retrying", domain=name, error=str(error))
        self._unsaved.add(name)
        return False

    def flush(self) -> list[str]:
        """Retry every record whose write failed; the names still unsaved."""
        for name in sorted(self._unsaved):
            record = self._all().get(name)
            if record is None:
                self._unsaved.discard(name)
                continue
            if self.save(record):
                log.info("domain record written after all", domain=name)
        return sorted(self._unsaved)

    def remove(self, name: str) -> None:
        """Forget the domain (it was undefined): its uuid and id are released with it."""
        self._pending.discard(name)
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


def _is_uuid(value: str) -> bool:
    try:
        _uuid(value, "uuid")
    except ValueError:
        return False
    return True


_NOT_SALVAGED = frozenset({"name", "version", "generation", "stalled", "state", "reason", "since",
                           "desired"})
"""Fields a rebuilt record never takes from the damaged one: its name is the file's, the
generation is dropped so that the first pass begins a new epoch (the stall's), the state seen
is observed afresh, and the last valid spec (`desired`) is left out so that the engine's
first scan sees the domain as new and gives it the pass that reports its stall (a seeded,
unchanged spec queues nothing). Every other field (including any added later) is salvaged if
it checks."""


def _salvage(data: Any, name: str) -> dict[str, Any]:
    """The fields of the damaged record of `name` that pass their own checks, one by one; a
    field that does not is left out (its default applies). A runtime is kept only whole and
    valid: re-attach still proves it belongs to the process before adopting anything. Nothing
    is taken from a document that names another domain (its uuid and process are not ours)."""
    if not isinstance(data, dict) or data.get("name", name) != name:
        return {}
    hints = get_type_hints(DomainRecord)
    out: dict[str, Any] = {}
    for field in (f.name for f in dataclasses.fields(DomainRecord)
                  if f.name not in _NOT_SALVAGED):
        if field not in data:
            continue
        try:
            value = from_plain(hints[field], data[field])
            fields: dict[str, Any] = {"name": name, "uuid": str(uuidlib.UUID(int=1)),
                                      field: value}
            check_record(DomainRecord(**fields), name)
        except Exception:  # a field that does not check is simply not kept
            continue
        out[field] = value
    return out
