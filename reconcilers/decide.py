"""The reconciler's decision: `decide(desired, live, history) -> Plan`, a pure function.

Called by the reconciler (reconcilers/domain.py) on every pass, after it has read the desired
spec and observed the domain; the executor carries the Plan out under the domain's job lock.
It must never do I/O, read a clock (`history.now` is passed in) or call a driver.

| desired        | observed (state/reason)            | plan                                       |
|----------------|------------------------------------|--------------------------------------------|
| any, or None   | nostate                            | REPORT: unknown process, never touched     |
| running        | running, blocked                   | spec changes (below), else NOTHING         |
| running        | paused user                        | RESUME (manifest: we paused it as asked)   |
| running        | paused unknown/starting up         | RESUME (drift: someone else paused it)     |
| running/paused | paused ioerror/watchdog/panicked/  | REPORT: left for the operator              |
|                | migration/save/dump/shutdown       |                                            |
| paused         | running, blocked                   | SUSPEND                                    |
| paused         | paused user/unknown/starting up    | spec changes (below), else NOTHING         |
| running/paused | shutoff, no stop since the last    | START / START_PAUSED (manifest)            |
|                | manifest change                    |                                            |
| running/paused | shutoff, stopped since then        | restart rules (below), in backoff: NOTHING |
|                |                                    | with requeue_after = time left             |
| running/paused | crashed                            | onCrash preserve: REPORT; else DESTROY,    |
|                |                                    | cause guest (the onCrash action: the stop  |
|                |                                    | stays the guest's crash)                   |
| running/paused | shutdown (being shut down)         | NOTHING: wait for it to stop               |
| running/paused | pmsuspended                        | REPORT                                     |
| shutoff        | shutoff                            | NOTHING                                    |
| shutoff, save  | running, blocked, paused user/     | SAVE (managed save: shutoff/saved)         |
|                | unknown/starting up                |                                            |
| shutoff / None | running, blocked, shutdown, pmsusp.| SHUTDOWN (graceful, destroy after timeout) |
| shutoff / None | paused user/unknown/starting up    | RESUME, so that the guest can shut down    |
| shutoff / None | other paused, crashed              | DESTROY (no guest to ask)                  |
| None           | shutoff                            | UNDEFINE (disk images are kept; a managed- |
|                |                                    | save image is discarded)                   |

"shutoff, save" is a desired shutoff with stopMode save (or a `domctl save` in force).

Restart rules, for a stop under the current manifest (LastStop.epoch == History.epoch):
stopped by a host shutdown (LastStop.host; the hold is over: the controller restarted) → start;
stopped through the API → left off (a user's stop is never undone); stopped by the manifest or
the controller for a non-failure reason (an update restart) → start; a guest panic (a qemu
domain's shutoff/crashed with cause guest: only a panic ends so) → onCrash restart: start,
destroy/preserve: the restart policy as for any failure (libvirt applies on_crash to guest
panics only: a kill -9 or a failed container init is a failure for the restart policy, never
an onCrash); failures (crashed, failed, daemon, unknown) → start unless restartPolicy Never;
a guest power-off → onPoweroff restart: start, preserve: left off, destroy: restartPolicy Always
starts, OnFailure and Never leave it off; any other stop → only Always starts. A manifest change
(new epoch) always allows a fresh start, without waiting for a backoff.

Spec changes of an up domain (diff of History.live_spec → desired): restart-only ones with
updatePolicy Restart → RESTART (running; graceful) or DESTROY then START_PAUSED (paused: a
paused guest cannot shut down); live ones → APPLY_LIVE; restart-only ones with updatePolicy
Live → NOTHING (the caller shows them as PendingRestart via diff.pending_restart).

A start of a domain with a managed-save image (History.saved) restores it instead (RESTORE:
running, or paused when it was saved paused, with requeue_after 0 when that is not the desired
state, so that the next pass resumes or suspends it), unless a `domctl start --force-boot` made
after the save is in force or the manifest changed a restart-only field since the save (the
driver's classify of the image's spec against the desired one): then the START discards the
image first (Plan.discard says why, for the started event's message).

Around the table, the inputs that are not the manifest (all in History, never bent by the
caller):
- A host shutdown holding the domain (`host_shutdown`): down by the hold's mode (SAVE or
  SHUTDOWN, cause api), then NOTHING, whatever the manifest or a request say, until the
  controller restarts. A managed save under way outside the work queue (`saving`): NOTHING.
- A manifest removed but inside its grace period, or held by the mass-prune guard
  (`removal_in`): NOTHING, reconciled again when the grace period ends.
- An API request in force (`override`, made under the current epoch): the domain is driven
  to the state the request asks for (API_STATES), and every acting plan is the API's (cause
  `api`). `start`/`restart` are explicit starts: a stop or a stall from before the request
  does not hold the start back, and the start is immediate (no backoff). `restart` brings the
  domain down first, then follows the manifest's state. `stop` and `restart` shut down
  gracefully whatever stopMode says; `save` saves (API_STOP_MODES).
- A terminal error under the current manifest (History.stalled) turns every acting plan into
  REPORT until the manifest changes; a host-validation stall (a missing file, no kvm) lets
  the start through, since a start validates the host before anything else (schedule()
  brings such a domain back every `revalidate` seconds).

Management Observe (the manifest's, or the last manifest's once it is removed): every acting
plan that is not the API's (cause api: an explicit `domctl start` etc. is the user's, carried
out) becomes REPORT, its reason naming the drift ("Drift: state running wanted, shutoff
seen") and what Enforce would do; nothing is ever started, stopped, applied or undefined.

Ordering: a start (START, START_PAUSED, RESTORE) waits, NOTHING, while a dependency is not
Ready (`waiting_for`, reason "waiting for dependency: ...") or no start slot is free
(`start_slot`, --max-parallel-starts); the engine requeues it when a dependency's status
changes or a start ends. A removed domain is not brought down while domains that depend on it
and are being removed too are up (`dependents_up`): dependents stop first.

REPORT means: leave the domain, set a condition with the reason; NOTHING means converged or
waiting. Plans that start a multi-pass sequence (resume then shutdown, destroy then start,
shutdown then undefine) carry requeue_after=0.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from reconcilers.diff import Apply, Change, classify_changes
from reconcilers.driver import Live, SavedImage
from reconcilers.history import (
    API_STATES,
    API_STOP_MODES,
    EXPLICIT_STARTS,
    ApiAction,
    ApiRequest,
    History,
    HostShutdown,
    LastStop,
)
from reconcilers.model import (
    Cause,
    DesiredState,
    Domain,
    DomainSpec,
    DriverName,
    LifecycleAction,
    Management,
    Reason,
    RestartPolicy,
    State,
    StopMode,
    UpdatePolicy,
)
from reconcilers.statemachine import UP_STATES, Trigger


class Action(str, enum.Enum):
    NOTHING = "nothing"
    START = "start"
    START_PAUSED = "start-paused"
    SUSPEND = "suspend"
    RESUME = "resume"
    SHUTDOWN = "shutdown"  # graceful, then destroy after shutdownTimeout
    DESTROY = "destroy"
    APPLY_LIVE = "apply-live"
    RESTART = "restart"  # graceful shutdown, then start
    UNDEFINE = "undefine"
    SAVE = "save"  # managed save: the guest's state to an image, then shutoff/saved
    RESTORE = "restore"  # start from the managed-save image (paused if it was saved paused)
    REPORT = "report"  # leave the domain as it is; set a condition with the reason


# The state-machine trigger each acting plan begins with, for the executor's checks and events.
FIRST_TRIGGER: Mapping[Action, Trigger] = {
    Action.START: Trigger.START, Action.START_PAUSED: Trigger.START_PAUSED,
    Action.SUSPEND: Trigger.SUSPEND, Action.RESUME: Trigger.RESUME,
    Action.SHUTDOWN: Trigger.SHUTDOWN, Action.DESTROY: Trigger.DESTROY,
    Action.RESTART: Trigger.SHUTDOWN, Action.SAVE: Trigger.SAVE,
    Action.RESTORE: Trigger.RESTORE,  # RESTORE_PAUSED when the image was saved paused
}
STARTS = frozenset({Action.START, Action.START_PAUSED, Action.RESTORE})


@dataclass(frozen=True)
class Plan:
    action: Action
    cause: Cause  # recorded on the events the action causes
    reason: str  # for logs and status: "restartPolicy Always: domain stopped (crashed); ..."
    requeue_after: float | None = None  # reconcile again after this many seconds, event or not
    changes: tuple[Change, ...] = ()  # the spec changes the plan puts into effect
    discard: str = ""  # a START that discards the managed-save image first: why
    condition: str = ""  # the Ready condition's reason while the plan holds the domain


_RESUMABLE = frozenset({Reason.USER, Reason.UNKNOWN, Reason.STARTING_UP})
_BOOTS = frozenset({Action.START, Action.START_PAUSED})
_STOPS = frozenset({Action.SHUTDOWN, Action.DESTROY, Action.RESUME, Action.SAVE})
_PAUSE_NOTES: Mapping[Reason, str] = {
    Reason.IOERROR: "a disk I/O error paused it", Reason.WATCHDOG: "its watchdog fired",
    Reason.PANICKED: "the guest panicked", Reason.MIGRATION: "a migration is in progress",
    Reason.SAVE: "a save is in progress", Reason.DUMP: "a dump is in progress",
    Reason.SHUTTING_DOWN: "the guest shut down and its process is kept",
}
FAILURE_REASONS = frozenset({Reason.CRASHED, Reason.FAILED, Reason.DAEMON, Reason.UNKNOWN})
_RESTART_ACTIONS = frozenset({LifecycleAction.RESTART, LifecycleAction.COREDUMP_RESTART})
_LEFT_OFF = "; left off until the manifest changes"


def decide(desired: Domain | None, live: Live, history: History) -> Plan:
    """What to do now; `desired` None means the manifest is gone (its grace period over)."""
    if history.removal_in is not None and history.removal_in > 0 and desired is not None:
        return _removal_wait(history.removal_in)
    if history.saving:
        return Plan(Action.NOTHING, Cause.CONTROLLER, "a managed save is under way")
    request = _in_force(history)
    if history.host_shutdown is not None and desired is not None \
            and live.state is not State.NOSTATE:
        plan = _held(desired.spec, live, history, history.host_shutdown)
    else:
        if request is not None and desired is not None:
            desired = _requested(desired, live, request)
        plan = _plan(desired, live, history)
    if history.shutting_down and plan.action in (Action.SHUTDOWN, Action.RESTART):
        return Plan(Action.NOTHING, Cause.CONTROLLER, "a graceful shutdown is under way; "
                    "destroyed if the guest is not off after shutdownTimeout")
    if plan.action not in (Action.NOTHING, Action.REPORT) and history.host_shutdown is None:
        if request is not None and desired is not None:
            plan = _by_request(plan, request, live)
        if desired is not None and history.saved is not None and plan.action in _BOOTS:
            plan = _from_image(plan, desired.spec, history.saved, history, request)
        plan = _unless_stalled(plan, history, request)
    if plan.action not in (Action.NOTHING, Action.REPORT) and plan.cause is not Cause.API \
            and _management(desired, history) is Management.OBSERVE:
        return _observe_only(plan, desired, live, history)
    if plan.action in STARTS:
        return _ordered(plan, history)
    if desired is None and history.dependents_up and plan.action in _STOPS:
        return Plan(Action.NOTHING, Cause.CONTROLLER, "manifest removed; waiting for its "
                    f"dependents to stop first: {', '.join(history.dependents_up)}",
                    condition="WaitingForDependents")
    return plan


def _management(desired: Domain | None, history: History) -> Management:
    """The manifest's management; once it is removed, the last manifest's."""
    spec = desired.spec if desired is not None else history.last_spec
    return spec.management if spec is not None else Management.ENFORCE


def _observe_only(plan: Plan, desired: Domain | None, live: Live, history: History) -> Plan:
    """Management Observe: what Enforce would do is only reported, with the drift."""
    return Plan(Action.REPORT, Cause.CONTROLLER,
                f"{describe_drift(desired, live, history)}; management Observe: not acting "
                f"(Enforce would {plan.action.value}: {plan.reason})", condition="Drift")


def describe_drift(desired: Domain | None, live: Live, history: History) -> str:
    """What differs between the manifest and the domain: its state, the spec of a domain
    that is up (the fields a start or apply would change)."""
    if desired is None:
        return f"Drift: manifest removed, domain defined ({_observed(live)})"
    wanted = desired.spec.state
    seen = live.state.value
    differs = {DesiredState.RUNNING: live.state not in UP_STATES,
               DesiredState.PAUSED: live.state is not State.PAUSED,
               DesiredState.SHUTOFF: live.state is not State.SHUTOFF}[wanted]
    drift = [f"state {wanted.value} wanted, {seen} seen"] if differs else []
    if history.live_spec is not None and live.state is not State.SHUTOFF:
        changed = [c for c in classify_changes(history.live_spec, desired.spec,
                                               history.classification)
                   if c.apply is not Apply.CONTROLLER]
        if changed:
            drift.append(f"spec differs: {_paths(tuple(changed))}")
    return f"Drift: {'; '.join(drift)}" if drift else "no drift"


def _ordered(plan: Plan, history: History) -> Plan:
    """A start waits for its dependencies to be Ready, then for a start slot."""
    if history.waiting_for:
        return Plan(Action.NOTHING, Cause.CONTROLLER, "waiting for dependency: "
                    f"{', '.join(history.waiting_for)} (then: {plan.reason})",
                    condition="WaitingForDependency")
    if not history.start_slot:
        return Plan(Action.NOTHING, Cause.CONTROLLER, "waiting for a start slot "
                    f"(--max-parallel-starts) (then: {plan.reason})",
                    condition="WaitingForStartSlot")
    return plan


def _held(spec: DomainSpec, live: Live, history: History, hold: HostShutdown) -> Plan:
    """A domain a host shutdown took down stays down until the controller restarts; one
    still up is brought down by the hold's mode."""
    if live.state is State.SHUTOFF:
        return Plan(Action.NOTHING, Cause.CONTROLLER, f"{_observed(live)}: {hold.describe()}")
    plan = _want_shutoff(replace(spec, stop_mode=hold.mode), live, history)
    return replace(plan, cause=Cause.API, reason=f"{plan.reason} ({hold.describe()})")


