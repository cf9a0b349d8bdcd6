"""The engine loop: intake, workers, and one pass per domain name.

The daemon (controller/service/daemon.py) builds one Controller with its drivers and stores,
calls `reattach_all()` before anything else, hands `on_snapshot` to the ManifestSource and
`on_runtime_event` to the drivers (through DriverContext.on_event), then runs `workers()`.

Per pass of one name (`reconcile`): read the desired spec (DesiredStore), record the domain
and notice a manifest change in the ledger (a new epoch; `defined` is emitted), let
reconcilers.domain run observe → decide → execute with the ledger's History, then record what
happened in the ledger (start, live spec, failure, stall), ask `schedule()` when to come back,
and project the status. `decide()` chooses what happens and `schedule()` when; this module
only carries their answers out and keeps the books.

Stops are recorded where they are seen, in `on_runtime_event` (the driver's report) or for a
start that failed before any process existed. A stop during the engine's own action is
attributed to that action's cause; an unasked stop (guest, external) counts for the crash-loop
backoff, a managed save never does; a stop while a host shutdown holds the domain is recorded
as the host shutdown's (engine/hostshutdown.py). The `stopped` and `release` hooks run in the
background and finish before the next pass's `prepare`.

Outside the work queue, as libvirt does them synchronously: `destroy` (`domctl destroy`),
`save` (`domctl save`, a managed save: an error such as a container's NotSupported reaches the
caller and holds nothing) and `host_shutdown`; `stats` only reads (engine/stats.py).

Every driver event is only a hint to requeue the name: the pass re-reads everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from controller.engine.backoff import CrashLoopBackoff, ErrorBackoff
from controller.engine.clock import Clock, LoopClock
from controller.engine.desired import DesiredStore
from controller.engine.hooks import HookRunner
from controller.engine.hostshutdown import HostShutdowns
from controller.engine.invalid import InvalidManifests
from controller.engine.jobs import Jobs
from controller.engine.ledger import Ledger
from controller.engine.networks import NetworkController
from controller.engine.ordering import Ordering
from controller.engine.reattach import Reattach
from controller.engine.requests import NotRunning, Requests, parse_action
from controller.engine.schedule import Ending, Facts, Next, PassResult, Timing, schedule
from controller.engine.stats import DomainStatsCollector, Figures
from controller.engine.statusview import PassView, StatusProjector
from controller.engine.workqueue import ShutDown, WorkQueue
from controller.manifests.source import Snapshot
from controller.settings import EngineSettings
from controller.state.events import AuditLog, EventBus
from controller.state.hostshutdown import HostShutdownBook, HostShutdownRecord
from controller.state.registry import DomainRecord, Registry
from controller.state.status import StatusStore
from reconcilers.decide import STARTS, Action
from reconcilers.domain import DomainReconciler, Outcome
from reconcilers.driver import Driver, RuntimeEvent, SavedImage
from reconcilers.errors import DomctlError, HostValidationError, TerminalError
from reconcilers.history import ApiAction, ApiRequest, LastStop
from reconcilers.model import (
    Cause,
    Domain,
    DriverName,
    EventDetail,
    EventType,
    Reason,
    State,
    StopMode,
)
from reconcilers.net.nics import networks_used, networks_used_by_spec, reservations, resolve
from reconcilers.ports import HookOp, Ports

log = structlog.get_logger(__name__)

_UNASKED = frozenset({Cause.GUEST, Cause.EXTERNAL})


@dataclass
class Controller:
    drivers: Mapping[DriverName, Driver]
    registry: Registry
    statuses: StatusStore
    events: EventBus
    audit: AuditLog
    hooks: HookRunner
    settings: EngineSettings = field(default_factory=EngineSettings)
    clock: Clock = field(default_factory=LoopClock)
    wall: Callable[[], float] = time.time
    on_pass: Callable[[str, float, str], None] | None = None
    """Called after each pass with (name, seconds, "ok" | "error" | "requeue"), for metrics."""
    networks: NetworkController | None = None
    """The managed networks: a domain's NICs resolve against the ones that are up."""

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self.clock)
        self.store = DesiredStore(self.clock.now, self.settings.prune)
        self.jobs = Jobs(self.settings.jobs, self.wall)
        self.crash = CrashLoopBackoff(self.settings.crash_loop, self.clock.now)
        self.error_backoff = ErrorBackoff(self.settings.errors)
        self.ledger = Ledger(self.registry, self.crash, self.wall)
        self.ordering = Ordering(self.store, self.registry, self.statuses,
                                 self.settings.max_parallel_starts)
        self.requests = Requests(self.ledger, self.audit, self.wall)
        self.projector = StatusProjector(
            self.ledger, self.store, self.statuses, self.drivers, self.wall, self.settings.resync,
            self.networks.lease_addresses if self.networks is not None else dict)
        self.reconciler = DomainReconciler(
            self.drivers, Ports(jobs=self.jobs, hooks=self.hooks, events=self.events,
                                audit=self.audit, intents=self.ledger))
        self.host = HostShutdowns(HostShutdownBook(self.registry.state_dir), self.ledger,
                                  self.reconciler, self.statuses, self.queue, self.audit,
                                  self.wall)
        self._timing = Timing(self.settings.resync, self.settings.crash_loop.stable_after)
        self._background: set[asyncio.Task[Any]] = set()
        self._stop_hooks: dict[str, asyncio.Task[Any]] = {}  # `stopped`+`release` in flight
        self.invalid = InvalidManifests()  # invalid files that stand for no domain
        self.statistics = DomainStatsCollector(self.ledger, self.drivers, self.clock.now)
        if self.networks is not None:
            self.networks.domains = self

    # --- inputs ------------------------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """A new full view of the manifests directory: requeue every name whose view changed."""
        for name in self.ordering.by_priority(list(self.store.apply(snapshot))):
            self.queue.add(name)
        self.invalid.apply(snapshot, self.store.source_files())

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
            self._record_stop(name, event.reason, cause,
                              counts=cause in _UNASKED and event.reason is not Reason.SAVED,
                              host=name in self.host.holds)
        self.queue.add(name)

    def prune_confirm(self) -> list[str]:
        released = self.store.confirm_prune()
        for name in released:
            self.queue.add(name)
        log.warning("held removals confirmed", domains=released)
        return released

    def request(self, name: str, action: str, uid: int, force_boot: bool = False) -> ApiRequest:
        """An imperative start/stop/suspend/resume/restart/destroy/save; the next pass carries
        it out (decide() drives the domain to the state it asks for). `force_boot`: a start
        that discards a managed-save image."""
        request = self.requests.record(name, parse_action(action), uid, force_boot)
        self.queue.add(name)
        return request

    async def save(self, name: str, uid: int) -> SavedImage:
        """`domctl save`: a managed save now, outside the work queue (libvirt's managedsave),
        then held off like an API stop until the manifest changes. A save that fails (a
        container: NotSupportedError) raises to the caller and leaves the earlier request in
        force, so nothing is held by a save that did not happen."""
        record = self.ledger.get(name)
        earlier = record.override if record is not None else None
        self.request(name, ApiAction.SAVE.value, uid)  # NoSuchDomain; NotRunning when off
        record = self.ledger.get(name)
        driver = _driver_of(None, record)
        assert driver is not None
        try:
            image = await self.reconciler.save_now(name, driver, Cause.API, {"uid": uid},
                                                   owner=f"api:uid={uid}")
            if image is None:  # down, or paused by an error, before the save could begin
                live = await self.drivers[driver].observe(name)
                raise NotRunning(name, ApiAction.SAVE,
                                 f"{live.state.value} ({live.reason.value})")
        except DomctlError:
            self.ledger.set_request(name, earlier)
            self.queue.add(name)
            raise
        return image

    async def host_shutdown(self, mode: StopMode, parallel: int, timeout: float,
                            uid: int) -> HostShutdownRecord:
        """`domctl host-shutdown`: every running domain saved or shut down, `parallel` at a
        time, held down until the controller restarts (engine/hostshutdown.py)."""
        return await self.host.run(mode, parallel, timeout, uid)

    async def destroy(self, name: str, uid: int) -> None:
        """`domctl destroy`: off now, under the destroy job (which cuts a graceful shutdown
        short), then held off like an API stop until the manifest changes."""
        self.request(name, ApiAction.DESTROY.value, uid)
        record = self.ledger.get(name)
        if record is None or record.runtime is None:
            return  # not running: the request alone keeps it off
        await self.reconciler.destroy_now(name, record.runtime.driver, Cause.API, {"uid": uid},
                                          owner=f"api:uid={uid}")

    async def stats(self, name: str | None = None) -> list[Figures]:
        """`domctl stats` (virsh domstats): the figures of every running domain, or of `name`
        (NoSuchDomain, stats.NotRunning), with CPU % since the previous call (engine/stats.py;
        `stats.to_json` gives the wire form)."""
        return await self.statistics.collect(name)

    # --- start-up ----------------------------------------------------------------------------

    async def reattach_all(self) -> None:
        """Adopt every domain recorded as running; restart none. Runs before any pass."""
        records = self.registry.load_all()
        self.host.returning()  # its holds ended with the controller that made them
        self.store.seed({name: record.desired for name, record in records.items()})
        for name in self.ordering.by_priority(list(records)):
            self.queue.add(name)  # every domain found is reconciled once, changed or not
            self.crash.restore(name, records[name].failures)
        await Reattach(self.ledger, self.reconciler, self.events, self._record_stop,
                       self._reconnected).all(records)

    def _reconnected(self, name: str, record: DomainRecord) -> None:
        """libvirt's `reconnect` hook of a domain adopted at start-up, in the background."""
        if record.runtime is not None:
            self._spawn(self.hooks.run(record.runtime.driver, name, HookOp.RECONNECT,
                                       record.live_spec or {}))

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
            result = PassResult.OK
            try:
                result = await self.reconcile(name)
            except Exception:
                log.exception("reconcile pass crashed; retrying later", domain=name)
                result = self._requeue(name, schedule(Facts(
                    Ending.ERROR, error_delay=self.error_backoff.when(name)), self._timing))
            finally:
                self.queue.done(name)
                if self.on_pass is not None:
                    self.on_pass(name, self.clock.now() - started, result.value)

    async def stop(self) -> None:
        """Stop taking work, let passes in progress finish (bounded), leave domains running."""
        self.queue.shutdown()
        await self.reconciler.close()
        if self._background:
            await asyncio.wait(self._background, timeout=self.settings.stop_timeout)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- one pass ----------------------------------------------------------------------------

    async def reconcile(self, name: str) -> PassResult:
        """One pass for `name`. The domain's record is written once, at the end of the pass
        and in a worker thread, however often the pass changed it (the write-ahead intent
        of a start excepted: it is on disk before the spawn)."""
        self.registry.flush()  # records whose write failed (a full disk) are retried
        self.registry.hold(name)
        try:
            return await self._pass(name)
        finally:
            await self.registry.release(name)

    async def _pass(self, name: str) -> PassResult:
        record = self.ledger.get(name)
        desired = self.store.desired(name)
        driver = _driver_of(desired, record)
        if driver is None:  # known by name only: never started, manifest gone
            self._forget(name)
            return PassResult.OK
        if desired is not None:
            desired = self._resolved(self.ledger.define(name, desired))
        self._notice_manifest(name, desired)
        pending_hooks = self._stop_hooks.pop(name, None)
        if pending_hooks is not None:  # libvirt: `release` ends before the next `prepare`
            await asyncio.wait([pending_hooks])
        before = self.ledger.get(name)
        assert before is not None
        history = self.ledger.history(name, self.clock.now(), self._removal_in(name),
                                      self.host.holds.get(name))
        waiting = self.ordering.waiting_for(desired)
        history = dataclasses.replace(
            history, waiting_for=waiting, start_slot=self.ordering.start_slot(
                name, desired, bool(waiting)),
            dependents_up=self.ordering.dependents_up(name) if desired is None else ())
        ready, dependencies = self.ordering.ready(name), self.ordering.before_pass(name, desired)
        try:
            outcome = await self.reconciler.run_pass(name, desired, driver, history)
            return await self._account(name, driver, desired, outcome, before.last_stop)
        finally:
            self.ordering.after_pass(name, self.ordering.ready(name) != ready, dependencies,
                                     self.queue.add)

    def _resolved(self, desired: Domain) -> Domain:
        """`desired` with its NICs' bridges and MACs (reconcilers/net/nics.py); its uuid is set
        (ledger.define)."""
        assert desired.metadata.uuid is not None
        bridges = self.networks.bridges() if self.networks is not None else {}
        return resolve(desired, desired.metadata.uuid, bridges)

    def desired_resolved(self, name: str) -> Domain | None:
        """The desired spec as a pass sees it (`domctl diff`): uuid and NICs resolved."""
        desired = self._with_uuid(name)
        return self._resolved(desired) if desired is not None else self.store.desired(name)

    def candidate_resolved(self, candidate: Domain) -> Domain:
        """A manifest not (yet) in the directory as a pass would see it (`domctl diff -f`):
        its uuid, else the one recorded for its name, and its NICs resolved when one is known."""
        with_uuid = self._given_uuid(candidate)
        return self._resolved(with_uuid) if with_uuid is not None else candidate

    # --- what the network engine asks (engine/networks.py DomainSide) ------------------------

    def network_users(self, network: str) -> list[str]:
        """Running domains with a NIC on `network` (by their live spec)."""
        return sorted(name for name in self.registry.names()
                      if (record := self.registry.get(name)) is not None
                      and record.runtime is not None and record.live_spec is not None
                      and network in networks_used_by_spec(record.live_spec))

    def reservations(self, network: str) -> list[tuple[str, str, str]]:
        """The static addresses the defined domains' NICs ask for on `network`."""
        domains = [self._resolved(desired) for name in self.store.names()
                   if (desired := self._with_uuid(name)) is not None]
        return reservations(domains, network)

    def _with_uuid(self, name: str) -> Domain | None:
        """The desired domain with its uuid: the manifest's, else the one recorded; None
        when neither is known yet (a MAC cannot be derived before the first pass)."""
        desired = self.store.desired(name)
        return self._given_uuid(desired) if desired is not None else None

    def _given_uuid(self, desired: Domain) -> Domain | None:
        record = self.ledger.get(desired.name)
        if desired.metadata.uuid is None and record is None:
            return None  # its MAC is not known before its first pass
        if desired.metadata.uuid is None and record is not None:
            desired = dataclasses.replace(
                desired, metadata=dataclasses.replace(desired.metadata, uuid=record.uuid))
        return desired

    def network_changed(self, network: str) -> None:
        """A network came up or its leases changed: requeue the domains on it."""
        for name in self.store.names():
            if network in networks_used(self.store.desired(name)):
                self.queue.add(name)

    def _removal_in(self, name: str) -> float | None:
        entry = self.store.entry(name)
        if entry is None or entry.missing_since is None:
            return None
        return self.store.removal_in(name)

    def _notice_manifest(self, name: str, desired: Domain | None) -> None:
        generation = desired.generation if desired is not None else None
        change = self.ledger.notice_manifest(name, generation)
        if change is None or desired is None:
            return
        if self.networks is not None:
            self.networks.reservations_changed(networks_used(desired))
        record = self.ledger.get(name)
        seen = (record.state, record.reason) if record is not None else (None, None)
        state, reason = (seen[0] or State.SHUTOFF), (seen[1] or Reason.UNKNOWN)
        self.events.emit(name, EventType.DEFINED,
                         EventDetail.ADDED if change.added else EventDetail.UPDATED,
                         state, reason, Cause.MANIFEST,
                         {"generation": generation, "file": desired.source.file})

    async def _account(self, name: str, driver: DriverName, desired: Domain | None,
                 outcome: Outcome, stop_before: LastStop | None) -> PassResult:
        """Record what the pass did; schedule the next one; project the status."""
        plan, error = outcome.plan, outcome.error
        if plan.action is Action.UNDEFINE and error is None:
            self._forget(name)
            log.info("undefined", domain=name)
            return PassResult.OK
        record = self.ledger.get(name)
        assert record is not None
        restart_request = (record.override is not None
                           and record.override.action is ApiAction.RESTART)
        if outcome.started is not None:
            self.ledger.record_start(name, driver, outcome.started, outcome.live_spec,
                                     restart=plan.cause is Cause.CONTROLLER or restart_request)
        elif outcome.live_spec is not None:
            self.ledger.update(name, live_spec=outcome.live_spec)
        if plan.action in STARTS and outcome.started is None:
            self.ledger.end_start(name)  # the driver left nothing running behind
        if plan.action in STARTS and restart_request:
            self.ledger.set_request(name, None)  # a restart request ends with its start
        record = self.ledger.get(name)
        assert record is not None
        ending = self._ending(name, outcome, stopped=record.last_stop != stop_before)
        live = outcome.after or outcome.live
        if live.state is State.RUNNING:
            self.crash.running(name)
        next_pass = schedule(Facts(
            ending, requeue_after=plan.requeue_after, running=live.state is State.RUNNING,
            failures=self.crash.failures(name), crash_remaining=self.crash.remaining(name),
            error_delay=self.error_backoff.when(name) if ending is Ending.ERROR else 0.0),
            self._timing)
        if desired is not None:  # acted on, whatever came of it: Synced tells (kstatus)
            self.ledger.update(name, observed_generation=desired.generation)
        await self.projector.project(PassView(name, driver, desired, live, plan, error),
                                     self._backoff_until(name))
        return self._requeue(name, next_pass)

    def _ending(self, name: str, outcome: Outcome, stopped: bool) -> Ending:
        """How the pass ended; records a failed start's stop and a stall."""
        error, plan = outcome.error, outcome.plan
        if error is None:
            self.error_backoff.forget(name)
            return Ending.OK
        if outcome.start_failed:
            self.ledger.count_start_failure(name)
        if isinstance(error, TerminalError):
            host = isinstance(error, HostValidationError)
            self.ledger.record_stall(name, str(error), host)
            return Ending.HOST if host else Ending.TERMINAL
        if outcome.start_failed:
            if not stopped:  # no process ever existed, so no driver reported the stop
                self.events.emit(name, EventType.STOPPED, EventDetail.FAILED, State.SHUTOFF,
                                 Reason.FAILED, plan.cause, {}, str(error))
                self._record_stop(name, Reason.FAILED, plan.cause, counts=True)
            return Ending.FAILED_START
        return Ending.ERROR

    def _backoff_until(self, name: str) -> float | None:
        """The crash-loop backoff's next try, in wall-clock seconds (for the status)."""
        retry_at = self.crash.retry_at(name)
        if retry_at is None:
            return None
        return self.wall() + max(0.0, retry_at - self.clock.now())

    def _requeue(self, name: str, next_pass: Next) -> PassResult:
        if next_pass.delay is not None:
            self.queue.add_after(name, next_pass.delay)
        return next_pass.result

    def _record_stop(self, name: str, reason: Reason, cause: Cause, counts: bool,
                     host: bool = False) -> None:
        """The domain reached shutoff: recorded in the ledger (written in a worker thread,
        never on the loop: a driver reports stops from its exit watch); the stop hooks run.
        `host`: a host shutdown holds it (the next controller starts it again)."""
        deferred = self.registry.hold_if_free(name)
        record = self.ledger.record_stop(name, reason, cause, counts, host)
        if deferred:
            self._spawn(self.registry.release(name))
        if record is None or record.driver is None or record.runtime is None:
            return
        if self.networks is not None and record.live_spec is not None:
            self.networks.domain_stopped(networks_used_by_spec(record.live_spec))
        self._stop_hooks[name] = self._spawn(
            self._after_stop_hooks(record.driver, name, record.live_spec, reason))

    async def _after_stop_hooks(self, driver: DriverName, name: str, spec: object,
                                reason: Reason) -> None:
        await self.hooks.run(driver, name, HookOp.STOPPED, spec or {})
        await self.hooks.run(driver, name, HookOp.RELEASE, spec or {}, reason.value)

    def _forget(self, name: str) -> None:
        self.ledger.forget(name)
        self.statuses.remove(name)
        self.store.forget(name)
        self.error_backoff.forget(name)
        self.queue.forget(name)


def _driver_of(desired: Domain | None, record: DomainRecord | None) -> DriverName | None:
    """The driver running the domain if it runs, else the manifest's, else the recorded one."""
    if record is not None and record.runtime is not None:
        return record.runtime.driver
    if desired is not None:
        return desired.spec.driver
    return record.driver if record is not None else None
