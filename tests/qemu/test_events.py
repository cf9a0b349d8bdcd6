"""QMP events and process exits → libvirt states, reasons and events (pure tables)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from reconcilers.model import (
    Cause,
    EventDetail,
    EventType,
    Lifecycle,
    LifecycleAction,
    Reason,
    State,
)
from reconcilers.qemu.events import (
    FollowUp,
    GuestStop,
    Intent,
    RunState,
    from_status,
    missed_stop,
    on_event,
    on_exit,
)

D, R, P = LifecycleAction.DESTROY, LifecycleAction.RESTART, LifecycleAction.PRESERVE
QmpEvent = tuple[str, dict[str, Any]]
SHUTDOWN_OFF: QmpEvent = ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
SHUTDOWN_RESET: QmpEvent = ("SHUTDOWN", {"guest": True, "reason": "guest-reset"})
PANIC: QmpEvent = ("GUEST_PANICKED", {"action": "pause"})
STOP: QmpEvent = ("STOP", {})
RESUME: QmpEvent = ("RESUME", {})


def play(qmp: Sequence[tuple[str, dict[str, Any]]], lifecycle: Lifecycle | None = None,
         run: RunState | None = None) -> tuple[RunState, list[Any]]:
    run = run or RunState(State.RUNNING, Reason.BOOTED)
    reactions = [on_event("vm", name, data, run, lifecycle or Lifecycle())
                 for name, data in qmp]
    return run, reactions


@pytest.mark.parametrize("qmp,lifecycle,follow_up,state,reason,events", [
    ([SHUTDOWN_OFF, STOP], Lifecycle(on_poweroff=D), FollowUp.QUIT, State.RUNNING, Reason.BOOTED,
     []),
    ([SHUTDOWN_OFF, STOP], Lifecycle(on_poweroff=R), FollowUp.RESET, State.RUNNING, Reason.BOOTED,
     [((EventType.SHUTDOWN, EventDetail.GUEST), (EventType.STARTED, EventDetail.BOOTED))]),
    ([SHUTDOWN_OFF, STOP], Lifecycle(on_poweroff=P), FollowUp.NONE, State.PAUSED,
     Reason.SHUTDOWN, [((EventType.SHUTDOWN, EventDetail.GUEST),)]),
    ([SHUTDOWN_RESET, STOP], Lifecycle(on_reboot=D), FollowUp.QUIT, State.RUNNING,
     Reason.BOOTED, []),
    ([PANIC, STOP], Lifecycle(on_crash=D), FollowUp.QUIT, State.CRASHED, Reason.PANICKED,
     [((EventType.CRASHED, EventDetail.PANICKED),)]),
    ([PANIC, STOP], Lifecycle(on_crash=R), FollowUp.RESET, State.RUNNING, Reason.BOOTED,
     [((EventType.CRASHED, EventDetail.PANICKED), (EventType.STARTED, EventDetail.BOOTED))]),
    ([SHUTDOWN_OFF, STOP, RESUME, STOP], Lifecycle(on_poweroff=R), FollowUp.RESET, State.PAUSED,
     Reason.UNKNOWN, [((EventType.SHUTDOWN, EventDetail.GUEST),
                       (EventType.STARTED, EventDetail.BOOTED)),
                      ((EventType.SUSPENDED, EventDetail.PAUSED),)]),
    ([PANIC, STOP], Lifecycle(on_crash=P), FollowUp.NONE, State.CRASHED, Reason.PANICKED,
     [((EventType.CRASHED, EventDetail.PANICKED),)]),
    ([("WATCHDOG", {"action": "pause"}), STOP], Lifecycle(), FollowUp.NONE, State.PAUSED,
     Reason.WATCHDOG, [((EventType.SUSPENDED, EventDetail.WATCHDOG),)]),
    ([("BLOCK_IO_ERROR", {"action": "stop"}), STOP], Lifecycle(), FollowUp.NONE, State.PAUSED,
     Reason.IOERROR, [((EventType.SUSPENDED, EventDetail.IOERROR),)]),
    ([STOP], Lifecycle(), FollowUp.NONE, State.PAUSED, Reason.UNKNOWN,
     [((EventType.SUSPENDED, EventDetail.PAUSED),)]),
    ([STOP, RESUME], Lifecycle(), FollowUp.NONE, State.RUNNING, Reason.UNPAUSED,
     [((EventType.SUSPENDED, EventDetail.PAUSED),), ((EventType.RESUMED, EventDetail.UNPAUSED),)]),
    ([("RESET", {"guest": True, "reason": "guest-reset"}), ("POWERDOWN", {})], Lifecycle(),
     FollowUp.NONE, State.RUNNING, Reason.BOOTED, []),
])
def test_event_table(qmp: list[tuple[str, dict[str, Any]]], lifecycle: Lifecycle,
                     follow_up: FollowUp, state: State, reason: Reason,
                     events: list[Any]) -> None:
    run, reactions = play(qmp, lifecycle)
    assert [r.follow_up for r in reactions if r.follow_up is not FollowUp.NONE] == (
        [follow_up] if follow_up is not FollowUp.NONE else [])
    assert (run.state, run.reason) == (state, reason)
    assert [r.event.events for r in reactions if r.event is not None] == events


def test_a_panic_reported_twice_is_one_panic() -> None:
    panic_shutdown = ("SHUTDOWN", {"guest": True, "reason": "guest-panic"})
    run, reactions = play([PANIC, panic_shutdown, STOP], Lifecycle(on_crash=D))
    assert [r.follow_up for r in reactions] == [FollowUp.QUIT, FollowUp.NONE, FollowUp.NONE]
    assert [r.event.events for r in reactions if r.event] == [
        ((EventType.CRASHED, EventDetail.PANICKED),)]
    assert on_exit("vm", run).events == CRASHED


def test_events_no_row_allows_change_nothing() -> None:
    """A STOP or RESUME of a guest that panicked and was kept: no pause, no resume."""
    run, reactions = play([PANIC, STOP, RESUME], Lifecycle(on_crash=P))
    assert (run.state, run.reason) == (State.CRASHED, Reason.PANICKED)
    assert [r.event.events for r in reactions if r.event] == [
        ((EventType.CRASHED, EventDetail.PANICKED),)]


def test_our_own_suspend_and_resume_report_nothing() -> None:
    run = RunState(State.RUNNING, Reason.BOOTED, intent=Intent.SUSPEND)
    _, reactions = play([STOP], run=run)
    assert (run.state, run.reason, run.intent) == (State.PAUSED, Reason.USER, Intent.NONE)
    run.intent = Intent.RESUME
    _, more = play([RESUME], run=run)
    assert (run.state, run.reason) == (State.RUNNING, Reason.UNPAUSED)
    assert all(r.event is None for r in reactions + more)


def test_shutdown_we_asked_for_always_quits_and_finishes() -> None:
    run = RunState(State.RUNNING, Reason.BOOTED, intent=Intent.SHUTDOWN)
    _, reactions = play([("POWERDOWN", {}), SHUTDOWN_OFF, STOP], Lifecycle(on_poweroff=R), run)
    assert [r.follow_up for r in reactions] == [FollowUp.NONE, FollowUp.QUIT, FollowUp.NONE]
    event = on_exit("vm", run, "qemu: boom")
    assert (event.state, event.reason, event.cause) == (State.SHUTOFF, Reason.SHUTDOWN,
                                                        Cause.CONTROLLER)
    assert event.events == ((EventType.SHUTDOWN, EventDetail.FINISHED),
                            (EventType.STOPPED, EventDetail.SHUTDOWN))


DESTROYED = ((EventType.STOPPED, EventDetail.DESTROYED),)
CRASHED = ((EventType.STOPPED, EventDetail.CRASHED),)
FAILED = ((EventType.STOPPED, EventDetail.FAILED),)
GUEST_OFF = ((EventType.SHUTDOWN, EventDetail.GUEST), (EventType.STOPPED, EventDetail.SHUTDOWN))


@pytest.mark.parametrize("state,intent,guest_stop,reason,events,cause", [
    (State.RUNNING, Intent.DESTROY, GuestStop.NONE, Reason.DESTROYED, DESTROYED,
     Cause.CONTROLLER),
    (State.PAUSED, Intent.DESTROY, GuestStop.POWEROFF, Reason.DESTROYED, DESTROYED,
     Cause.CONTROLLER),  # a preserved power-off, destroyed
    (State.CRASHED, Intent.DESTROY, GuestStop.PANIC, Reason.CRASHED, CRASHED,
     Cause.CONTROLLER),  # a preserved crash, destroyed: libvirt's onCrash=destroy
    (State.RUNNING, Intent.NONE, GuestStop.POWEROFF, Reason.SHUTDOWN, GUEST_OFF, Cause.GUEST),
    (State.RUNNING, Intent.NONE, GuestStop.REBOOT, Reason.SHUTDOWN, GUEST_OFF, Cause.GUEST),
    (State.CRASHED, Intent.NONE, GuestStop.PANIC, Reason.CRASHED, CRASHED, Cause.GUEST),
    (State.RUNNING, Intent.NONE, GuestStop.PANIC, Reason.CRASHED, FAILED,
     Cause.EXTERNAL),  # gone during an in-place restart after a panic
    (State.PAUSED, Intent.NONE, GuestStop.POWEROFF, Reason.CRASHED, FAILED,
     Cause.EXTERNAL),  # the process of a preserved power-off, killed later
    (State.RUNNING, Intent.NONE, GuestStop.NONE, Reason.CRASHED, FAILED, Cause.EXTERNAL),
    (State.RUNNING, Intent.SUSPEND, GuestStop.NONE, Reason.CRASHED, FAILED, Cause.EXTERNAL),
    (State.PAUSED, Intent.ABORT, GuestStop.NONE, Reason.FAILED, FAILED, Cause.CONTROLLER),
])
def test_exit_table(state: State, intent: Intent, guest_stop: GuestStop, reason: Reason,
                    events: Any, cause: Cause) -> None:
    run = RunState(state, Reason.UNKNOWN, intent=intent, guest_stop=guest_stop)
    event = on_exit("vm", run, "qemu: boom")
    assert (event.state, event.reason, event.events, event.cause) == (State.SHUTOFF, reason,
                                                                      events, cause)
    assert event.message.endswith("qemu: boom") == (cause is Cause.EXTERNAL)


@pytest.mark.parametrize("status,run,expected", [
    ("running", RunState(State.RUNNING, Reason.BOOTED), (State.RUNNING, Reason.BOOTED)),
    ("paused", RunState(State.PAUSED, Reason.USER), (State.PAUSED, Reason.USER)),
    ("paused", RunState(State.RUNNING, Reason.BOOTED), (State.PAUSED, Reason.UNKNOWN)),
    ("prelaunch", RunState(State.PAUSED, Reason.USER), (State.PAUSED, Reason.USER)),
    ("prelaunch", RunState(State.RUNNING, Reason.BOOTED), (State.PAUSED, Reason.STARTING_UP)),
    ("shutdown", RunState(State.RUNNING, Reason.BOOTED), (State.PAUSED, Reason.SHUTDOWN)),
    ("guest-panicked", RunState(State.RUNNING, Reason.BOOTED), (State.CRASHED, Reason.PANICKED)),
    ("io-error", RunState(State.RUNNING, Reason.BOOTED), (State.PAUSED, Reason.IOERROR)),
    ("watchdog", RunState(State.RUNNING, Reason.BOOTED), (State.PAUSED, Reason.WATCHDOG)),
    ("suspended", RunState(State.RUNNING, Reason.BOOTED), (State.PMSUSPENDED, Reason.UNKNOWN)),
    ("running", RunState(State.RUNNING, Reason.BOOTED, intent=Intent.SHUTDOWN),
     (State.SHUTDOWN, Reason.USER)),
    ("something-new", RunState(State.RUNNING, Reason.BOOTED), (State.NOSTATE, Reason.UNKNOWN)),
])
def test_status_table(status: str, run: RunState, expected: tuple[State, Reason]) -> None:
    assert from_status(status, run) == expected


@pytest.mark.parametrize("state,reason,replayed", [
    (State.PAUSED, Reason.SHUTDOWN, SHUTDOWN_OFF),
    (State.CRASHED, Reason.PANICKED, PANIC),
    (State.PAUSED, Reason.USER, None),
    (State.RUNNING, Reason.UNKNOWN, None),
])
def test_a_stop_missed_while_away_is_replayed(state: State, reason: Reason,
                                              replayed: QmpEvent | None) -> None:
    assert missed_stop(state, reason) == replayed
