"""The status document of one domain, built from what one reconcile pass knows (DESIGN §6).

Called by the controller at the end of every pass (and when a domain is waiting out its
removal grace period) with a `Facts`: the desired entry, the observed state, the plan and its
error, the pending restart-only changes, backoff and bookkeeping. A pure function: the
controller writes the result with StatusStore; conditions keep their lastTransitionTime while
their status holds (status.set_condition).

Conditions:
    Ready           the observed state is the desired one (running/blocked ↔ running)
    Synced          observedGeneration == generation, no live change left, no error
    PendingRestart  restart-only changes wait for the next start (updatePolicy Live)
    ManifestValid   the manifest is valid and unique; else `file:line:column: field: message`,
                    or why the domain is going away (removed, prune held)
    Stalled         backing off after failures, or stopped by a terminal error until the
                    manifest changes
    Overridden      an imperative API request (stop, start, ...) holds until the manifest
                    changes
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.engine.clock import rfc3339
from controller.engine.desired import Entry
from controller.state.status import (STATES_MEETING, Condition, ConditionStatus, ConditionType,
                               DomainStatus, PendingChange, set_condition)
from reconcilers.decide import Plan
from reconcilers.diff import Change
from reconcilers.driver import Live
from reconcilers.model import DesiredState, Domain, DriverName, State

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
    revalidate: float = 30.0
    removal_in: float = float("inf")
    previous: DomainStatus | None = None
    now: float = 0.0  # wall-clock seconds
    override: str | None = None  # an API request in force, described
    override_state: DesiredState | None = None  # the state it asks for (Ready compares to it)


def build_status(facts: Facts) -> DomainStatus:
    desired = facts.desired
    conditions = facts.previous.conditions if facts.previous is not None else ()
    for condition in (_ready(facts), _synced(facts), _pending(facts), _manifest_valid(facts),
                      _stalled(facts), _overridden(facts)):
        conditions = set_condition(conditions, condition, facts.now)
    return DomainStatus(
        name=facts.name, uuid=facts.uuid, driver=facts.driver,
        desired=(facts.override_state or desired.spec.state) if desired is not None else None,
        state=facts.live.state, reason=facts.live.reason, pid=facts.live.pid, id=facts.id,
        generation=desired.generation if desired is not None else None,
        observedGeneration=facts.observed_generation, restarts=facts.restarts,
        since=rfc3339(facts.since) if facts.since is not None else None,
        backoffUntil=rfc3339(facts.backoff_until) if facts.backoff_until is not None else None,
        conditions=conditions, pending=tuple(PendingChange.from_change(c) for c in facts.pending))


def _observed(live: Live) -> str:
    return f"{live.state.value} ({live.reason.value})"


def _ready(facts: Facts) -> Condition:
    live, desired = facts.live, facts.desired
    if desired is None:
        return Condition(ConditionType.READY, F, "Removing",
                         f"manifest removed; {_observed(live)}")
    want = facts.override_state or desired.spec.state
    if live.state in STATES_MEETING[want]:
        return Condition(ConditionType.READY, T, "StateMatches", _observed(live))
    why = facts.plan.reason if facts.plan is not None else ""
    message = f"desired {want.value}, observed {_observed(live)}" + (f": {why}" if why else "")
    if live.message and live.state is State.NOSTATE:
        message += f" ({live.message})"
    return Condition(ConditionType.READY, F, "StateDiffers", message)


def _synced(facts: Facts) -> Condition:
    desired = facts.desired
    if facts.error is not None:
        return Condition(ConditionType.SYNCED, F, "Error", facts.error)
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
        return Condition(ConditionType.MANIFEST_VALID, F, "NameConflict",
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


def _problems(problems: list, what: str) -> str:
    return "; ".join(str(p) for p in problems) + f" ({what})"


def _stalled(facts: Facts) -> Condition:
    if facts.stalled is not None and facts.host_problem:
        return Condition(ConditionType.STALLED, T, "HostValidation",
                         f"{facts.stalled}; re-checked every {facts.revalidate:g} s and on "
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
