"""One reconcile pass of one domain: observe → decide → execute, under the domain's job lock.

The engine's worker (controller/engine/controller.py) calls `DomainReconciler.run_pass(name,
desired, driver, history)` for a name it took off the work queue, having built the History (epoch,
last stop, API request, stall, backoff, removal, live spec) from its ledger; it gets back an
`Outcome` that says what was observed, what was decided and what happened, and does the bookkeeping
(registry, status, backoff, requeue). This module owns the order of operations of each plan:

    start:     validate, no stray of the name in any driver (a refusal is no attempt) →
               hooks prepare, start → the intent and its token recorded (job modify) →
               driver.start(token) → started/booted [+ suspended/paused] → hook started;
               a start that discards a managed-save image (Plan.discard) deletes it first
               (driver.discard_saved, in the job) and says why in the started event
    restore:   as start, with driver.restore(token) from the managed-save image →
               started/restored + resumed/from_snapshot (or suspended/restored: saved paused);
               the live spec is the image's (History.saved.spec)
    save:      driver.save (job modify; the domain observed again in the job: a save outside
               the work queue may have come first); the driver reports the stop (stopped/saved)
    suspend:   driver.suspend (job suspend) → suspended/paused
    resume:    driver.resume (job modify) → resumed/unpaused
    shutdown:  driver.shutdown(shutdownTimeout) in a background task, not in the worker (job
               modify, interruptible by a destroy) → on timeout driver.destroy (job destroy);
               the guest's exit requeues the domain
    restart:   shutdown as above; the next pass starts it again
    destroy:   driver.destroy (job destroy)
    apply-live: driver.apply_live (job modify); the live spec takes the applied fields
    undefine:  a managed-save image discarded, storage released by its delete policies →
               undefined/removed (the controller forgets the domain)

Outside the work queue, `destroy_now` (`domctl destroy`) and `save_now` (`domctl save`, a host
shutdown) act at once under the domain's job, as libvirt's destroy and managedsave do; a pass
that comes meanwhile sees them in History (shutting_down, saving) and waits.

Events of the controller's own operations (started, suspended, resumed) are emitted here; the
events of stops come from the driver (DriverContext.on_event), which the controller attributes
to the plan's cause through `acting(name)`. Every action goes to the audit log with who asked.

Ports (reconcilers/ports.py): the job lock, hook runner, event bus and audit log live in
controller/ (which this layer must not import), so they are passed in as small protocols.
Hooks never run while the job is held (a hook may call domctl). The events of the
controller's own operations are the state machine's (statemachine.transition), never spelled
here.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from reconcilers.decide import FIRST_TRIGGER, STARTS, Action, Plan, decide
from reconcilers.diff import Apply, classify_changes, live_after_apply
from reconcilers.driver import Driver, Live, RuntimeRecord, SavedImage
from reconcilers.errors import DomctlError, HostValidationError
from reconcilers.history import History
from reconcilers.model import (
    Cause,
    Domain,
    DomainSpec,
    DriverName,
    EventDetail,
    EventType,
    Reason,
    State,
)
from reconcilers.ports import HookOp, JobKind, Ports
from reconcilers.statemachine import UP_STATES, Trigger, transition

log = structlog.get_logger(__name__)

_SAVABLE = UP_STATES | {State.PAUSED}


@dataclass(frozen=True)
class Acting:
    """The plan being carried out for a domain: stops the driver reports during it are its."""

    action: Action
    cause: Cause
    cause_detail: Mapping[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What one pass saw, decided and did."""

    live: Live  # observed before acting
    plan: Plan
    after: Live | None = None  # observed after acting (None: nothing was done)
    started: RuntimeRecord | None = None  # the record of a domain this pass started
    live_spec: DomainSpec | None = None  # the running domain's spec after this pass
    error: DomctlError | None = None
    start_failed: bool = False  # a start was attempted and failed (counts as a failure)


