"""The status document of one domain, built from what one reconcile pass knows (DESIGN §6).

The status projection, in one place: `StatusProjector.project()` is called by the engine at
the end of every pass with what the pass saw and did; it reads the domain's ledger record,
works out what to show (the reason recorded before a re-attach while the driver only knows
"unknown", the pending restart-only changes), records in the ledger what must survive a
restart (the state seen and since when, the conditions with their transition times), and
writes the document with StatusStore. The document is an output: nothing reads it back.
`build_status(Facts)` is the pure part; conditions keep their lastTransitionTime while their
status holds (status.set_condition).

Conditions:
    Ready           the observed state is the desired one (running/blocked ↔ running); when
                    not, why: StateDiffers, Drift (management Observe), WaitingForDependency,
                    WaitingForStartSlot, WaitingForDependents (a removal)
    Synced          observedGeneration == generation, no live change left, no error; Drift
                    while management Observe leaves a difference alone
    PendingRestart  restart-only changes wait for the next start (updatePolicy Live)
    ManifestValid   the manifest is valid and unique; else `file:line:column: field: message`
                    (Invalid, NameConflict, DependencyCycle), or why the domain is going away
                    (removed, prune held)
    Stalled         backing off after failures, or stopped by a terminal error until the
                    manifest changes
    Overridden      an imperative API request (stop, start, ...) holds until the manifest
                    changes
    GuestAgent      the qemu guest agent answers (only for a domain with `guestAgent: true`)

A running domain's NICs are shown with their addresses (engine/interfaces.py), a shutoff
domain's managed-save image with its size and time (the driver's saved_image: a stat).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from controller.engine.desired import DesiredStore, Entry
from controller.engine.interfaces import agent_condition, interface_statuses
from controller.engine.ledger import Ledger
from controller.manifests.errors import Problem
from controller.protocol import rfc3339
from controller.state.registry import DomainRecord
from controller.state.status import (
    STATES_MEETING,
    Condition,
    ConditionStatus,
    ConditionType,
    DomainStatus,
    InterfaceStatus,
    PendingChange,
    SavedStatus,
    StatusStore,
    set_condition,
)
from reconcilers.decide import Action, Plan
from reconcilers.diff import Change, outstanding
from reconcilers.driver import Driver, GuestInterfaces, Live, SavedImage
from reconcilers.errors import DomctlError
from reconcilers.history import API_STATES, ApiAction, ApiRequest
from reconcilers.model import DesiredState, Domain, DriverName, Reason, State
from reconcilers.net.nics import spec_nics

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE


@dataclass(frozen=True)
class Facts:
    name: str
    uuid: str
    driver: DriverName
    desired: Domain | None
    entry: Entry | None
    live: Live
    plan: Plan | None = None
    error: str | None = None
    pending: tuple[Change, ...] = ()
    live_changes_left: bool = False
    restarts: int = 0
    id: int | None = None
    observed_generation: str | None = None
    since: float | None = None  # wall-clock seconds of the last state change
    failures: int = 0
    backoff_until: float | None = None  # wall-clock seconds
    stalled: str | None = None
    host_problem: bool = False  # the stall is a host validation error (re-checked)
    resync: float = 30.0
    removal_in: float = float("inf")
    conditions: tuple[Condition, ...] = ()  # as last projected
    now: float = 0.0  # wall-clock seconds
    override: str | None = None  # an API request in force, described
    override_state: DesiredState | None = None  # the state it asks for (Ready compares to it)
    interfaces: tuple[InterfaceStatus, ...] = ()
    agent: Condition | None = None  # GuestAgent, for a domain with a guest agent channel
    saved: SavedImage | None = None  # a shutoff domain's managed-save image
    display: str | None = None  # where a running VM's VNC server listens (Display.vnc)


def build_status(facts: Facts) -> DomainStatus:
    desired = facts.desired
    conditions = facts.conditions
    for condition in (_ready(facts), _synced(facts), _pending(facts), _manifest_valid(facts),
                      _stalled(facts), _overridden(facts), facts.agent):
        if condition is not None:
            conditions = set_condition(conditions, condition, facts.now)
    return DomainStatus(
        name=facts.name, uuid=facts.uuid, driver=facts.driver,
        desired=(facts.override_state or desired.spec.state) if desired is not None else None,
        state=facts.live.state, reason=facts.live.reason, pid=facts.live.pid, id=facts.id,
        generation=desired.generation if desired is not None else None,
        observedGeneration=facts.observed_generation, restarts=facts.restarts,
        since=rfc3339(facts.since) if facts.since is not None else None,
        backoffUntil=rfc3339(facts.backoff_until) if facts.backoff_until is not None else None,
        conditions=conditions, pending=tuple(PendingChange.from_change(c) for c in facts.pending),
        interfaces=facts.interfaces, saved=_saved(facts.saved),
        management=desired.spec.management if desired is not None else None,
        display=facts.display)


def _saved(image: SavedImage | None) -> SavedStatus | None:
    if image is None:
        return None
    return SavedStatus(path=image.path, size=image.size, savedAt=rfc3339(image.saved_at),
                       paused=image.paused)


def _observed(live: Live) -> str:
    return f"{live.state.value} ({live.reason.value})"


def _ready(facts: Facts) -> Condition:
    live, desired = facts.live, facts.desired
    if desired is None:
        return Condition(ConditionType.READY, F, "Removing",
                         f"manifest removed; {_observed(live)}")
    want = facts.override_state or desired.spec.state
    if live.state in STATES_MEETING[want]:  # a driver's warning (kvm under PVM) is kept
        _, marker, warning = live.message.partition("warning: ")
        return Condition(ConditionType.READY, T, "StateMatches", _observed(live)
                         + (f"; {marker}{warning}" if marker else ""))
    why = facts.plan.reason if facts.plan is not None else ""
    message = f"desired {want.value}, observed {_observed(live)}" + (f": {why}" if why else "")
    if live.message and live.state is State.NOSTATE:
        message += f" ({live.message})"
    held = facts.plan.condition if facts.plan is not None else ""
    return Condition(ConditionType.READY, F, held or "StateDiffers", message)


def _synced(facts: Facts) -> Condition:
    desired = facts.desired
    if facts.error is not None:
        return Condition(ConditionType.SYNCED, F, "Error", facts.error)
    if facts.plan is not None and facts.plan.condition == "Drift":  # management Observe
        return Condition(ConditionType.SYNCED, F, "Drift", facts.plan.reason)
    if desired is None:
        return Condition(ConditionType.SYNCED, F, "Removing", "manifest removed")
    if facts.observed_generation != desired.generation or facts.live_changes_left:
        return Condition(ConditionType.SYNCED, F, "Progressing",
                         facts.plan.reason if facts.plan is not None else "")
    return Condition(ConditionType.SYNCED, T, "Synced", f"generation {desired.generation}")


def _pending(facts: Facts) -> Condition:
    if not facts.pending:
        return Condition(ConditionType.PENDING_RESTART, F, "NoPendingChanges")
    fields = ", ".join(c.path for c in facts.pending)
    return Condition(ConditionType.PENDING_RESTART, T, "RestartRequired",
                     f"restart-only changes wait for the next start: {fields}")


def _manifest_valid(facts: Facts) -> Condition:
    entry = facts.entry
    if entry is None or (entry.domain is None and entry.missing_since is None):
        return Condition(ConditionType.MANIFEST_VALID, F, "NoManifest",
                         "no manifest declares this domain")
    if entry.problems:
        return Condition(ConditionType.MANIFEST_VALID, F, "Invalid",
                         _problems(entry.problems, "running on the last valid spec"))
    if entry.conflicts:
        cycle = all(p.field == "spec.dependsOn" for p in entry.conflicts)
        return Condition(ConditionType.MANIFEST_VALID, F,
                         "DependencyCycle" if cycle else "NameConflict",
                         _problems(entry.conflicts, "kept on the last valid spec"))
    if entry.held:
        return Condition(ConditionType.MANIFEST_VALID, F, "PruneHeld",
                         "manifest removed along with most others; removal held until "
                         "`domctl prune --confirm` (or the manifests come back)")
    if entry.missing_since is not None:
        when = (f"undefined in {facts.removal_in:.1f} s unless it comes back"
                if facts.removal_in > 0 else "being shut down and undefined")
        return Condition(ConditionType.MANIFEST_VALID, F, "ManifestRemoved",
                         f"manifest removed; {when}")
    source = entry.domain.source if entry.domain is not None else None
    where = f"{source.file}:{source.line}" if source is not None else ""
    return Condition(ConditionType.MANIFEST_VALID, T, "Valid", where)


def _problems(problems: list[Problem], what: str) -> str:
    return "; ".join(str(p) for p in problems) + f" ({what})"


def _stalled(facts: Facts) -> Condition:
    if facts.stalled is not None and facts.host_problem:
        return Condition(ConditionType.STALLED, T, "HostValidation",
                         f"{facts.stalled}; re-checked every {facts.resync:g} s and on "
                         "every manifest change")
    if facts.stalled is not None:
        return Condition(ConditionType.STALLED, T, "Terminal",
                         f"{facts.stalled}; no retry until the manifest changes")
    if facts.backoff_until is not None and facts.backoff_until > facts.now:
        return Condition(ConditionType.STALLED, T, "BackingOff",
                         f"{facts.failures} consecutive failure(s); next attempt at "
                         f"{rfc3339(facts.backoff_until)}")
    return Condition(ConditionType.STALLED, F, "NotStalled")


def _overridden(facts: Facts) -> Condition:
    if facts.override is None:
        return Condition(ConditionType.OVERRIDDEN, F, "FollowsManifest")
    return Condition(ConditionType.OVERRIDDEN, T, "ApiRequest", facts.override)


def _overrides(request: ApiRequest, desired: Domain | None) -> bool:
    """Whether `request` asks for something the manifest does not: `domctl start` of a domain
    the manifest runs anyway overrides nothing, so no Overridden condition stays behind."""
    if desired is None or request.action is ApiAction.RESTART:  # a restart is an act, not a state
        return True
    return API_STATES[request.action] is not desired.spec.state


def _waiting(view: PassView, live: Live, backoff_until: float | None,
             request: ApiRequest | None, now: float) -> float | None:
    """The crash-loop backoff's next attempt, shown only while one will come: the domain is
    meant to be up, is not, and was not deliberately left off (a REPORT plan: restartPolicy,
    an API stop, a stall); never a time already past."""
    if backoff_until is None or backoff_until <= now or live.state is State.RUNNING:
        return None
    want = (API_STATES[request.action] if request is not None
            else view.desired.spec.state if view.desired is not None else None)
    if want in (None, DesiredState.SHUTOFF):
        return None
    if view.plan is not None and view.plan.action is Action.REPORT:
        return None
    return backoff_until


GUEST_REFRESH = 10.0
"""Seconds a guest's own report of its addresses (container namespace, guest agent) is reused;
leases from dnsmasq are read at every pass."""

# The states in which a domain has NICs worth showing (a paused guest keeps its addresses).
_UP = frozenset({State.RUNNING, State.BLOCKED, State.PAUSED})

# Reasons a driver reports for a domain it just adopted and knows no history of.
_VAGUE = frozenset({Reason.UNKNOWN, Reason.STARTING_UP})


@dataclass(frozen=True)
class PassView:
    """What one pass saw and did, for its status."""

    name: str
    driver: DriverName
    desired: Domain | None
    live: Live
    plan: Plan | None = None
    error: DomctlError | None = None


class StatusProjector:
    def __init__(self, ledger: Ledger, store: DesiredStore, statuses: StatusStore,
                 drivers: Mapping[DriverName, Driver], wall: Callable[[], float],
                 resync: float,
                 leases: Callable[[], Mapping[str, Sequence[str]]] = dict) -> None:
        self._ledger = ledger
        self._leases = leases  # MAC → leased addresses, over the managed networks
        self._store = store
        self._statuses = statuses
        self._drivers = drivers
        self._wall = wall
        self._resync = resync
        # what each run's guest said, and when: a silent guest agent costs its timeout (~1 s),
        # which a pass must not pay every time (an action's reply waits for its status)
        self._guest: dict[tuple[str, int], tuple[float, GuestInterfaces]] = {}
        self._displays: dict[str, tuple[int, str | None]] = {}  # name → (pid, its VNC display)

    async def project(self, view: PassView,
                      backoff_until: float | None) -> DomainStatus | None:
        """Write `view.name`'s status document; `backoff_until` is wall-clock seconds."""
        name, now = view.name, self._wall()
        record = self._ledger.get(name)
        if record is None:
            return None
        saved = (self._drivers[view.driver].saved_image(name)
                 if view.live.state is State.SHUTOFF else None)
        live = self._shown(name, view.live, record, saved)
        since = now if record.state is not live.state else record.since
        failures = self._ledger.crash.failures(name)
        pending, live_left = self._pending(view, record)
        request = record.override if record.override and record.override.in_force(
            record.epoch) else None
        shown = request if request is not None and _overrides(request, view.desired) else None
        stalled = record.stalled if record.stalled and record.stalled.epoch == record.epoch \
            else None
        interfaces, agent = await self._interfaces(name, view.driver, live, record)
        status = build_status(Facts(
            name=name, uuid=record.uuid, driver=view.driver, desired=view.desired,
            entry=self._store.entry(name), live=live, plan=view.plan,
            error=str(view.error) if view.error is not None else None, pending=pending,
            live_changes_left=live_left, restarts=record.restarts,
            id=record.id if record.runtime is not None else None,
            observed_generation=record.observed_generation, since=since, failures=failures,
            backoff_until=_waiting(view, live, backoff_until, request, now),
            stalled=stalled.message if stalled is not None else None,
            host_problem=stalled is not None and stalled.host, resync=self._resync,
            removal_in=self._store.removal_in(name), conditions=record.conditions, now=now,
            override=shown.describe() if shown is not None else None,
            override_state=API_STATES[shown.action] if shown is not None else None,
            interfaces=interfaces, agent=agent, saved=saved,
            display=await self._display(name, view.driver, live, record)))
        self._ledger.update(name, state=live.state, reason=live.reason, since=since,
                            failures=failures, conditions=status.conditions)
        await self._statuses.publish(status)
        return status

    async def _interfaces(self, name: str, driver: DriverName, live: Live, record: DomainRecord,
                          ) -> tuple[tuple[InterfaceStatus, ...], Condition | None]:
        """The NICs of a running domain with their addresses, and its agent's condition."""
        spec = record.live_spec
        if spec is None or record.runtime is None or live.state not in _UP:
            return (), None
        has_agent = spec.qemu is not None and spec.qemu.guest_agent
        if not spec_nics(spec) and not has_agent:
            return (), None
        guest = await self._guest_of(name, driver, record.runtime.pid)
        return interface_statuses(name, spec, guest, self._leases()), agent_condition(guest)

    async def _display(self, name: str, driver: DriverName, live: Live,
                       record: DomainRecord) -> str | None:
        """A running VM's VNC display, asked of its driver once per run (qemu chose the port at
        its start: `vnc: {}` takes the first free one), for `get -o wide`."""
        spec = record.live_spec
        if (spec is None or spec.qemu is None or spec.qemu.vnc is None or record.runtime is None
                or live.state not in _UP):
            self._displays.pop(name, None)
            return None
        pid = record.runtime.pid
        known = self._displays.get(name)
        if known is None or known[0] != pid:
            try:
                display = await self._drivers[driver].display(name)
            except DomctlError:  # gone meanwhile: the next pass sees it
                return None
            known = self._displays[name] = (pid, display.vnc if display is not None else None)
        return known[1]

    async def _guest_of(self, name: str, driver: DriverName, pid: int) -> GuestInterfaces:
        """The driver's guest-side view of `name`'s NICs, asked again at most every
        GUEST_REFRESH seconds per run (a new process asks at once)."""
        now = self._wall()
        cached = self._guest.get((name, pid))
        if cached is not None and now - cached[0] < GUEST_REFRESH:
            return cached[1]
        guest = await self._drivers[driver].interfaces(name)
        for key in [key for key in self._guest if key[0] == name]:
            del self._guest[key]  # an earlier run's answer
        self._guest[(name, pid)] = (now, guest)
        return guest

    def _shown(self, name: str, live: Live, record: DomainRecord,
               saved: SavedImage | None) -> Live:
        """The live state as shown: a shutoff of unknown reason shows `saved` when it has a
        managed-save image (only a save leaves one), else the last stop's reason; an adopted
        domain keeps the reason recorded before the re-attach while the driver only knows it
        vaguely, until its state changes."""
        stop = record.last_stop
        if (live.state, live.reason) == (State.SHUTOFF, Reason.UNKNOWN):
            if saved is not None:
                live = dataclasses.replace(live, reason=Reason.SAVED)
            elif stop is not None:
                live = dataclasses.replace(live, reason=stop.reason)
        adopted = self._ledger.adopted.get(name)
        if adopted is not None:
            if live.state is adopted[0] and live.reason in _VAGUE:
                live = dataclasses.replace(live, reason=adopted[1])
            else:
                del self._ledger.adopted[name]
        return live

    def _pending(self, view: PassView,
                 record: DomainRecord) -> tuple[tuple[Change, ...], bool]:
        """Restart-only changes waiting for a start, and whether live ones are left (one
        diff, none for a converged domain)."""
        if view.desired is None:
            return (), False
        restart, live = outstanding(view.desired.spec, record.live_spec,
                                    self._drivers[view.driver].classify)
        return restart, bool(live)

