"""The allowed state transitions of a domain, as one explicit table, and the events each emits.

A domain moves from one libvirt state to another only through a `Trigger`: an operation the
controller carries out (start, suspend, shutdown, destroy, ...) or something it observes
(the guest powers off, the process vanishes, the guest panics). Each row of TRANSITIONS says
from which states a trigger is allowed, which state and reason it leads to, and which libvirt
events (DESIGN §4) it emits, in order. The cause (who) is not part of a row: the same row is
taken whether the manifest, the API or the guest asked, and the caller records the cause.

Called by the reconciler's executor (reconcilers/domain.py) to check an operation against the
observed state and to emit its events (`transition(source, trigger).events`), by both drivers,
whose event tables name a trigger and take state, reason and events from here
(`reconcilers.driver.runtime_event`), and by tests of decide.py to check that every plan is an
allowed move. Pure data and lookups: it never performs an operation, and never allows anything
from `nostate` (a process whose identity is unproven is never touched).

Deliberate choices, where libvirt leaves room:
- A shutdown request (`shutdown` state, reason `user`) emits nothing; the events come when the
  guest finishes: `shutdown/finished` for a shutdown we asked for, `shutdown/guest` for a guest
  powering off on its own, `shutdown/host` for a stop signal from outside; each then
  `stopped/shutdown`.
- Destroying a `crashed` domain ends in `shutoff/crashed` with `stopped/crashed`, libvirt's
  onCrash=destroy, whoever destroys it (the driver's own onCrash action, the controller's
  destroy for onCrash, a manifest or API stop of a preserved crash): a driver cannot tell those
  apart, and the stop stays the crash it was for the restart policy. Any other destroy ends
  in `shutoff/destroyed`, `stopped/destroyed`.
- A qemu guest that powers off keeps its stopped process (`-no-shutdown`): `guest-halt` is
  `paused/shutdown` with `shutdown/guest`, for onPoweroff/onReboot preserve; an in-place
  restart is `reset`, `running/booted` with `started/booted` (also LXC's restart of a
  container whose init rebooted). A driver reports such a sequence as one event: `walk`.
- A process that vanishes is `shutoff/crashed` with `stopped/failed` (DESIGN §4); so is one
  found gone when re-attaching after a controller restart (libvirt's reconnect: shutoff/crashed
  for a qemu that died while libvirtd was down).
- A destroy emits `stopped/destroyed` only, as libvirt's does: qemu answers the SIGTERM of a
  destroy with a SHUTDOWN event (host-signal), which libvirt drops for a domain it is
  destroying, so no `shutdown/host` comes first. A SIGTERM from anyone else is `shutdown/host`
  then `stopped/shutdown`, shutoff/shutdown (HOST_POWEROFF).
- Guest power-management suspend and wake-up have no events in DESIGN §4's vocabulary, so those
  two rows emit none.
- Managed save and restore are libvirt 9.0's: a save of a running guest pauses it first
  (`suspended/paused`, `stopped/saved`), of a paused one `stopped/saved` alone, both ending in
  shutoff/saved; a restore is `started/restored` then `resumed/from_snapshot` (running/restored),
  or `suspended/restored` for an image saved paused, which comes back paused/user: libvirt
  would show paused/migration (its incoming migration), which decide() leaves to the operator,
  while this pause is one domctl made and resumes or keeps as the manifest says.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconcilers.errors import DomctlError
from reconcilers.model import EventDetail, EventType, Reason, State

Event = tuple[EventType, EventDetail]


class Trigger(str, enum.Enum):
    """What moves a domain: the controller's operations first, then what it observes."""

    START = "start"
    START_PAUSED = "start-paused"
    START_FAILED = "start-failed"  # a hook, the driver or the process failed while starting
    SUSPEND = "suspend"
    RESUME = "resume"  # by us or anyone else: the cause tells them apart
    SHUTDOWN = "shutdown"  # graceful request (ACPI, SIGPWR to init)
    DESTROY = "destroy"
    GUEST_POWEROFF = "guest-poweroff"  # the guest powered off (by itself or at our request)
    HOST_POWEROFF = "host-poweroff"  # a stop signal from the host (e.g. SIGTERM to qemu)
    PROCESS_EXIT = "process-exit"  # the process vanished without a shutdown
    PROCESS_LOST = "process-lost"  # found gone when re-attaching after a controller restart
    PANIC = "panic"
    GUEST_HALT = "guest-halt"  # the guest powered off and its stopped process stays (preserve)
    RESET = "reset"  # the guest boots again in the same process or container
    IOERROR = "ioerror"  # paused by the hypervisor on an I/O error
    WATCHDOG = "watchdog"  # paused by the guest's watchdog
    EXTERNAL_PAUSE = "external-pause"  # paused by someone else (a QMP STOP we did not send)
    PM_SUSPEND = "pm-suspend"  # the guest suspended itself (S3)
    PM_WAKEUP = "pm-wakeup"
    SAVE = "save"  # managed save: the guest's state written to an image, the process gone
    RESTORE = "restore"  # started from a managed-save image saved running
    RESTORE_PAUSED = "restore-paused"  # started from one saved paused