def _from_image(plan: Plan, spec: DomainSpec, saved: SavedImage, history: History,
                request: ApiRequest | None) -> Plan:
    """A start of a domain with a managed-save image: a restore, or a boot that discards the
    image when a forced boot was asked for since the save or a restart-only field changed."""
    why = _discard_why(spec, saved, history, request)
    if why:
        return replace(plan, discard=why,
                       reason=f"{plan.reason}; discarding its saved image: {why}")
    paused = plan.action is Action.START_PAUSED
    as_saved = "paused" if saved.paused else "running"
    return replace(plan, action=Action.RESTORE,
                   reason=f"{plan.reason} from its saved image (saved {as_saved})",
                   requeue_after=0.0 if saved.paused is not paused else plan.requeue_after)


def _discard_why(spec: DomainSpec, saved: SavedImage, history: History,
                 request: ApiRequest | None) -> str:
    """Why the image cannot be restored; "" when it can."""
    if (request is not None and request.action is ApiAction.START and request.force_boot
            and request.at >= saved.saved_at):
        return f"forced boot (domctl start --force-boot by uid {request.uid})"
    changes = classify_changes(saved.spec, spec, history.saved_classification)
    pending = tuple(c for c in changes if c.apply is Apply.RESTART)
    return f"restart-only changes since the save ({_paths(pending)})" if pending else ""


