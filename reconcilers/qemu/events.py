"""What QMP events and process exits mean in libvirt's vocabulary: pure functions, tested as tables.

Called by QemuDriver's Tracker (tracking.py) for every QMP event and once when the process
exits. The driver keeps one RunState per domain; `on_event` updates it and returns a Reaction: the
RuntimeEvent to report (if any) and what the driver must do next (quit qemu, reset it).
Each outcome names state-machine triggers taken from the state the driver last learnt; the
state, reason and libvirt events come from reconcilers/statemachine.py. A QMP event that no
row allows from that state (a STOP of a guest already paused) changes nothing and reports
nothing: observe() reads the truth from qemu anyway.

Lifecycle, with `-no-shutdown` and `-action reboot=reset|shutdown,panic=pause` (argv.py):
- guest power-off: SHUTDOWN{guest, guest-shutdown} + STOP. on_poweroff destroy (or any
  shutdown we asked for) → QUIT, the exit is guest-poweroff: shutoff/shutdown with
  shutdown/guest (shutdown/finished when we asked) and stopped/shutdown. restart → RESET:
  system_reset + cont, guest-halt then reset: running/booted, shutdown/guest + started/booted.
  preserve → guest-halt, the process stays: paused/shutdown, shutdown/guest.
- guest reboot: on_reboot restart is qemu's own reset (QMP RESET events, no state change);
  destroy/preserve make qemu send SHUTDOWN{guest, guest-reset} and the power-off rules apply
  with the on_reboot action.
- guest panic: GUEST_PANICKED (+ STOP) → crashed/panicked, crashed/panicked; then on_crash
  destroy → QUIT (exit: shutoff/crashed, stopped/crashed, as any destroy of a crashed domain),
  restart → RESET (panic then reset: running/booted), preserve → stays.
- STOP after WATCHDOG{pause} or BLOCK_IO_ERROR{stop} → paused/watchdog or paused/ioerror; any
  other STOP or RESUME we did not ask for → paused/unknown or running/unpaused, cause external.
- SHUTDOWN{host, host-signal} (a SIGTERM, SIGINT or SIGHUP to qemu) not sent by our destroy:
  qemu exits next, reported as host-poweroff: shutoff/shutdown with shutdown/host and
  stopped/shutdown (libvirt's qemuProcessHandleShutdown); our own destroy's SIGTERM emits
  stopped/destroyed only (libvirt ignores the SHUTDOWN of a domain it destroys).
- an in-place restart's guest-halt/panic then reset is observed as running/booted while the
  reset is under way (`resetting`), so no pass sees a guest "left for the operator" or
  destroys a panicked guest being restarted.
- managed save (QemuDriver.save): its `stop` is no pause of the domain's (the state stays
  running or paused, as it was); the exit once the image is complete (Intent.SAVED) is the
  save's: shutoff/saved, with suspended/paused then stopped/saved from running, stopped/saved
  alone from paused. An exit before that (a kill -9 mid-save) is any other exit.
- process exit: destroyed by us → shutoff/destroyed (shutoff/crashed when it had crashed); a
  start we aborted → shutoff/failed; after a guest stop we acted on → as above; anything else
  (kill -9, a qemu crash, the process of a preserved guest) → shutoff/crashed, stopped/failed.

It never talks to qemu and never reads the clock: the driver does both.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconcilers.driver import RuntimeEvent, runtime_event
from reconcilers.model import Cause, Lifecycle, LifecycleAction, Reason, State
from reconcilers.statemachine import TransitionError, Trigger, allowed, transition


class Intent(str, enum.Enum):
    """What the driver last asked of the domain, so what follows can be attributed."""

    NONE = "none"
    SUSPEND = "suspend"  # a STOP is ours
    RESUME = "resume"  # a RESUME is ours
    SHUTDOWN = "shutdown"  # system_powerdown sent; the guest's power-off ends the process
    DESTROY = "destroy"  # SIGTERM/SIGKILL or quit sent by destroy()
    ABORT = "abort"  # a start failed half-way; the driver killed its qemu
    SAVE = "save"  # a managed save is under way: its STOP is ours, an exit is no save
    SAVED = "saved"  # the save's image is complete: the exit that follows is the save's


class GuestStop(str, enum.Enum):
    """Why the guest stopped its vCPUs for good, as qemu said."""

    NONE = "none"
    POWEROFF = "poweroff"  # SHUTDOWN reason guest-shutdown
    REBOOT = "reboot"  # SHUTDOWN reason guest-reset (on_reboot is not restart)
    PANIC = "panic"  # GUEST_PANICKED
    HOST = "host"  # SHUTDOWN reason host-signal: someone else's SIGTERM/SIGINT/SIGHUP to qemu


class FollowUp(str, enum.Enum):
    NONE = "none"
    QUIT = "quit"  # end the process (a destroy-type lifecycle action)
    RESET = "reset"  # system_reset + cont (a restart-type lifecycle action)


@dataclass
class RunState:
    """A domain's run state as the driver last learnt it (events update it)."""

    state: State
    reason: Reason
    intent: Intent = Intent.NONE
    guest_stop: GuestStop = GuestStop.NONE
    pause_cause: Trigger | None = None  # the next STOP's, set by WATCHDOG and BLOCK_IO_ERROR
    resetting: bool = False
    """An in-place restart (FollowUp.RESET) is under way: the state already says running/booted
    while qemu still says shutdown or guest-panicked, until the reset's `cont`."""