@dataclass(frozen=True)
class Transition:
    """One allowed move: `trigger` from `source` leads to `target`/`reason`, emitting `events`."""

    source: State
    trigger: Trigger
    target: State
    reason: Reason
    events: tuple[Event, ...]


class TransitionError(DomctlError):
    """A trigger that is not allowed from a state; carries both, like qemu.qmp's state errors."""

    def __init__(self, source: State, trigger: Trigger) -> None:
        self.source = source
        self.trigger = trigger
        allowed = ", ".join(sorted(s.value for s in sources_of(trigger))) or "no state"
        super().__init__(f"cannot {trigger.value} a domain in state {source.value} "
                         f"(allowed from: {allowed})")


# States in which a process of ours exists. `nostate` is absent on purpose: never touch it.
LIVE_STATES = frozenset({State.RUNNING, State.BLOCKED, State.PAUSED, State.SHUTDOWN,
                         State.CRASHED, State.PMSUSPENDED})
# States in which the guest's vCPUs run.
UP_STATES = frozenset({State.RUNNING, State.BLOCKED})

_STARTED = (EventType.STARTED, EventDetail.BOOTED)
_SUSPENDED = (EventType.SUSPENDED, EventDetail.PAUSED)
_STOPPED_SHUTDOWN = (EventType.STOPPED, EventDetail.SHUTDOWN)
_STOPPED_FAILED = (EventType.STOPPED, EventDetail.FAILED)
_STOPPED_SAVED = (EventType.STOPPED, EventDetail.SAVED)
_RESTORED = (EventType.STARTED, EventDetail.RESTORED)