def _by_request(plan: Plan, request: ApiRequest, live: Live) -> Plan:
    """A plan that carries out an API request is the API's. What the controller does on its
    own while a request is in force (a restart after a crash, drift correction, onCrash) stays
    the controller's, counted as a restart; so is the start that completes a restart (libvirt:
    the domain restarts itself)."""
    if request.action is ApiAction.RESTART and live.state is State.SHUTOFF:
        return replace(plan, cause=Cause.CONTROLLER,
                       reason=f"{plan.reason} (completing a {request.describe()})")
    if plan.cause is not Cause.MANIFEST:
        return plan
    return replace(plan, cause=Cause.API, reason=f"{plan.reason} ({request.describe()})")


def _removal_wait(removal_in: float) -> Plan:
    if removal_in == float("inf"):
        return Plan(Action.NOTHING, Cause.CONTROLLER, "manifest removed; removal held until "
                    "`domctl prune --confirm`")
    return Plan(Action.NOTHING, Cause.CONTROLLER,
                f"manifest removed; undefined in {removal_in:.1f} s unless it comes back",
                requeue_after=removal_in)


def _in_force(history: History) -> ApiRequest | None:
    """The API request in force: one made under the current manifest epoch."""
    request = history.override
    return request if request is not None and request.in_force(history.epoch) else None


