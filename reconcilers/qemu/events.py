"""What QMP events and process exits mean in libvirt's vocabulary: pure functions, tested as tables.

Called by QemuDriver for every QMP event of a domain and once when its process exits. The
driver keeps one RunState per domain; `on_event` updates it and returns a Reaction: the
RuntimeEvent to report (if any) and what the driver must do next (quit qemu, reset it).

Lifecycle, with `-no-shutdown` and `-action reboot=reset|shutdown,panic=pause` (argv.py):
- guest power-off: SHUTDOWN{guest, guest-shutdown} + STOP. on_poweroff destroy (or any
  shutdown we asked for) → QUIT, the exit becomes shutoff/shutdown with shutdown/guest (or
  shutdown/finished when we asked) and stopped/shutdown. restart → RESET: system_reset + cont,
  running/booted, started/booted. preserve → the process stays: paused/shutdown.
- guest reboot: on_reboot restart is qemu's own reset (RESET events, no state change);
  destroy/preserve make qemu send SHUTDOWN{guest, guest-reset} and the power-off rules apply
  with the on_reboot action.
- guest panic: GUEST_PANICKED (+ STOP) → crashed/panicked, crashed/panicked; then on_crash
  destroy → QUIT (exit: shutoff/crashed, stopped/crashed), restart → RESET, preserve → stays.
- STOP after WATCHDOG{pause} or BLOCK_IO_ERROR{stop} → paused/watchdog or paused/ioerror; any
  other STOP or RESUME we did not ask for → paused/unknown or running/unpaused, cause external.
- process exit: destroyed by us → shutoff/destroyed; a start we aborted → shutoff/failed;
  after a guest stop we acted on → as above; anything else (kill -9, a qemu crash) →
  shutoff/crashed, stopped/failed.

It never talks to qemu and never reads the clock: the driver does both.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconcilers.driver import RuntimeEvent, stopped_event
from reconcilers.model import (Cause, EventDetail, EventType, Lifecycle, LifecycleAction, Reason,
                               State)


class Intent(str, enum.Enum):
    """What the driver last asked of the domain, so what follows can be attributed."""

    NONE = "none"
    SUSPEND = "suspend"  # a STOP is ours
    RESUME = "resume"  # a RESUME is ours
    SHUTDOWN = "shutdown"  # system_powerdown sent; the guest's power-off ends the process
    DESTROY = "destroy"  # SIGTERM/SIGKILL or quit sent by destroy()
    ABORT = "abort"  # a start failed half-way; the driver killed its qemu


class GuestStop(str, enum.Enum):
    """Why the guest stopped its vCPUs for good, as qemu said."""

    NONE = "none"
    POWEROFF = "poweroff"  # SHUTDOWN reason guest-shutdown
    REBOOT = "reboot"  # SHUTDOWN reason guest-reset (on_reboot is not restart)
    PANIC = "panic"  # GUEST_PANICKED


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
    pause_cause: Reason | None = None  # set by WATCHDOG/BLOCK_IO_ERROR, used by the next STOP


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
    if state is run.state and reason in (Reason.UNKNOWN, Reason.STARTING_UP):
        reason = run.reason  # e.g. running/booted vs running/unpaused, paused/user
    if state is State.RUNNING and run.intent is Intent.SHUTDOWN:
        return State.SHUTDOWN, Reason.USER
    return state, reason


def _event(name: str, run: RunState, events: tuple[tuple[EventType, EventDetail], ...],
           cause: Cause, message: str) -> RuntimeEvent:
    return RuntimeEvent(name=name, state=run.state, reason=run.reason, events=events,
                        cause=cause, message=message)


def on_event(name: str, event: str, data: Mapping[str, Any], run: RunState,
             lifecycle: Lifecycle) -> Reaction:
    """Update `run` for one QMP event; what to report and do next."""
    if event == "SHUTDOWN" and data.get("guest"):
        return _guest_shutdown(name, str(data.get("reason", "")), run, lifecycle)
    if event == "GUEST_PANICKED":
        run.guest_stop, run.state, run.reason = GuestStop.PANIC, State.CRASHED, Reason.PANICKED
        reaction = _lifecycle(name, run, lifecycle.on_crash)
        panicked = _event(name, run, ((EventType.CRASHED, EventDetail.PANICKED),), Cause.GUEST,
                          f"guest panicked (qemu action {data.get('action', '?')})")
        return Reaction(panicked if reaction.follow_up is not FollowUp.RESET else reaction.event,
                        reaction.follow_up)
    if event == "WATCHDOG" and data.get("action") == "pause":
        run.pause_cause = Reason.WATCHDOG
    elif event == "BLOCK_IO_ERROR" and data.get("action") == "stop":
        run.pause_cause = Reason.IOERROR
    elif event == "STOP":
        return _stop(name, run)
    elif event == "RESUME":
        return _resume(name, run)
    return Reaction()


def _guest_shutdown(name: str, reason: str, run: RunState, lifecycle: Lifecycle) -> Reaction:
    if reason == "guest-panic":
        run.guest_stop = GuestStop.PANIC
        return _lifecycle(name, run, lifecycle.on_crash)
    run.guest_stop = GuestStop.REBOOT if reason == "guest-reset" else GuestStop.POWEROFF
    if run.intent is Intent.SHUTDOWN:
        return Reaction(follow_up=FollowUp.QUIT)
    action = lifecycle.on_reboot if run.guest_stop is GuestStop.REBOOT else lifecycle.on_poweroff
    return _lifecycle(name, run, action)


def _lifecycle(name: str, run: RunState, action: LifecycleAction) -> Reaction:
    """Carry out a lifecycle action for a guest that stopped (power-off, reboot or panic)."""
    if action in (LifecycleAction.DESTROY, LifecycleAction.COREDUMP_DESTROY):
        return Reaction(follow_up=FollowUp.QUIT)  # the exit is reported by `on_exit`
    panic = run.guest_stop is GuestStop.PANIC
    what = "panicked" if panic else "stopped"
    guest_event = (EventType.CRASHED, EventDetail.PANICKED) if panic else (EventType.SHUTDOWN,
                                                                           EventDetail.GUEST)
    if action in (LifecycleAction.RESTART, LifecycleAction.COREDUMP_RESTART):
        # guest_stop stays set until the RESUME of the reset's `cont`: the STOP still to come
        # belongs to this stop, not to a pause
        run.state, run.reason = State.RUNNING, Reason.BOOTED
        return Reaction(_event(name, run, (guest_event, (EventType.STARTED, EventDetail.BOOTED)),
                               Cause.GUEST, f"guest {what}; restarted in place"),
                        FollowUp.RESET)
    if not panic:  # preserve: the stopped guest stays for inspection
        run.state, run.reason = State.PAUSED, Reason.SHUTDOWN
    return Reaction(_event(name, run, (guest_event,), Cause.GUEST,
                           f"guest {what}; preserved"))


def _stop(name: str, run: RunState) -> Reaction:
    if run.guest_stop is not GuestStop.NONE or run.state in (State.CRASHED, State.PAUSED):
        return Reaction()  # follows a guest shutdown or panic, or a pause already accounted for
    cause_reason, run.pause_cause = run.pause_cause, None
    run.state = State.PAUSED
    if run.intent is Intent.SUSPEND:
        run.intent, run.reason = Intent.NONE, Reason.USER
        return Reaction()
    if run.intent in (Intent.SHUTDOWN, Intent.DESTROY):
        return Reaction()
    run.reason = cause_reason or Reason.UNKNOWN
    detail = {Reason.WATCHDOG: EventDetail.WATCHDOG,
              Reason.IOERROR: EventDetail.IOERROR}.get(run.reason, EventDetail.PAUSED)
    cause = Cause.GUEST if cause_reason else Cause.EXTERNAL
    return Reaction(_event(name, run, ((EventType.SUSPENDED, detail),), cause,
                           f"paused ({run.reason.value}) without a request from domctl"))


def _resume(name: str, run: RunState) -> Reaction:
    asked, was_running = run.intent is Intent.RESUME, run.state is State.RUNNING
    if asked:
        run.intent = Intent.NONE
    if was_running:  # the `cont` of a start or an in-place restart: already accounted for
        run.guest_stop = GuestStop.NONE
        return Reaction()
    run.state, run.reason = State.RUNNING, Reason.UNPAUSED
    if asked:
        return Reaction()
    return Reaction(_event(name, run, ((EventType.RESUMED, EventDetail.UNPAUSED),),
                           Cause.EXTERNAL, "resumed without a request from domctl"))


def on_exit(name: str, run: RunState, qemu_message: str = "") -> RuntimeEvent:
    """The shutoff state and events for the end of the qemu process."""
    if run.intent is Intent.DESTROY:
        return _stopped(name, Reason.DESTROYED, Cause.CONTROLLER, "destroyed by domctl",
                        (stopped_event(Reason.DESTROYED),))
    if run.intent is Intent.ABORT:
        return _stopped(name, Reason.FAILED, Cause.CONTROLLER, "start failed; qemu killed",
                        (stopped_event(Reason.FAILED),))
    if run.guest_stop is GuestStop.PANIC:
        return _stopped(name, Reason.CRASHED, Cause.GUEST, "guest panicked; destroyed (on_crash)",
                        ((EventType.STOPPED, EventDetail.CRASHED),))
    if run.guest_stop is not GuestStop.NONE:
        asked = run.intent is Intent.SHUTDOWN
        what = "rebooted" if run.guest_stop is GuestStop.REBOOT else "powered off"
        return _stopped(name, Reason.SHUTDOWN, Cause.CONTROLLER if asked else Cause.GUEST,
                        "shut down at domctl's request" if asked else f"guest {what}",
                        ((EventType.SHUTDOWN, EventDetail.FINISHED if asked else EventDetail.GUEST),
                         stopped_event(Reason.SHUTDOWN)))
    message = "qemu exited without a guest shutdown (killed or crashed)"
    return _stopped(name, Reason.CRASHED, Cause.EXTERNAL,
                    f"{message}: {qemu_message}" if qemu_message else message,
                    (stopped_event(Reason.CRASHED),))


def _stopped(name: str, reason: Reason, cause: Cause, message: str,
             events: tuple[tuple[EventType, EventDetail], ...]) -> RuntimeEvent:
    return RuntimeEvent(name=name, state=State.SHUTOFF, reason=reason, events=events,
                        cause=cause, message=message)
