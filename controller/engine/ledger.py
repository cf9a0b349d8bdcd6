"""The ledger: the one place the engine keeps what it knows of each domain between passes.

Every fact a pass needs beyond the manifest and the live state is a field of the domain's
record (controller/state/registry.py), persisted on every change, so a controller restart
loses nothing: the manifest epoch, the last stop, the API request and the stall in force, the
crash-loop count, the id, the runtime record, the live spec, the state last seen, the
conditions. The ledger only records facts, as they happen; what they mean is decided by
`reconcilers.decide.decide()` (what to do) and `engine.schedule.schedule()` (when), which
read them through `history()`.

Called by the engine loop (controller/engine/controller.py), its API requests
(controller/engine/requests.py) and the re-attach at start-up. Never touches a domain.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.engine.backoff import CrashLoopBackoff
from controller.state.registry import DomainRecord, Registry, StartIntent
from controller.state.status import ConditionStatus, ConditionType
from reconcilers.driver import RuntimeRecord
from reconcilers.errors import TransientError
from reconcilers.history import ApiRequest, History, HostShutdown, LastStop, Stalled
from reconcilers.model import Cause, Domain, DomainSpec, DriverName, Reason, State


@dataclass(frozen=True)
class DomainSample:
    """What the metrics show of one domain, taken from the ledger at scrape time."""

    name: str
    driver: DriverName
    state: State
    reason: Reason
    restarts: int
    """Restarts done by the controller since the domain was defined (status `restarts`)."""
    start_failures: int
    """Starts that failed since the domain was defined."""
    ready: bool | None = None
    """The Ready condition as last projected (in the state the controller drives towards);
    None before the first projection."""


@dataclass(frozen=True)
class ManifestChange:
    """A new epoch began: the desired spec changed (or came or went)."""

    generation: str | None
    added: bool  # the domain was never defined before


class Ledger:
    def __init__(self, registry: Registry, crash: CrashLoopBackoff,
                 wall: Callable[[], float]) -> None:
        self.registry = registry
        self.crash = crash
        self._wall = wall
        self.start_failures: dict[str, int] = {}  # since this controller started (a counter)
        self.adopted: dict[str, tuple[State, Reason]] = {}
        """The state and reason recorded before a re-attach, while the driver reports the
        domain vaguely (unknown): shown instead, until the state changes."""

    # --- reading ---------------------------------------------------------------------------

    def get(self, name: str) -> DomainRecord | None:
        return self.registry.get(name)

    def history(self, name: str, now: float, removal_in: float | None,
                host_shutdown: HostShutdown | None = None) -> History:
        """What decide() reads about `name` besides its manifest and live state; a host
        shutdown's hold is the engine's (in memory: it ends when the controller restarts)."""
        record = self.registry.get(name)
        assert record is not None, "define() runs before history()"
        return History(
            now=now, wall=self._wall(), epoch=record.epoch, last_stop=record.last_stop,
            failures=self.crash.failures(name), backoff_until=self.crash.retry_at(name),
            stalled=record.stalled, live_spec=record.live_spec, override=record.override,
            removal_in=removal_in, host_shutdown=host_shutdown,
            last_spec=record.desired.spec if record.desired is not None else None)

    def samples(self) -> list[DomainSample]:
        """Every domain's state for the metrics collector (read at scrape time)."""
        result = []
        for name in self.registry.names():
            record = self.registry.get(name)
            if record is None or record.state is None or record.driver is None:
                continue
            result.append(DomainSample(
                name=name, driver=record.driver, state=record.state,
                reason=record.reason or Reason.UNKNOWN, restarts=record.restarts,
                start_failures=self.start_failures.get(name, 0),
                ready=next((c.status is ConditionStatus.TRUE for c in record.conditions
                            if c.type is ConditionType.READY), None)))
        return result

    # --- recording -------------------------------------------------------------------------

    def update(self, name: str, **changes: Any) -> DomainRecord | None:
        """Change fields of the record; written only when something changed."""
        record = self.registry.get(name)
        if record is None:
            return None
        if any(getattr(record, key) != value for key, value in changes.items()):
            record = dataclasses.replace(record, **changes)
            self.registry.save(record)
        return record

    def define(self, name: str, desired: Domain) -> Domain:
        """Record the domain (its uuid; its driver while it is not running); return the
        manifest's domain with its uuid, so the generation (which hashes it) is stable."""
        uuid = self.registry.uuid_for(name, desired.metadata.uuid)
        record = self.registry.get(name)
        if record is not None and record.runtime is None:
            self.update(name, driver=desired.spec.driver)
        self.update(name, desired=desired)  # survives a restart with the manifest invalid
        if desired.metadata.uuid is not None:
            return desired
        return dataclasses.replace(desired,
                                   metadata=dataclasses.replace(desired.metadata, uuid=uuid))

    def notice_manifest(self, name: str, generation: str | None) -> ManifestChange | None:
        """A new epoch when the desired spec's generation differs from the recorded one. A
        crash-loop count belongs to the spec that looped: a new spec starts afresh."""
        record = self.registry.get(name)
        if record is None or record.generation == generation:
            return None
        added = record.generation is None and record.epoch == 0
        self.update(name, epoch=record.epoch + 1, generation=generation)
        self.crash.forget(name)
        return ManifestChange(generation, added)

    def set_request(self, name: str, request: ApiRequest | None) -> None:
        """Hold (or drop) an API request; decide() honours it while its epoch is current."""
        self.update(name, override=request)

    async def begin(self, name: str, driver: DriverName) -> str:
        """The write-ahead intent of a start (reconcilers.ports.IntentPort): recorded on disk
        before the driver spawns anything, or the start is refused (TransientError)."""
        record = self.registry.get(name)
        assert record is not None, "define() runs before a start"
        token = secrets.token_hex(8)
        intent = StartIntent(token, driver, self._wall())
        if not await self.registry.save_now(dataclasses.replace(record, starting=intent)):
            raise TransientError(f"{name}: the start intent cannot be written to the state "
                                 "dir; not starting (retried)")
        return token

    def end_start(self, name: str) -> None:
        """A start that spawned nothing lasting (it failed, its process was killed)."""
        self.update(name, starting=None)

    def record_start(self, name: str, driver: DriverName, runtime: RuntimeRecord,
                     live_spec: DomainSpec | None, restart: bool) -> None:
        """A domain started: it holds an id and runs `live_spec`; a stall is over."""
        domain_id = self.registry.allocate_id(name)
        record = self.registry.get(name)
        assert record is not None
        self.registry.save(dataclasses.replace(
            record, driver=driver, id=domain_id, runtime=runtime, live_spec=live_spec,
            restarts=record.restarts + (1 if restart else 0), stalled=None, starting=None))

    def record_stop(self, name: str, reason: Reason, cause: Cause, counts: bool,
                    host: bool = False) -> DomainRecord | None:
        """The domain reached shutoff: what the restart policy reads; the id is released.
        `host`: a host shutdown's (the next controller starts it again). Returns the record
        as it was (its runtime and live spec, for the stop hooks)."""
        if counts or reason is Reason.FAILED:
            self.crash.failed(name)
        record = self.registry.get(name)
        if record is None:
            return None
        self.registry.save(dataclasses.replace(
            record, runtime=None, live_spec=None, id=None,
            last_stop=LastStop(reason, cause, record.epoch, self._wall(), host)))
        return record

    def record_stall(self, name: str, message: str, host: bool) -> None:
        record = self.registry.get(name)
        if record is not None:
            self.update(name, stalled=Stalled(message, record.epoch, self._wall(), host))

    def count_start_failure(self, name: str) -> None:
        self.start_failures[name] = self.start_failures.get(name, 0) + 1

    def forget(self, name: str) -> None:
        """The domain was undefined: its record, uuid and id go with it."""
        self.registry.remove(name)
        self.crash.forget(name)
        self.start_failures.pop(name, None)
        self.adopted.pop(name, None)