# (from states, trigger, to state, to reason, events in order)
_ROWS: tuple[tuple[frozenset[State], Trigger, State, Reason, tuple[Event, ...]], ...] = (
    (frozenset({State.SHUTOFF}), Trigger.START, State.RUNNING, Reason.BOOTED, (_STARTED,)),
    (frozenset({State.SHUTOFF}), Trigger.START_PAUSED, State.PAUSED, Reason.USER,
     (_STARTED, _SUSPENDED)),
    (frozenset({State.SHUTOFF}), Trigger.START_FAILED, State.SHUTOFF, Reason.FAILED,
     (_STOPPED_FAILED,)),
    (UP_STATES, Trigger.SUSPEND, State.PAUSED, Reason.USER, (_SUSPENDED,)),
    (frozenset({State.PAUSED}), Trigger.RESUME, State.RUNNING, Reason.UNPAUSED,
     ((EventType.RESUMED, EventDetail.UNPAUSED),)),
    # asking again while a shutdown is under way is allowed: the executor re-sends and waits
    (LIVE_STATES - {State.CRASHED}, Trigger.SHUTDOWN, State.SHUTDOWN, Reason.USER, ()),
    (frozenset({State.SHUTDOWN}), Trigger.GUEST_POWEROFF, State.SHUTOFF, Reason.SHUTDOWN,
     ((EventType.SHUTDOWN, EventDetail.FINISHED), _STOPPED_SHUTDOWN)),
    (UP_STATES, Trigger.GUEST_POWEROFF, State.SHUTOFF, Reason.SHUTDOWN,
     ((EventType.SHUTDOWN, EventDetail.GUEST), _STOPPED_SHUTDOWN)),
    (LIVE_STATES - {State.CRASHED}, Trigger.HOST_POWEROFF, State.SHUTOFF, Reason.SHUTDOWN,
     ((EventType.SHUTDOWN, EventDetail.HOST), _STOPPED_SHUTDOWN)),
    (LIVE_STATES - {State.CRASHED}, Trigger.DESTROY, State.SHUTOFF, Reason.DESTROYED,
     ((EventType.STOPPED, EventDetail.DESTROYED),)),
    (frozenset({State.CRASHED}), Trigger.DESTROY, State.SHUTOFF, Reason.CRASHED,
     ((EventType.STOPPED, EventDetail.CRASHED),)),
    (LIVE_STATES, Trigger.PROCESS_EXIT, State.SHUTOFF, Reason.CRASHED, (_STOPPED_FAILED,)),
    (LIVE_STATES, Trigger.PROCESS_LOST, State.SHUTOFF, Reason.CRASHED, (_STOPPED_FAILED,)),
    (UP_STATES, Trigger.PANIC, State.CRASHED, Reason.PANICKED,
     ((EventType.CRASHED, EventDetail.PANICKED),)),
    (UP_STATES, Trigger.GUEST_HALT, State.PAUSED, Reason.SHUTDOWN,
     ((EventType.SHUTDOWN, EventDetail.GUEST),)),
    (UP_STATES | {State.PAUSED, State.CRASHED}, Trigger.RESET, State.RUNNING, Reason.BOOTED,
     (_STARTED,)),
    (UP_STATES, Trigger.IOERROR, State.PAUSED, Reason.IOERROR,
     ((EventType.SUSPENDED, EventDetail.IOERROR),)),
    (UP_STATES, Trigger.WATCHDOG, State.PAUSED, Reason.WATCHDOG,
     ((EventType.SUSPENDED, EventDetail.WATCHDOG),)),
    (UP_STATES, Trigger.EXTERNAL_PAUSE, State.PAUSED, Reason.UNKNOWN, (_SUSPENDED,)),
    (UP_STATES, Trigger.PM_SUSPEND, State.PMSUSPENDED, Reason.UNKNOWN, ()),
    (frozenset({State.PMSUSPENDED}), Trigger.PM_WAKEUP, State.RUNNING, Reason.WAKEUP, ()),
    (UP_STATES, Trigger.SAVE, State.SHUTOFF, Reason.SAVED, (_SUSPENDED, _STOPPED_SAVED)),
    (frozenset({State.PAUSED}), Trigger.SAVE, State.SHUTOFF, Reason.SAVED, (_STOPPED_SAVED,)),
    (frozenset({State.SHUTOFF}), Trigger.RESTORE, State.RUNNING, Reason.RESTORED,
     (_RESTORED, (EventType.RESUMED, EventDetail.FROM_SNAPSHOT))),
    (frozenset({State.SHUTOFF}), Trigger.RESTORE_PAUSED, State.PAUSED, Reason.USER,
     (_RESTORED, (EventType.SUSPENDED, EventDetail.RESTORED))),
)


def _index() -> dict[tuple[State, Trigger], Transition]:
    table: dict[tuple[State, Trigger], Transition] = {}
    for sources, trigger, target, reason, events in _ROWS:
        for source in sources:
            if (source, trigger) in table:  # the table would be ambiguous: fail at import
                raise ValueError(f"two rows for {trigger.value} from {source.value}")
            table[(source, trigger)] = Transition(source, trigger, target, reason, events)
    return table


TRANSITIONS: Mapping[tuple[State, Trigger], Transition] = _index()


def allowed(source: State, trigger: Trigger) -> bool:
    return (source, trigger) in TRANSITIONS


def transition(source: State, trigger: Trigger) -> Transition:
    """The transition `trigger` makes from `source`; TransitionError if it is not allowed."""
    try:
        return TRANSITIONS[(source, trigger)]
    except KeyError:
        raise TransitionError(source, trigger) from None


def walk(source: State, triggers: Sequence[Trigger]) -> tuple[Transition, ...]:
    """The rows `triggers` take one after another from `source`, e.g. a guest that panicked and
    was reset in place: (PANIC, RESET) from running. TransitionError at the first one not
    allowed, so a driver reports nothing the table does not allow."""
    steps: list[Transition] = []
    for trigger in triggers:
        steps.append(transition(steps[-1].target if steps else source, trigger))
    return tuple(steps)


def sources_of(trigger: Trigger) -> frozenset[State]:
    """The states from which `trigger` is allowed."""
    return frozenset(source for source, t in TRANSITIONS if t is trigger)