def _requested(desired: Domain, live: Live, request: ApiRequest) -> Domain:
    """The manifest's domain with the state the request drives it to. A restart asks for
    shutoff until the domain is down, then for the manifest's state."""
    if request.action is ApiAction.RESTART and live.state is State.SHUTOFF:
        return desired
    stop_mode = API_STOP_MODES.get(request.action, desired.spec.stop_mode)
    return replace(desired, spec=replace(desired.spec, state=API_STATES[request.action],
                                         stop_mode=stop_mode))


def _explicit_start(request: ApiRequest | None) -> float | None:
    """Up to when stops and stalls are overruled by an explicit start in force: those before
    a `domctl start`; every one while a `restart` is in force (its own shutdown included;
    the engine ends a restart request with the start it asks for)."""
    if request is None or request.action not in EXPLICIT_STARTS:
        return None
    return float("inf") if request.action is ApiAction.RESTART else request.at


def _stop_holds(history: History) -> LastStop | None:
    """The last stop, if it happened under the current manifest and no explicit start was
    asked for since: then the restart rules (and the backoff) decide whether to start."""
    stop = history.last_stop
    if stop is None or stop.epoch != history.epoch:
        return None
    explicit = _explicit_start(_in_force(history))
    return None if explicit is not None and explicit >= stop.at else stop