@dataclass
class DomainReconciler:
    drivers: Mapping[DriverName, Driver]
    ports: Ports
    owner: str = "reconcile"
    _acting: dict[str, Acting] = field(default_factory=dict)  # the pass's plan in progress
    _destroying: dict[str, Acting] = field(default_factory=dict)  # a destroy_now in progress
    _saving: dict[str, Acting] = field(default_factory=dict)  # a save_now in progress
    _shutting_down: dict[str, Acting] = field(default_factory=dict)  # graceful, in background
    _shutdowns: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def acting(self, name: str) -> Acting | None:
        """What is being done to `name`, if anything (for attributing driver-reported stops):
        a `destroy_now` first, since it cuts the others short."""
        return (self._destroying.get(name) or self._saving.get(name)
                or self._shutting_down.get(name) or self._acting.get(name))

    def shutting_down(self, name: str) -> bool:
        """A graceful shutdown of `name` is waiting for its guest (no worker is held)."""
        return name in self._shutdowns

    async def close(self) -> None:
        """Stop waiting for guests (the controller stops; the domains keep running, and the
        next controller asks again)."""
        tasks = list(self._shutdowns.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def destroy_now(self, name: str, driver_name: DriverName, cause: Cause,
                          cause_detail: Mapping[str, Any], owner: str) -> None:
        """Destroy at once, outside the work queue (libvirt's `virsh destroy`): the destroy job
        interrupts a graceful shutdown in progress, whose pass then retries and finds it off.
        Kept apart from the pass's own plan: the interrupted pass ends while this destroys."""
        detail = dict(cause_detail)
        self.ports.audit.record(name, "destroy", cause, detail, f"requested by {owner}")
        self._destroying[name] = Acting(Action.DESTROY, cause, detail)
        try:
            async with self.ports.jobs.acquire(name, JobKind.DESTROY, owner):
                await self.drivers[driver_name].destroy(name)
        finally:
            self._destroying.pop(name, None)

    async def save_now(self, name: str, driver_name: DriverName, cause: Cause,
                       cause_detail: Mapping[str, Any], owner: str) -> SavedImage | None:
        """A managed save at once, outside the work queue (`domctl save`, a host shutdown),
        as libvirt's managedsave: the image, or None when the domain was not up (nothing to
        save). Errors are the driver's (NotSupportedError for a container)."""
        detail = dict(cause_detail)
        self.ports.audit.record(name, "save", cause, detail, f"requested by {owner}")
        self._saving[name] = Acting(Action.SAVE, cause, detail)
        try:
            return await self._save(name, self.drivers[driver_name], owner)
        finally:
            self._saving.pop(name, None)

    def saving(self, name: str) -> bool:
        """A `save_now` of `name` is under way."""
        return name in self._saving

    async def _save(self, name: str, driver: Driver, owner: str) -> SavedImage | None:
        """driver.save under the modify job, if the domain is still up once the job is ours."""
        async with self.ports.jobs.acquire(name, JobKind.MODIFY, owner):
            if (await driver.observe(name)).state not in _SAVABLE:
                return None
            return await driver.save(name)

    async def recover(self, driver: DriverName, domain: Domain, token: str) -> Live | None:
        """Adopt what an unrecorded start spawned (Driver.recover); None when nothing of it
        runs. A driver that cannot tell is logged and leaves the intent to the stray check."""
        try:
            return await self.drivers[driver].recover(domain, token)
        except DomctlError as err:
            log.error("cannot recover an unfinished start", domain=domain.name, error=str(err))
            return None

    async def reattach(self, name: str, runtime: RuntimeRecord) -> Live | None:
        """Adopt a domain recorded as running (the driver proves its identity); None when it
        is gone. A process that cannot be proven ours, or a driver that cannot tell, is
        reported in nostate and never touched."""
        try:
            live = await self.drivers[runtime.driver].reattach(runtime)
        except DomctlError as err:  # e.g. the driver's tools are gone: never touch it blindly
            log.error("cannot re-attach; domain left alone", domain=name, error=str(err))
            return Live(State.NOSTATE, Reason.UNKNOWN, message=str(err))
        if live is not None and live.state is State.NOSTATE:
            log.warning("recorded process not adopted; left alone", domain=name,
                        why=live.message)
        return live

    async def run_pass(self, name: str, desired: Domain | None, driver_name: DriverName,
                       history: History) -> Outcome:
        """Observe, decide and execute once; never raises a DomctlError (it is in the Outcome).

        `desired` must carry its uuid (the controller fills a generated one in).
        """
        driver = self.drivers[driver_name]
        live = await driver.observe(name)
        if (desired is not None and history.live_spec is not None
                and live.state is not State.SHUTOFF):
            history = dataclasses.replace(
                history, classification=driver.classify(history.live_spec, desired.spec))
        saved = driver.saved_image(name) if live.state is State.SHUTOFF else None
        if saved is not None:
            history = dataclasses.replace(history, saved=saved, saved_classification=(
                driver.classify(saved.spec, desired.spec) if desired is not None else {}))
        history = dataclasses.replace(history, shutting_down=self.shutting_down(name),
                                      saving=self.saving(name))
        plan = decide(desired, live, history)
        log.debug("plan", domain=name, state=live.state.value, reason=live.reason.value,
                  action=plan.action.value, why=plan.reason)
        if plan.action in (Action.NOTHING, Action.REPORT):
            return Outcome(live, plan, live_spec=history.live_spec)
        if plan.action in STARTS:
            assert desired is not None
            try:  # before anything is recorded: a refused start is no attempt
                await driver.validate(desired)
                # the observing driver just scanned: a stray of its own shows as NOSTATE
                await self._no_strays(name, skip=driver if live.state is not State.NOSTATE
                                      else None)
            except DomctlError as err:
                log.warning("start refused", domain=name, error=str(err))
                return Outcome(live, plan, after=live, error=err)
        detail = cause_detail(plan, desired, history)
        self.ports.audit.record(name, plan.action.value, plan.cause, detail, plan.reason)
        log.info("acting", domain=name, action=plan.action.value, cause=plan.cause.value,
                 why=plan.reason)
        self._acting[name] = Acting(plan.action, plan.cause, detail)
        try:
            return await self._execute(name, desired, driver, live, plan, history, detail)
        except DomctlError as err:
            log.warning("action failed", domain=name, action=plan.action.value, error=str(err))
            after = await driver.observe(name)
            return Outcome(live, plan, after=after, error=err, start_failed=plan.action in STARTS,
                           live_spec=history.live_spec if after.state is not State.SHUTOFF
                           else None)
        finally:
            self._acting.pop(name, None)

    async def _execute(self, name: str, desired: Domain | None, driver: Driver, live: Live,
                       plan: Plan, history: History, detail: dict[str, Any]) -> Outcome:
        action = plan.action
        if action in STARTS:
            assert desired is not None
            return await self._start(desired, driver, live, plan, history, detail)
        if action is Action.APPLY_LIVE:
            assert desired is not None and history.live_spec is not None
            return await self._apply_live(desired, driver, live, plan, history, detail)
        if action is Action.UNDEFINE:
            if history.saved is not None:
                await driver.discard_saved(name)
            retained = (await driver.release_storage(name, history.last_spec)
                        if history.last_spec is not None else ())
            self.ports.events.emit(name, EventType.UNDEFINED, EventDetail.REMOVED, live.state,
                                   live.reason, plan.cause, detail,
                                   f"kept: {', '.join(retained)}" if retained else "")
            return Outcome(live, plan, after=live)
        if action is Action.SAVE:
            await self._save(name, driver, self.owner)
            return Outcome(live, plan, after=await driver.observe(name))
        await self._change(name, driver, live, plan, _shutdown_timeout(desired, history), detail)
        after = await driver.observe(name)
        kept = history.live_spec if after.state is not State.SHUTOFF else None
        return Outcome(live, plan, after=after, live_spec=kept)

    async def _start(self, desired: Domain, driver: Driver, live: Live, plan: Plan,
                     history: History, detail: dict[str, Any]) -> Outcome:
        """A start, or a restore from the managed-save image (whose spec then runs)."""
        name, paused = desired.name, plan.action is Action.START_PAUSED
        restoring = plan.action is Action.RESTORE
        assert not restoring or history.saved is not None
        spec = history.saved.spec if restoring and history.saved is not None else desired.spec
        transition(live.state, FIRST_TRIGGER[plan.action])  # refused before any hook runs
        for op in (HookOp.PREPARE, HookOp.START):
            await self.ports.hooks.run(driver.name, name, op, spec)
        async with self.ports.jobs.acquire(name, JobKind.MODIFY, self.owner):
            if plan.discard:
                await driver.discard_saved(name)
            token = await self.ports.intents.begin(name, driver.name)  # on disk before spawn
            after = await (driver.restore(desired, token) if restoring
                           else driver.start(desired, paused, token))
        trigger = FIRST_TRIGGER[plan.action]
        if restoring and after.state is State.PAUSED:
            trigger = Trigger.RESTORE_PAUSED
        first = "; ".join(m for m in (f"saved image discarded: {plan.discard}"
                                      if plan.discard else "", after.message) if m)
        for index, (event, event_detail) in enumerate(transition(live.state, trigger).events):
            self.ports.events.emit(name, event, event_detail, after.state, after.reason,
                                   plan.cause, detail, first if index == 0 else "")
        await self.ports.hooks.run(driver.name, name, HookOp.STARTED, spec)
        return Outcome(live, plan, after=after, started=after.record, live_spec=spec)

    async def _no_strays(self, name: str, skip: Driver | None = None) -> None:
        """A name never runs twice: any process of it that no driver started or adopted, in
        any driver, holds the start back (a host problem: re-checked every resync). `skip`:
        the driver whose observe() of this pass already found none (it reports one as
        NOSTATE), so its scan of /proc is not done twice."""
        found = [stray for driver in self.drivers.values() if driver is not skip
                 for stray in await driver.strays(name)]
        if found:
            raise HostValidationError(
                name, "metadata.name", f"{', '.join(found)} already runs under this name "
                "without a record of this controller; not starting another (stop it, or "
                "restart domctl so that it can adopt what it started)")

    async def _apply_live(self, desired: Domain, driver: Driver, live: Live, plan: Plan,
                          history: History, detail: dict[str, Any]) -> Outcome:
        name, old = desired.name, history.live_spec
        assert old is not None
        async with self.ports.jobs.acquire(name, JobKind.MODIFY, self.owner):
            devices = await driver.apply_live(name, old, desired.spec)
        if devices:  # libvirt reports these as device events; here, in the update's message
            self.ports.events.emit(name, EventType.DEFINED, EventDetail.UPDATED, live.state,
                                   live.reason, plan.cause, detail,
                                   "applied live: " + "; ".join(devices))
        applied = tuple(c for c in classify_changes(old, desired.spec, history.classification)
                        if c.apply is not Apply.RESTART)
        new_live = live_after_apply(old, desired.spec, applied)
        return Outcome(live, plan, after=await driver.observe(name), live_spec=new_live)

    async def _change(self, name: str, driver: Driver, live: Live, plan: Plan, timeout: float,
                      detail: dict[str, Any]) -> None:
        """suspend, resume, shutdown (→ destroy on timeout), restart's shutdown, destroy."""
        jobs, action = self.ports.jobs, plan.action
        if action in (Action.SUSPEND, Action.RESUME):
            move = transition(live.state, FIRST_TRIGGER[action])
            if action is Action.SUSPEND:
                async with jobs.acquire(name, JobKind.SUSPEND, self.owner):
                    await driver.suspend(name)
            else:
                async with jobs.acquire(name, JobKind.MODIFY, self.owner):
                    await driver.resume(name)
            after = await driver.observe(name)
            for event, event_detail in move.events:
                self.ports.events.emit(name, event, event_detail, after.state, after.reason,
                                       plan.cause, detail)
        elif action in (Action.SHUTDOWN, Action.RESTART):
            self._shutting_down[name] = Acting(action, plan.cause, detail)
            self._shutdowns[name] = asyncio.create_task(
                self._shut_down(name, driver, plan.cause, timeout, detail))
        elif action is Action.DESTROY:
            async with jobs.acquire(name, JobKind.DESTROY, self.owner):
                await driver.destroy(name)
        else:  # pragma: no cover - every acting Action is handled above
            raise AssertionError(f"unhandled action {action}")


    async def _shut_down(self, name: str, driver: Driver, cause: Cause, timeout: float,
                         detail: dict[str, Any]) -> None:
        """A graceful shutdown that waits for the guest in the background, not in a worker:
        the guest's exit (or the destroy after `timeout`) is a driver event, which requeues
        the domain. A `destroy_now` interrupts it (the job is interruptible)."""
        jobs = self.ports.jobs
        try:
            async with jobs.acquire(name, JobKind.MODIFY, self.owner, interruptible=True):
                stopped = await driver.shutdown(name, timeout)
            if not stopped:
                log.info("guest ignored the shutdown request; destroying", domain=name,
                         timeout=timeout)
                self.ports.audit.record(name, "destroy", cause, detail,
                                        f"shutdownTimeout {timeout:g} s passed")
                async with jobs.acquire(name, JobKind.DESTROY, self.owner):
                    await driver.destroy(name)
        except DomctlError as err:  # interrupted by a destroy, or the driver failed
            log.info("graceful shutdown ended early", domain=name, why=str(err))
        finally:
            self._shutting_down.pop(name, None)
            self._shutdowns.pop(name, None)


def cause_detail(plan: Plan, desired: Domain | None, history: History) -> dict[str, Any]:
    """What is recorded with the plan's events: the manifest's generation, or who asked."""
    if plan.cause is Cause.API and history.host_shutdown is not None:
        return {"uid": history.host_shutdown.uid}
    if plan.cause is Cause.API and history.override is not None:
        return {"uid": history.override.uid}
    if plan.cause is Cause.MANIFEST and desired is not None:
        return {"generation": desired.generation}
    return {}


def _shutdown_timeout(desired: Domain | None, history: History) -> float:
    """The manifest's shutdownTimeout; for a removed domain the one it was started with."""
    spec = desired.spec if desired is not None else history.live_spec
    return spec.shutdown_timeout if spec is not None else DomainSpec.shutdown_timeout
