"""Every event the qemu and lxc event tables can report is a move of statemachine.TRANSITIONS.

The tables are driven with every input they take (each QMP event kind and process exit, each
run state, intent, guest stop and lifecycle action; each LXC exit classification), and each
RuntimeEvent is checked against the transition table itself: a row, or rows one after
another (a panic reset in place), taken from the state the domain was in. No table may raise.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from typing import Any

import pytest

from reconcilers.driver import RuntimeEvent
from reconcilers.lxc.exits import Fate, InitFate, exit_event, reboot_event
from reconcilers.lxc.exits import Intent as LxcIntent
from reconcilers.model import (
    Cause,
    EventDetail,
    EventType,
    Lifecycle,
    LifecycleAction,
    Reason,
    State,
)
from reconcilers.qemu.events import GuestStop, Intent, RunState, on_event, on_exit
from reconcilers.statemachine import LIVE_STATES, TRANSITIONS, Trigger

Event = tuple[EventType, EventDetail]
Move = tuple[State, Reason, tuple[Event, ...]]

QMP_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"}),
    ("SHUTDOWN", {"guest": True, "reason": "guest-reset"}),
    ("SHUTDOWN", {"guest": True, "reason": "guest-panic"}),
    ("SHUTDOWN", {"guest": False, "reason": "host-signal"}),
    ("GUEST_PANICKED", {"action": "pause"}),
    ("WATCHDOG", {"action": "pause"}),
    ("BLOCK_IO_ERROR", {"action": "stop"}),
    ("STOP", {}),
    ("RESUME", {}),
    ("RESET", {"guest": True, "reason": "guest-reset"}),
    ("POWERDOWN", {}),
]


@functools.cache
def moves(source: State, depth: int = 2) -> frozenset[Move]:
    """Where up to `depth` rows of the table, one after another, lead from `source`."""
    found: set[Move] = set()
    frontier: list[Move] = [(source, Reason.UNKNOWN, ())]
    for _ in range(depth):
        frontier = [(move.target, move.reason, events + move.events)
                    for state, _, events in frontier
                    for (start, _trigger), move in TRANSITIONS.items() if start is state]
        found.update(frontier)
    return frozenset(found)


def assert_a_move(event: RuntimeEvent, sources: Iterable[State]) -> None:
    taken = (event.state, event.reason, event.events)
    assert any(taken in moves(source) for source in sources), (
        f"{event} is no move of the transition table from {sorted(s.value for s in sources)}")


def run_states() -> Iterable[RunState]:
    """Every run state the qemu driver can hold, and more."""
    for state, intent, guest_stop, pause_cause in itertools.product(
            sorted(LIVE_STATES), Intent, GuestStop, (None, Trigger.WATCHDOG, Trigger.IOERROR)):
        yield RunState(state, Reason.UNKNOWN, intent=intent, guest_stop=guest_stop,
                       pause_cause=pause_cause)


@pytest.mark.parametrize(("action", "qmp"),
                         list(itertools.product(LifecycleAction, QMP_EVENTS)),
                         ids=lambda value: getattr(value, "value", None) or str(value[0]))
def test_every_qmp_event_reports_a_move_of_the_table(action: LifecycleAction,
                                                      qmp: tuple[str, dict[str, Any]]) -> None:
    lifecycle = Lifecycle(on_poweroff=action, on_reboot=action, on_crash=action)
    for run in run_states():
        source = run.state
        reaction = on_event("vm", qmp[0], qmp[1], run, lifecycle)
        if reaction.event is not None:
            assert_a_move(reaction.event, [source])
            assert (run.state, run.reason) == (reaction.event.state, reaction.event.reason)


def test_every_qemu_exit_reports_a_move_of_the_table() -> None:
    for run in run_states():
        sources = {run.state}
        if run.intent is Intent.SHUTDOWN:
            sources.add(State.SHUTDOWN)  # we asked: the guest is shutting down
        if run.intent is Intent.ABORT:
            sources.add(State.SHUTOFF)  # a start that never completed
        event = on_exit("vm", run, "qemu: boom")
        assert event.state is State.SHUTOFF
        assert_a_move(event, sources)


@pytest.mark.parametrize(("intent", "fate"), list(itertools.product(LxcIntent, InitFate)))
def test_every_lxc_exit_reports_a_move_of_the_table(intent: LxcIntent, fate: InitFate) -> None:
    event = exit_event("c1", intent, Fate(fate, "detail"))
    # init runs or is frozen; while our halt request is under way it is shutting down
    sources = {State.RUNNING, State.PAUSED} | ({State.SHUTDOWN}
                                               if intent is LxcIntent.SHUTDOWN else set())
    assert event.state is State.SHUTOFF
    assert_a_move(event, sources)


def test_an_lxc_reboot_reports_a_move_of_the_table() -> None:
    assert_a_move(reboot_event("c1"), [State.RUNNING])


def test_a_destroy_of_a_crashed_domain_is_not_reported_as_destroyed() -> None:
    """The check itself: libvirt's destroyed events from a crashed domain are no move."""
    wrong = RuntimeEvent("vm", State.SHUTOFF, Reason.DESTROYED,
                         ((EventType.STOPPED, EventDetail.DESTROYED),), Cause.CONTROLLER)
    with pytest.raises(AssertionError, match="no move"):
        assert_a_move(wrong, [State.CRASHED])