def _unless_stalled(plan: Plan, history: History, request: ApiRequest | None) -> Plan:
    """A terminal error under the current manifest blocks every action until the manifest
    changes or an explicit start comes after it; a host stall is re-tried periodically."""
    stalled = history.stalled
    if stalled is None or stalled.epoch != history.epoch:
        return plan
    explicit = _explicit_start(request)
    if explicit is not None and explicit >= stalled.at:
        return plan
    if stalled.host:  # the host may have been fixed: the start validates it first
        return replace(plan, reason=f"{plan.reason}; re-checking the host ({stalled.message})")
    return _report(f"stalled: {stalled.message}; no {plan.action.value} until the manifest "
                   "changes")


def _plan(desired: Domain | None, live: Live, history: History) -> Plan:
    if live.state is State.NOSTATE:
        return _report(f"unknown process ({live.message or 'identity not proven'}); "
                       "never touched")
    if desired is None:
        return _removed(live, history)
    return _BY_DESIRED[desired.spec.state](desired.spec, live, history)


def _report(why: str) -> Plan:
    return Plan(Action.REPORT, Cause.CONTROLLER, why)


def _observed(live: Live) -> str:
    return f"{live.state.value} ({live.reason.value})"


# --- desired running / paused -------------------------------------------------------------

def _want_running(spec: DomainSpec, live: Live, history: History) -> Plan:
    if live.state in UP_STATES:
        return _update(spec, history, Action.RESTART)
    if live.state is State.PAUSED and live.reason is Reason.USER:
        # only domctl pauses with reason user: the manifest (or an API request) said paused
        return Plan(Action.RESUME, Cause.MANIFEST, f"desired running: {_observed(live)}; resuming")
    if live.state is State.PAUSED and live.reason in _RESUMABLE:
        return Plan(Action.RESUME, Cause.CONTROLLER,
                    f"desired running: {_observed(live)} by someone else; resuming")
    return _not_up(spec, live, history, Action.START)