@dataclass(frozen=True)
class Reaction:
    event: RuntimeEvent | None = None
    follow_up: FollowUp = FollowUp.NONE


_STATUS = {  # query-status → state and the reason when the driver knows no better
    "running": (State.RUNNING, Reason.UNKNOWN), "paused": (State.PAUSED, Reason.UNKNOWN),
    "prelaunch": (State.PAUSED, Reason.STARTING_UP), "shutdown": (State.PAUSED, Reason.SHUTDOWN),
    "guest-panicked": (State.CRASHED, Reason.PANICKED), "io-error": (State.PAUSED, Reason.IOERROR),
    "watchdog": (State.PAUSED, Reason.WATCHDOG), "inmigrate": (State.PAUSED, Reason.MIGRATION),
    "postmigrate": (State.PAUSED, Reason.MIGRATION),
    "finish-migrate": (State.PAUSED, Reason.MIGRATION), "save-vm": (State.PAUSED, Reason.SAVE),
    "restore-vm": (State.PAUSED, Reason.SAVE), "suspended": (State.PMSUSPENDED, Reason.UNKNOWN),
    "debug": (State.PAUSED, Reason.UNKNOWN), "internal-error": (State.PAUSED, Reason.UNKNOWN),
    "colo": (State.RUNNING, Reason.UNKNOWN),
}


def from_status(status: str, run: RunState) -> tuple[State, Reason]:
    """The state for a query-status answer, keeping the reason the driver knows if it fits."""
    state, reason = _STATUS.get(status, (State.NOSTATE, Reason.UNKNOWN))
    if run.resetting and state in (State.PAUSED, State.CRASHED):
        return run.state, run.reason  # restarted in place: no operator needed, no destroy
    if state is run.state and reason in (Reason.UNKNOWN, Reason.STARTING_UP):
        reason = run.reason  # e.g. running/booted vs running/unpaused, paused/user
    if state is State.RUNNING and run.intent is Intent.SHUTDOWN:
        return State.SHUTDOWN, Reason.USER
    return state, reason


_DESTROY_ACTIONS = frozenset({LifecycleAction.DESTROY, LifecycleAction.COREDUMP_DESTROY})
_RESTART_ACTIONS = frozenset({LifecycleAction.RESTART, LifecycleAction.COREDUMP_RESTART})


