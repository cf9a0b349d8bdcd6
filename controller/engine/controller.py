"""The controller: desired store, work queue, workers, and the books of every domain.

The daemon (controller/service/daemon.py) builds one Controller with its drivers and stores, calls
`reattach_all()` before anything else, hands `on_snapshot` to the ManifestSource and
`on_runtime_event` to the drivers (through DriverContext.on_event), then runs `workers()`.

Per pass of one name (`reconcile`): read the desired spec (DesiredStore) and the registry
record, notice a manifest change (a new epoch: the restart policy starts afresh, the crash
loop and a terminal stall are forgotten, `defined` is emitted), build the History, let
reconcilers.domain run observe → decide → execute, then keep the books: the registry (runtime
record, live spec, id, restarts, last stop), the crash-loop and error backoff, the status
document, and the next requeue.

Stops are recorded where they are seen, in `on_runtime_event` (the driver's report) or for a
start that failed before any process existed: the last stop (reason, who caused it, under
which manifest epoch) is what the restart policy reads, the id is released, the `stopped` and
`release` hooks run in the background. A stop during the controller's own action is attributed
to that action's cause; an unasked stop (guest, external) counts for the crash-loop backoff.

Every driver event is only a hint to requeue the name: the pass re-reads everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from controller.state import registry as reg
from controller.engine.backoff import (BackoffSettings, CrashLoopBackoff, CrashLoopSettings,
                                ErrorBackoff)
from controller.engine.clock import Clock, LoopClock
from controller.engine.desired import DesiredStore, PruneSettings
from controller.state.events import AuditLog, EventBus
from controller.engine.hooks import HookRunner
from controller.engine.jobs import Jobs, JobSettings
from controller.service.metrics import DomainSample
from controller.engine.overrides import API_ACTIONS, NotRunning, Override, by_api
from controller.manifests.source import Snapshot
from controller.state.status import DomainStatus, NoSuchDomain, StatusStore
from controller.engine.statusview import Facts, build_status
from controller.engine.workqueue import ShutDown, WorkQueue
from reconcilers.decide import Action, History, LastStop, Stalled
from reconcilers.diff import Apply, Change, classify_changes, pending_restart
from reconcilers.domain import DomainReconciler, Outcome, Ports
from reconcilers.driver import Driver, Live, RuntimeEvent
from reconcilers.errors import DomctlError, HostValidationError, TerminalError
from reconcilers.model import (Cause, Domain, DriverName, EventDetail, EventType, Reason,
                               State)

log = structlog.get_logger(__name__)

_UNASKED = frozenset({Cause.GUEST, Cause.EXTERNAL})
# Reasons a driver reports for a domain it just adopted and knows no history of.
_VAGUE = frozenset({Reason.UNKNOWN, Reason.STARTING_UP})

@dataclass(frozen=True)
class ControllerSettings:
    workers: int = 4
    prune: PruneSettings = PruneSettings()
    crash_loop: CrashLoopSettings = CrashLoopSettings()
    errors: BackoffSettings = BackoffSettings()
    jobs: JobSettings = JobSettings()
    stop_timeout: float = 20.0
    """Seconds SIGTERM waits for passes in progress before cancelling them."""
    revalidate: float = 30.0
    """Seconds between re-checks of a domain stalled by host validation (a missing file);
    `domctl run` uses its --resync period."""


@dataclass
class _Books:
    """What the controller remembers of one domain between passes (in memory)."""

    epoch: int = 0
    generation: str | None = None  # of the desired spec the epoch belongs to
    last_stop: LastStop | None = None
    stalled: Stalled | None = None
    host_problem: bool = False  # the stall is a host validation error: re-checked periodically
    stops: int = 0  # stops recorded so far, to tell whether a failed start already reported
    since: float | None = None  # wall time of the last state change
    seen: tuple[State, Reason] | None = None
    restored: tuple[State, Reason] | None = None  # the reason known before a re-attach
    observed_generation: str | None = None
    initialised: bool = False  # generation taken from the status of an earlier run
    override: Override | None = None
    start_failures: int = 0  # since this controller started (a Prometheus counter)


@dataclass
class Controller:
    drivers: Mapping[DriverName, Driver]
    registry: reg.Registry
    statuses: StatusStore
    events: EventBus
    audit: AuditLog
    hooks: HookRunner
    settings: ControllerSettings = ControllerSettings()
    clock: Clock = field(default_factory=LoopClock)
    wall: Callable[[], float] = time.time
    on_pass: Callable[[str, float, str], None] | None = None
    """Called after each pass with (name, seconds, "ok" | "error" | "requeue"), for metrics."""

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self.clock)
        self.store = DesiredStore(self.clock.now, self.settings.prune)
        self.jobs = Jobs(self.settings.jobs, self.wall)
        self.crash = CrashLoopBackoff(self.settings.crash_loop, self.clock.now)
        self.error_backoff = ErrorBackoff(self.settings.errors)
        self.reconciler = DomainReconciler(
            self.drivers, Ports(jobs=self.jobs, hooks=self.hooks, events=self.events,
                                audit=self.audit))
        self._books: dict[str, _Books] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._stop_hooks: dict[str, asyncio.Task[Any]] = {}  # `stopped`+`release` in flight
        self._orphan_problems: set[str] = set()

    # --- inputs ------------------------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """A new full view of the manifests directory: requeue every name whose view changed."""
        for name in sorted(self.store.apply(snapshot)):
            self.queue.add(name)
        self._log_orphan_problems(snapshot)

    def _log_orphan_problems(self, snapshot: Snapshot) -> None:
        """Invalid files that never declared a valid domain have no status: log them once."""
        current = {str(p) for path, names in snapshot.names_by_file.items() if not names
                   for p in snapshot.problems.get(path, [])}
        for problem in sorted(current - self._orphan_problems):
            log.warning("invalid manifest", problem=problem)
        self._orphan_problems = current

    def on_runtime_event(self, event: RuntimeEvent) -> None:
        """A driver saw something happen: emit its events, record a stop, requeue."""
        name = event.name
        acting = self.reconciler.acting(name)
        cause, detail = event.cause, {}
        if acting is not None and event.cause is Cause.CONTROLLER:
            cause, detail = acting.cause, dict(acting.cause_detail)
        for event_type, event_detail in event.events:
            self.events.emit(name, event_type, event_detail, event.state, event.reason, cause,
                             detail, event.message)
        if event.state is State.SHUTOFF:
            self._record_stop(name, event.reason, cause, counts=cause in _UNASKED)
        self.queue.add(name)

    def prune_confirm(self) -> list[str]:
        released = self.store.confirm_prune()
        for name in released:
            self.queue.add(name)
        log.warning("held removals confirmed", domains=released)
        return released

    def request(self, name: str, action: str, uid: int) -> Override:
        """An imperative start/stop/suspend/resume/restart; the next pass carries it out."""
        if action not in API_ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(API_ACTIONS)}")
        if self.store.entry(name) is None and self.registry.get(name) is None:
            raise NoSuchDomain(name)
        status = self.statuses.read(name)
        if action in ("suspend", "resume") and (status is None or status.state is State.SHUTOFF):
            raise NotRunning(name, action)
        books = self._books_for(name)
        override = Override(action, uid, books.epoch, self.wall())
        self._set_override(name, books, override)
        if action == "start":  # an explicit start: no earlier stop or backoff holds it back
            if books.last_stop is not None:
                books.last_stop = dataclasses.replace(books.last_stop, epoch=books.epoch - 1)
            self.crash.forget(name)
            books.stalled = None
        self.audit.record(name, f"request-{action}", Cause.API, {"uid": uid},
                          override.describe())
        log.info("API request", domain=name, action=action, uid=uid)
        self.queue.add(name)
        return override

    def samples(self) -> list[DomainSample]:
        """Every domain's state for the metrics collector (read at scrape time)."""
        result = []
        for name in self.statuses.names():
            status = self.statuses.read(name)
            if status is not None:
                books = self._books.get(name)
                result.append(DomainSample(
                    name=name, driver=status.driver, state=status.state, reason=status.reason,
                    restarts=status.restarts,
                    start_failures=books.start_failures if books is not None else 0))
        return result

    def idle(self) -> bool:
        """Nothing queued or being reconciled (the first full pass is over once this holds)."""
        return self.queue.idle()

    async def destroy(self, name: str, uid: int) -> None:
        """`domctl destroy`: off now, under the destroy job (which cuts a graceful shutdown
        short), then held off like an API stop until the manifest changes."""
        self.request(name, "destroy", uid)
        record = self.registry.get(name)
        if record is None or record.runtime is None:
            return  # not running: the override alone keeps it off
        await self.reconciler.destroy_now(name, record.runtime.driver, Cause.API, {"uid": uid},
                                          owner=f"api:uid={uid}")

    # --- start-up ----------------------------------------------------------------------------

    async def reattach_all(self) -> None:
        """Adopt every domain recorded as running; restart none. Runs before any pass."""
        records = self.registry.load_all()
        self.store.seed(records)
        for name, record in sorted(records.items()):
            books = self._books_for(name)
            previous = self.statuses.read(name)
            if previous is not None:
                books.generation, books.initialised = previous.generation, True
                books.observed_generation = previous.observedGeneration
                books.seen = (previous.state, previous.reason)
                books.since = _parse_since(previous)
            self.crash.restore(name, record.failures)
            kept = record.override
            if kept is not None and kept.generation == books.generation:
                books.override = Override(kept.action, kept.uid, books.epoch, kept.at)
            if record.runtime is None:
                continue
            await self._reattach(name, record, books)

    async def _reattach(self, name: str, record: reg.DomainRecord, books: _Books) -> None:
        runtime = record.runtime
        assert runtime is not None
        try:
            live = await self.drivers[runtime.driver].reattach(runtime)
        except DomctlError as err:  # e.g. the driver's tools are gone: never touch it blindly
            log.error("cannot re-attach; domain left alone", domain=name, error=str(err))
            return
        if live is None:
            log.warning("domain stopped while the controller was away", domain=name)
            self.events.emit(name, EventType.STOPPED, EventDetail.FAILED, State.SHUTOFF,
                             Reason.UNKNOWN, Cause.EXTERNAL, {},
                             "found stopped when the controller started")
            self._record_stop(name, Reason.UNKNOWN, Cause.EXTERNAL, counts=False)
            return
        if live.state is State.NOSTATE:
            log.warning("recorded process not adopted; left alone", domain=name,
                        why=live.message)
            return
        if books.seen is not None and books.seen[0] is live.state:
            books.restored = books.seen
        self._spawn(self.hooks.run(runtime.driver.value, name, "reconnect",
                                   record.live_spec or {}))
        log.info("re-attached", domain=name, pid=live.pid, state=live.state.value)

    # --- workers -----------------------------------------------------------------------------

    async def workers(self) -> None:
        """Run the configured number of workers until the queue is shut down."""
        await asyncio.gather(*(self._worker() for _ in range(self.settings.workers)))

    async def _worker(self) -> None:
        while True:
            try:
                name = await self.queue.get()
            except ShutDown:
                return
            started = self.clock.now()
            result = "ok"
            try:
                result = await self.reconcile(name)
            except Exception:
                result = "error"
                log.exception("reconcile pass crashed; retrying later", domain=name)
                self.queue.add_after(name, self.error_backoff.when(name))
            finally:
                self.queue.done(name)
                if self.on_pass is not None:
                    self.on_pass(name, self.clock.now() - started, result)

    async def stop(self) -> None:
        """Stop taking work, let passes in progress finish (bounded), leave domains running."""
        self.queue.shutdown()
        if self._background:
            await asyncio.wait(self._background, timeout=self.settings.stop_timeout)

    def _spawn(self, coroutine: Any) -> None:
        self._track(asyncio.ensure_future(coroutine))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- one pass ----------------------------------------------------------------------------

    async def reconcile(self, name: str) -> str:
        """One pass for `name`; returns "ok", "error" or "requeue" (for metrics)."""
        entry = self.store.entry(name)
        record = self.registry.get(name)
        desired = self.store.desired(name)
        driver = self._driver_of(desired, record)
        if driver is None:  # known by name only: never started, manifest gone
            self._forget(name)
            return "ok"
        if desired is not None:
            desired = self._define(name, desired)
        books = self._books_for(name)
        self._notice_manifest(name, desired, books)
        waiting = self.store.removal_in(name)
        if entry is not None and entry.missing_since is not None and waiting > 0:
            live = await self.reconciler.observe(driver, name)
            self._write_status(name, driver, desired, live, None, None, books, waiting)
            if waiting != float("inf"):
                self.queue.add_after(name, waiting)
            return "requeue"
        record = self.registry.get(name)
        if books.stalled is not None and books.host_problem and desired is not None:
            await self._revalidate(name, driver, desired, books)
        override = await self._current_override(name, driver, books)
        target = desired
        detail: dict[str, Any] = ({"generation": desired.generation}
                                  if desired is not None else {})
        if override is not None and desired is not None:
            target = dataclasses.replace(desired, spec=dataclasses.replace(
                desired.spec, state=API_ACTIONS[override.action]))
            detail = {"uid": override.uid}
        pending_hooks = self._stop_hooks.pop(name, None)
        if pending_hooks is not None:  # libvirt: `release` ends before the next `prepare`
            await asyncio.wait([pending_hooks])
        stops_before = books.stops
        outcome = await self.reconciler.run_pass(
            name, target, driver, self._history(name, books, record), detail,
            adjust=by_api(override) if override is not None else None)
        return self._account(name, driver, desired, books, outcome, stops_before)

    def _set_override(self, name: str, books: _Books, override: Override | None) -> None:
        """Hold (or drop) an API request, in memory and in the registry record."""
        books.override = override
        persisted = None if override is None else reg.ApiOverride(
            override.action, override.uid, books.generation, override.at)
        self._update_record(name, override=persisted)

    async def _current_override(self, name: str, driver: DriverName,
                                books: _Books) -> Override | None:
        """The API request in force, if any: a manifest change lifts it; a restart ends once
        the domain is down (then the restart policy, told the controller stopped it, starts it)."""
        override = books.override
        if override is None:
            return None
        if override.epoch != books.epoch:
            log.info("API request lifted by a manifest change", domain=name,
                     action=override.action)
            self._set_override(name, books, None)
            return None
        if override.action == "restart":
            live = await self.reconciler.observe(driver, name)
            if live.state is State.SHUTOFF:
                self._set_override(name, books, None)
                stop = books.last_stop
                books.last_stop = LastStop(stop.reason if stop else Reason.SHUTDOWN,
                                           Cause.CONTROLLER, books.epoch)
                return None
        return override

    async def _revalidate(self, name: str, driver: DriverName, desired: Domain,
                          books: _Books) -> None:
        """A start refused by host validation (a missing kernel, no kvm) is unblocked as soon
        as the host can run the spec: the operator fixing the host needs no manifest edit."""
        try:
            await self.drivers[driver].validate(desired)
        except HostValidationError as err:
            books.stalled = Stalled(str(err), books.epoch)
            return
        log.info("host problem gone; starting again", domain=name)
        books.stalled, books.host_problem = None, False

    def _define(self, name: str, desired: Domain) -> Domain:
        """Record the domain (its uuid, and its driver while it is not running); return the
        manifest's domain with its uuid: the manifest's, or the one generated and kept, so the
        generation (a hash that includes the uuid) is stable across passes."""
        uuid = self.registry.uuid_for(name, desired.metadata.uuid)
        record = self.registry.get(name)
        if record is not None and record.runtime is None:
            self._update_record(name, driver=desired.spec.driver)
        if desired.metadata.uuid is not None:
            return desired
        return dataclasses.replace(desired,
                                   metadata=dataclasses.replace(desired.metadata, uuid=uuid))

    def _driver_of(self, desired: Domain | None,
                   record: reg.DomainRecord | None) -> DriverName | None:
        """The driver running the domain if it runs, else the manifest's."""
        if record is not None and record.runtime is not None:
            return record.runtime.driver
        if desired is not None:
            return desired.spec.driver
        return record.driver if record is not None else None

    def _notice_manifest(self, name: str, desired: Domain | None, books: _Books) -> None:
        generation = desired.generation if desired is not None else None
        if generation == books.generation and books.initialised:
            return
        first = not books.initialised
        books.initialised = True
        if generation == books.generation:
            return
        books.epoch += 1
        books.generation = generation
        books.stalled = None
        self.crash.forget(name)
        if desired is not None:
            added = first and self.statuses.read(name) is None
            self.events.emit(name, EventType.DEFINED,
                             EventDetail.ADDED if added else EventDetail.UPDATED,
                             *(books.seen or (State.SHUTOFF, Reason.UNKNOWN)), Cause.MANIFEST,
                             {"generation": generation, "file": desired.source.file})

    def _history(self, name: str, books: _Books, record: reg.DomainRecord | None) -> History:
        if books.last_stop is None and record is not None and record.last_stop is not None:
            persisted = record.last_stop  # from an earlier controller run
            epoch = books.epoch if persisted.generation == books.generation else books.epoch - 1
            books.last_stop = LastStop(persisted.reason, persisted.cause, epoch)
        retry_at = self.crash.retry_at(name)
        return History(now=self.clock.now(), epoch=books.epoch, last_stop=books.last_stop,
                       failures=self.crash.failures(name), backoff_until=retry_at,
                       stalled=books.stalled,
                       live_spec=record.live_spec if record is not None else None)

    def _account(self, name: str, driver: DriverName, desired: Domain | None, books: _Books,
                 outcome: Outcome, stops_before: int) -> str:
        """Keep the books after a pass; schedule the next one; write the status."""
        plan, error = outcome.plan, outcome.error
        if plan.action is Action.UNDEFINE and error is None:
            self._forget(name)
            log.info("undefined", domain=name)
            return "ok"
        if outcome.started is not None:
            self._record_start(name, driver, outcome, restart=plan.cause is Cause.CONTROLLER)
        elif outcome.live_spec is not None:
            self._update_record(name, live_spec=outcome.live_spec)
        result, delay = "ok", plan.requeue_after
        if error is not None:
            result = "error"
            failed_start = outcome.start_failed and not isinstance(error, TerminalError)
            books.start_failures += outcome.start_failed
            if failed_start and books.stops == stops_before:
                self.events.emit(name, EventType.STOPPED, EventDetail.FAILED, State.SHUTOFF,
                                 Reason.FAILED, plan.cause, {}, str(error))
                self._record_stop(name, Reason.FAILED, plan.cause, counts=True)
            if isinstance(error, TerminalError):
                books.stalled = Stalled(str(error), books.epoch)
                books.host_problem = isinstance(error, HostValidationError)
                delay = self.settings.revalidate if books.host_problem else None
            elif failed_start:
                delay = self.crash.remaining(name)
            else:
                delay = self.error_backoff.when(name)
        else:
            self.error_backoff.forget(name)
        live = outcome.after or outcome.live
        if live.state is State.RUNNING:
            self.crash.running(name)
            if self.crash.failures(name):
                delay = _sooner(delay, self.settings.crash_loop.stable_after)
        if delay is not None:
            self.queue.add_after(name, delay)
            result = "requeue" if result == "ok" else result
        if error is None and desired is not None and plan.action is not Action.APPLY_LIVE:
            books.observed_generation = desired.generation
        self._write_status(name, driver, desired, live, outcome, error, books,
                           self.store.removal_in(name))
        return result

    def _record_start(self, name: str, driver: DriverName, outcome: Outcome,
                      restart: bool) -> None:
        domain_id = self.registry.allocate_id(name)  # saves the id into the record
        record = self.registry.get(name)
        assert record is not None
        self.registry.save(dataclasses.replace(
            record, driver=driver, id=domain_id, runtime=outcome.started,
            live_spec=outcome.live_spec, restarts=record.restarts + (1 if restart else 0)))

    def _update_record(self, name: str, **changes: Any) -> None:
        record = self.registry.get(name)
        if record is not None and any(getattr(record, k) != v for k, v in changes.items()):
            self.registry.save(dataclasses.replace(record, **changes))

    def _record_stop(self, name: str, reason: Reason, cause: Cause, counts: bool) -> None:
        """The domain reached shutoff: what the restart policy reads, id released, hooks run."""
        books = self._books_for(name)
        books.stops += 1
        books.last_stop = LastStop(reason, cause, books.epoch)
        if counts or reason is Reason.FAILED:
            self.crash.failed(name)
        record = self.registry.get(name)
        if record is None:
            return
        spec = record.live_spec
        self.registry.save(dataclasses.replace(
            record, runtime=None, live_spec=None, id=None,
            last_stop=reg.LastStop(reason, cause, self.wall(), books.generation)))
        if record.driver is not None and record.runtime is not None:
            task = asyncio.ensure_future(
                self._after_stop_hooks(record.driver.value, name, spec, reason))
            self._stop_hooks[name] = task
            self._track(task)

    async def _after_stop_hooks(self, driver: str, name: str, spec: object,
                                reason: Reason) -> None:
        await self.hooks.run(driver, name, "stopped", spec or {})
        await self.hooks.run(driver, name, "release", spec or {}, reason.value)

    def _forget(self, name: str) -> None:
        self.registry.remove(name)
        self.statuses.remove(name)
        self.store.forget(name)
        self.crash.forget(name)
        self.error_backoff.forget(name)
        self.queue.forget(name)
        self._books.pop(name, None)

    def _books_for(self, name: str) -> _Books:
        return self._books.setdefault(name, _Books())

    # --- status ------------------------------------------------------------------------------

    def _write_status(self, name: str, driver: DriverName, desired: Domain | None, live: Live,
                      outcome: Outcome | None, error: Exception | None, books: _Books,
                      removal_in: float) -> None:
        now = self.wall()
        if (live.state, live.reason) == (State.SHUTOFF, Reason.UNKNOWN) and books.last_stop:
            live = dataclasses.replace(live, reason=books.last_stop.reason)
        if books.restored is not None:
            if live.state is books.restored[0] and live.reason in _VAGUE:
                live = dataclasses.replace(live, reason=books.restored[1])
            else:
                books.restored = None
        if books.seen is None or books.seen[0] is not live.state:
            books.since = now
        books.seen = (live.state, live.reason)
        self._update_record(name, failures=self.crash.failures(name))
        record = self.registry.get(name)
        live_spec = record.live_spec if record is not None else None
        pending: tuple[Change, ...] = ()
        live_left = False
        if desired is not None and live_spec is not None:
            classify = self.drivers[driver].classify
            pending = pending_restart(desired.spec, live_spec, classify)
            live_left = any(c.apply is Apply.LIVE for c in classify_changes(
                live_spec, desired.spec, classify(live_spec, desired.spec)))
        retry_at = self.crash.retry_at(name)
        backoff_wall = None if retry_at is None else now + max(0.0, retry_at - self.clock.now())
        status = build_status(Facts(
            name=name, uuid=record.uuid if record is not None else "", driver=driver,
            desired=desired, entry=self.store.entry(name), live=live,
            plan=outcome.plan if outcome is not None else None,
            error=str(error) if error is not None else None, pending=pending,
            live_changes_left=live_left, restarts=record.restarts if record else 0,
            id=record.id if record is not None and record.runtime is not None else None,
            observed_generation=books.observed_generation, since=books.since,
            failures=self.crash.failures(name),
            backoff_until=backoff_wall if live.state is not State.RUNNING else None,
            stalled=books.stalled.message if books.stalled is not None else None,
            host_problem=books.host_problem, revalidate=self.settings.revalidate,
            removal_in=removal_in, previous=self.statuses.read(name), now=now,
            override=books.override.describe() if books.override is not None else None,
            override_state=API_ACTIONS[books.override.action] if books.override else None))
        self.statuses.write(status)


def _sooner(delay: float | None, other: float) -> float:
    return other if delay is None else min(delay, other)


def _parse_since(status: DomainStatus) -> float | None:
    if status.since is None:
        return None
    return datetime.datetime.fromisoformat(status.since.replace("Z", "+00:00")).timestamp()