def _want_paused(spec: DomainSpec, live: Live, history: History) -> Plan:
    if live.state in UP_STATES:
        return Plan(Action.SUSPEND, Cause.MANIFEST, "desired paused: suspending")
    if live.state is State.PAUSED and live.reason in _RESUMABLE:
        return _update(spec, history, Action.DESTROY)
    return _not_up(spec, live, history, Action.START_PAUSED)


def _not_up(spec: DomainSpec, live: Live, history: History, start: Action) -> Plan:
    """A domain that should be up but is not running (nor paused by us)."""
    match live.state:
        case State.SHUTOFF:
            return _start(spec, live, history, start)
        case State.CRASHED:
            return _crashed(spec, live)
        case State.SHUTDOWN:
            return Plan(Action.NOTHING, Cause.CONTROLLER, "being shut down; waiting for it to stop")
        case State.PAUSED:
            note = _PAUSE_NOTES.get(live.reason, "domctl resumes only what it paused")
            return _report(f"{_observed(live)}: {note}; left for the operator")
        case _:
            return _report(f"{_observed(live)}: suspended by the guest; left until it wakes up")


def _update(spec: DomainSpec, history: History, restart: Action) -> Plan:
    """Spec changes of an up domain; `restart` is how restart-only changes are put in effect."""
    state = spec.state.value
    if history.live_spec is None:
        return Plan(Action.NOTHING, Cause.CONTROLLER, f"{state} as desired (live spec unknown)")
    changes = classify_changes(history.live_spec, spec, history.classification)
    pending = tuple(c for c in changes if c.apply is Apply.RESTART)
    live = tuple(c for c in changes if c.apply is Apply.LIVE)
    if pending and spec.update_policy is UpdatePolicy.RESTART:
        how = ("restarting gracefully" if restart is Action.RESTART else
               "a paused guest cannot shut down: destroying it, then starting it paused")
        return Plan(restart, Cause.MANIFEST, f"updatePolicy Restart: restart-only changes "
                    f"({_paths(pending)}); {how}",
                    requeue_after=0.0 if restart is Action.DESTROY else None,
                    changes=pending + live)
    waiting = f"; pending restart: {_paths(pending)}" if pending else ""
    if live:
        return Plan(Action.APPLY_LIVE, Cause.MANIFEST, f"applying live: {_paths(live)}{waiting}",
                    changes=live)
    return Plan(Action.NOTHING, Cause.CONTROLLER, f"{state} as desired{waiting}")


def _paths(changes: tuple[Change, ...]) -> str:
    return ", ".join(c.path for c in changes)


def _start(spec: DomainSpec, live: Live, history: History, start: Action) -> Plan:
    stop = _stop_holds(history)
    if stop is None:
        return Plan(start, Cause.MANIFEST,
                    f"desired {spec.state.value}: {_observed(live)}; starting")
    restart, why = _restart_verdict(spec, stop)
    if not restart:
        return _report(why + _LEFT_OFF)
    if history.backoff_until is not None and history.now < history.backoff_until:
        wait = history.backoff_until - history.now
        return Plan(Action.NOTHING, Cause.CONTROLLER,
                    f"{why}; crash-loop backoff after {history.failures} failures, "
                    f"next try in {wait:.0f} s", requeue_after=wait)
    return Plan(start, Cause.CONTROLLER, f"{why}; starting again")