def _move(name: str, run: RunState, triggers: tuple[Trigger, ...], cause: Cause,
          message: str) -> RuntimeEvent | None:
    """Take `triggers` from the recorded state and report them; None (and no change) when the
    table does not allow them from there."""
    try:
        event = runtime_event(name, run.state, triggers, cause, message)
    except TransitionError:
        return None
    run.state, run.reason = event.state, event.reason
    return event


def settle(run: RunState, trigger: Trigger) -> None:
    """Record one of the driver's own operations that qemu carried out (suspend, resume): its
    row's state and reason, no event (the reconciler reports its own operations' events)."""
    if allowed(run.state, trigger):
        move = transition(run.state, trigger)
        run.state, run.reason = move.target, move.reason
    run.intent = Intent.NONE


def on_event(name: str, event: str, data: Mapping[str, Any], run: RunState,
             lifecycle: Lifecycle) -> Reaction:
    """Update `run` for one QMP event; what to report and do next."""
    if event == "GUEST_PANICKED" or (event == "SHUTDOWN" and data.get("guest")
                                     and data.get("reason") == "guest-panic"):
        if run.guest_stop is GuestStop.PANIC:
            return Reaction()  # qemu may report one panic twice
        run.guest_stop = GuestStop.PANIC
        return _lifecycle(name, run, Trigger.PANIC, lifecycle.on_crash)
    if (event == "SHUTDOWN" and not data.get("guest") and data.get("reason") == "host-signal"
            and run.intent not in (Intent.DESTROY, Intent.ABORT, Intent.SAVED)):
        run.guest_stop = GuestStop.HOST  # qemu exits next: reported then as shutdown/host
        return Reaction()
    if event == "SHUTDOWN" and data.get("guest"):
        reboot = data.get("reason") == "guest-reset"
        run.guest_stop = GuestStop.REBOOT if reboot else GuestStop.POWEROFF
        if run.intent is Intent.SHUTDOWN:
            return Reaction(follow_up=FollowUp.QUIT)  # the exit reports shutdown/finished
        return _lifecycle(name, run, Trigger.GUEST_HALT,
                          lifecycle.on_reboot if reboot else lifecycle.on_poweroff)
    if event == "WATCHDOG" and data.get("action") == "pause":
        run.pause_cause = Trigger.WATCHDOG
    elif event == "BLOCK_IO_ERROR" and data.get("action") == "stop":
        run.pause_cause = Trigger.IOERROR
    elif event == "STOP":
        return _stop(name, run)
    elif event == "RESUME":
        return _resume(name, run)
    return Reaction()


def _lifecycle(name: str, run: RunState, trigger: Trigger, action: LifecycleAction) -> Reaction:
    """Carry out a lifecycle action for a guest that stopped: PANIC or GUEST_HALT."""
    what = {GuestStop.PANIC: "panicked", GuestStop.REBOOT: "rebooted"}.get(run.guest_stop,
                                                                           "powered off")
    if action in _DESTROY_ACTIONS:
        # a panic is reported now; a power-off with the exit, as guest-poweroff
        panicked = (_move(name, run, (trigger,), Cause.GUEST, f"guest {what}; destroying it")
                    if trigger is Trigger.PANIC else None)
        return Reaction(panicked, FollowUp.QUIT)
    if action in _RESTART_ACTIONS:
        # guest_stop stays set until the RESUME of the reset's `cont`: the STOP still to come
        # belongs to this stop, not to a pause
        event = _move(name, run, (trigger, Trigger.RESET), Cause.GUEST,
                      f"guest {what}; restarted in place")
        run.resetting = event is not None
        return Reaction(event, FollowUp.RESET)
    return Reaction(_move(name, run, (trigger,), Cause.GUEST, f"guest {what}; preserved"))


_ENDING = frozenset({Intent.SHUTDOWN, Intent.DESTROY, Intent.SAVE, Intent.SAVED})