def _restart_verdict(spec: DomainSpec, stop: LastStop) -> tuple[bool, str]:
    """Whether a stop under the current manifest is followed by a start, and why."""
    stopped = f"domain stopped ({stop.reason.value})"
    policy = spec.restart_policy
    if stop.host:
        return True, f"{stopped} by a host shutdown; back after the controller's restart"
    if stop.cause is Cause.API:
        return False, f"{stopped} through the API"
    if stop.reason in FAILURE_REASONS:
        if panicked(spec, stop):
            stopped = f"{stopped}: the guest panicked"
            if spec.lifecycle.on_crash in _RESTART_ACTIONS:
                return True, f"onCrash {spec.lifecycle.on_crash.value}: {stopped}"
        return policy is not RestartPolicy.NEVER, f"restartPolicy {policy.value}: {stopped}"
    if stop.cause in (Cause.MANIFEST, Cause.CONTROLLER):
        return True, f"{stopped} by the {stop.cause.value} to restart it"
    if stop.reason is Reason.SHUTDOWN and stop.cause is Cause.GUEST:
        on_poweroff = spec.lifecycle.on_poweroff
        if on_poweroff is not LifecycleAction.DESTROY:
            return (on_poweroff in _RESTART_ACTIONS,
                    f"onPoweroff {on_poweroff.value}: the guest powered off")
        stopped = "the guest powered off"
    return policy is RestartPolicy.ALWAYS, f"restartPolicy {policy.value}: {stopped}"


def panicked(spec: DomainSpec, stop: LastStop) -> bool:
    """Whether a stop was a guest panic: shutoff/crashed caused by the guest, which only the
    end of a panicked qemu guest is (a kill -9 is cause external; a container has no panic,
    its failed init is no onCrash either)."""
    return (stop.reason is Reason.CRASHED and stop.cause is Cause.GUEST
            and spec.driver is DriverName.QEMU)


def _crashed(spec: DomainSpec, live: Live) -> Plan:
    """A panicked guest. The driver carries out onCrash itself (qemu/events.py); this destroy
    is the fallback, and like the driver's own it is the guest's (cause guest), so the stop is
    recorded as the crash it was and the restart policy applies to it."""
    action = spec.lifecycle.on_crash
    if action is LifecycleAction.PRESERVE:
        return _report(f"{_observed(live)}; onCrash preserve: kept for inspection")
    return Plan(Action.DESTROY, Cause.GUEST,
                f"{_observed(live)}; onCrash {action.value}: destroying it", requeue_after=0.0)


# --- desired shutoff / removed ------------------------------------------------------------

def _want_shutoff(spec: DomainSpec, live: Live, history: History) -> Plan:
    if live.state is State.SHUTOFF:
        return Plan(Action.NOTHING, Cause.CONTROLLER, f"{_observed(live)} as desired")
    if spec.stop_mode is StopMode.SAVE and (live.state in UP_STATES or (
            live.state is State.PAUSED and live.reason in _RESUMABLE)):
        return Plan(Action.SAVE, Cause.MANIFEST, "desired shutoff (stopMode save): saving the "
                    "guest's state to its image, restored at the next start")
    return _stop(live, "desired shutoff", None)


def _removed(live: Live, history: History) -> Plan:
    if live.state is State.SHUTOFF:
        image = "; its saved image is discarded" if history.saved is not None else ""
        return Plan(Action.UNDEFINE, Cause.MANIFEST,
                    f"manifest removed: undefining (disk images are kept{image})")
    return _stop(live, "manifest removed", 0.0)


def _stop(live: Live, why: str, requeue_after: float | None) -> Plan:
    """Bring a live domain down; `requeue_after` 0 when more follows (the undefine)."""
    if live.state is State.PAUSED and live.reason in _RESUMABLE:
        return Plan(Action.RESUME, Cause.MANIFEST,
                    f"{why}: resuming so that the guest can shut down gracefully",
                    requeue_after=0.0)
    if live.state in (State.PAUSED, State.CRASHED):
        return Plan(Action.DESTROY, Cause.MANIFEST,
                    f"{why}: {_observed(live)} cannot shut down gracefully; destroying",
                    requeue_after=requeue_after)
    return Plan(Action.SHUTDOWN, Cause.MANIFEST,
                f"{why}: shutting down (destroyed after shutdownTimeout)",
                requeue_after=requeue_after)


_BY_DESIRED: Mapping[DesiredState, Callable[[DomainSpec, Live, History], Plan]] = {
    DesiredState.RUNNING: _want_running,
    DesiredState.PAUSED: _want_paused,
    DesiredState.SHUTOFF: _want_shutoff,
}