def _stop(name: str, run: RunState) -> Reaction:
    if run.guest_stop is not GuestStop.NONE or run.intent in _ENDING:
        return Reaction()  # part of a guest's stop, or of an end we asked for (a save's too)
    guest_cause, run.pause_cause = run.pause_cause, None
    if run.intent is Intent.SUSPEND:
        settle(run, Trigger.SUSPEND)
        return Reaction()
    trigger = guest_cause or Trigger.EXTERNAL_PAUSE
    return Reaction(_move(name, run, (trigger,), Cause.GUEST if guest_cause else Cause.EXTERNAL,
                          f"paused without a request from domctl ({trigger.value})"))


def _resume(name: str, run: RunState) -> Reaction:
    if run.state is State.RUNNING:  # the `cont` of a start or an in-place restart: reported
        run.guest_stop, run.resetting = GuestStop.NONE, False
        if run.intent is Intent.RESUME:
            run.intent = Intent.NONE
        return Reaction()
    if run.intent is Intent.RESUME:
        settle(run, Trigger.RESUME)
        return Reaction()
    return Reaction(_move(name, run, (Trigger.RESUME,), Cause.EXTERNAL,
                          "resumed without a request from domctl"))


def missed_stop(state: State, reason: Reason) -> tuple[str, dict[str, Any]] | None:
    """The QMP event of a guest found powered off or panicked when re-attaching, for the driver
    to replay on the running state it had, so its lifecycle action is applied now (libvirt's
    reconnect finishes a shutdown it finds half done); None when it stopped for no guest."""
    if (state, reason) == (State.PAUSED, Reason.SHUTDOWN):
        return "SHUTDOWN", {"guest": True, "reason": "guest-shutdown"}
    if state is State.CRASHED:
        return "GUEST_PANICKED", {"action": "pause"}
    return None


def on_exit(name: str, run: RunState, qemu_message: str = "") -> RuntimeEvent:
    """The shutoff state and events for the end of the qemu process."""
    if run.intent is Intent.ABORT:
        return runtime_event(name, State.SHUTOFF, (Trigger.START_FAILED,), Cause.CONTROLLER,
                             "start failed; qemu killed")
    if run.intent is Intent.DESTROY:
        return runtime_event(name, run.state, (Trigger.DESTROY,), Cause.CONTROLLER,
                             "destroyed by domctl")
    if run.intent is Intent.SAVED and allowed(run.state, Trigger.SAVE):
        return runtime_event(name, run.state, (Trigger.SAVE,), Cause.CONTROLLER,
                             "managed save: the guest's state is in its image")
    if run.state is State.CRASHED:  # onCrash destroy's quit
        return runtime_event(name, State.CRASHED, (Trigger.DESTROY,), Cause.GUEST,
                             "guest panicked; destroyed (onCrash)")
    host = run.guest_stop is GuestStop.HOST or (  # the event may be lost with the socket
        run.guest_stop is GuestStop.NONE and "terminating on signal" in qemu_message)
    if host and allowed(run.state, Trigger.HOST_POWEROFF):
        return runtime_event(name, run.state, (Trigger.HOST_POWEROFF,), Cause.EXTERNAL,
                             "qemu stopped by a signal from the host"
                             + (f": {qemu_message}" if qemu_message else ""))
    if run.guest_stop in (GuestStop.POWEROFF, GuestStop.REBOOT):
        what = "rebooted" if run.guest_stop is GuestStop.REBOOT else "powered off"
        if run.intent is Intent.SHUTDOWN:
            return runtime_event(name, State.SHUTDOWN, (Trigger.GUEST_POWEROFF,),
                                 Cause.CONTROLLER, "shut down at domctl's request")
        if allowed(run.state, Trigger.GUEST_POWEROFF):  # not a preserved guest, ended later
            return runtime_event(name, run.state, (Trigger.GUEST_POWEROFF,), Cause.GUEST,
                                 f"guest {what}")
    message = "qemu exited without a guest shutdown (killed or crashed)"
    return runtime_event(name, run.state, (Trigger.PROCESS_EXIT,), Cause.EXTERNAL,
                         f"{message}: {qemu_message}" if qemu_message else message)
