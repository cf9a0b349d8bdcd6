"""The transition table of reconcilers/statemachine.py, row by row, and its invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconcilers.model import (
    DETAILS_BY_EVENT,
    REASONS_BY_STATE,
    EventDetail,
    EventType,
    Reason,
    State,
)
from reconcilers.statemachine import (
    LIVE_STATES,
    TRANSITIONS,
    TransitionError,
    Trigger,
    allowed,
    sources_of,
    transition,
    walk,
)

R, S = Reason, State

T = Trigger
E = EventType
D = EventDetail

# (from, trigger, to, reason, events): every row DESIGN §4 and the brief name
ALLOWED = [
    (S.SHUTOFF, T.START, S.RUNNING, R.BOOTED, [(E.STARTED, D.BOOTED)]),
    (S.SHUTOFF, T.START_PAUSED, S.PAUSED, R.USER,
     [(E.STARTED, D.BOOTED), (E.SUSPENDED, D.PAUSED)]),
    (S.SHUTOFF, T.START_FAILED, S.SHUTOFF, R.FAILED, [(E.STOPPED, D.FAILED)]),
    (S.RUNNING, T.SUSPEND, S.PAUSED, R.USER, [(E.SUSPENDED, D.PAUSED)]),
    (S.BLOCKED, T.SUSPEND, S.PAUSED, R.USER, [(E.SUSPENDED, D.PAUSED)]),
    (S.PAUSED, T.RESUME, S.RUNNING, R.UNPAUSED, [(E.RESUMED, D.UNPAUSED)]),
    (S.RUNNING, T.SHUTDOWN, S.SHUTDOWN, R.USER, []),
    (S.PAUSED, T.SHUTDOWN, S.SHUTDOWN, R.USER, []),
    (S.SHUTDOWN, T.SHUTDOWN, S.SHUTDOWN, R.USER, []),
    (S.SHUTDOWN, T.GUEST_POWEROFF, S.SHUTOFF, R.SHUTDOWN,
     [(E.SHUTDOWN, D.FINISHED), (E.STOPPED, D.SHUTDOWN)]),
    (S.RUNNING, T.GUEST_POWEROFF, S.SHUTOFF, R.SHUTDOWN,
     [(E.SHUTDOWN, D.GUEST), (E.STOPPED, D.SHUTDOWN)]),
    (S.RUNNING, T.HOST_POWEROFF, S.SHUTOFF, R.SHUTDOWN,
     [(E.SHUTDOWN, D.HOST), (E.STOPPED, D.SHUTDOWN)]),
    (S.RUNNING, T.DESTROY, S.SHUTOFF, R.DESTROYED, [(E.STOPPED, D.DESTROYED)]),
    (S.PAUSED, T.DESTROY, S.SHUTOFF, R.DESTROYED, [(E.STOPPED, D.DESTROYED)]),
    (S.SHUTDOWN, T.DESTROY, S.SHUTOFF, R.DESTROYED, [(E.STOPPED, D.DESTROYED)]),
    (S.PMSUSPENDED, T.DESTROY, S.SHUTOFF, R.DESTROYED, [(E.STOPPED, D.DESTROYED)]),
    (S.CRASHED, T.DESTROY, S.SHUTOFF, R.CRASHED, [(E.STOPPED, D.CRASHED)]),
    (S.RUNNING, T.PROCESS_EXIT, S.SHUTOFF, R.CRASHED, [(E.STOPPED, D.FAILED)]),
    (S.CRASHED, T.PROCESS_EXIT, S.SHUTOFF, R.CRASHED, [(E.STOPPED, D.FAILED)]),
    (S.PAUSED, T.PROCESS_LOST, S.SHUTOFF, R.CRASHED, [(E.STOPPED, D.FAILED)]),
    (S.RUNNING, T.PANIC, S.CRASHED, R.PANICKED, [(E.CRASHED, D.PANICKED)]),
    (S.RUNNING, T.GUEST_HALT, S.PAUSED, R.SHUTDOWN, [(E.SHUTDOWN, D.GUEST)]),
    (S.RUNNING, T.RESET, S.RUNNING, R.BOOTED, [(E.STARTED, D.BOOTED)]),
    (S.PAUSED, T.RESET, S.RUNNING, R.BOOTED, [(E.STARTED, D.BOOTED)]),
    (S.CRASHED, T.RESET, S.RUNNING, R.BOOTED, [(E.STARTED, D.BOOTED)]),
    (S.RUNNING, T.IOERROR, S.PAUSED, R.IOERROR, [(E.SUSPENDED, D.IOERROR)]),
    (S.RUNNING, T.WATCHDOG, S.PAUSED, R.WATCHDOG, [(E.SUSPENDED, D.WATCHDOG)]),
    (S.RUNNING, T.EXTERNAL_PAUSE, S.PAUSED, R.UNKNOWN, [(E.SUSPENDED, D.PAUSED)]),
    (S.RUNNING, T.PM_SUSPEND, S.PMSUSPENDED, R.UNKNOWN, []),
    (S.PMSUSPENDED, T.PM_WAKEUP, S.RUNNING, R.WAKEUP, []),
    # managed save and restore, as libvirt 9.0 reports them
    (S.RUNNING, T.SAVE, S.SHUTOFF, R.SAVED, [(E.SUSPENDED, D.PAUSED), (E.STOPPED, D.SAVED)]),
    (S.BLOCKED, T.SAVE, S.SHUTOFF, R.SAVED, [(E.SUSPENDED, D.PAUSED), (E.STOPPED, D.SAVED)]),
    (S.PAUSED, T.SAVE, S.SHUTOFF, R.SAVED, [(E.STOPPED, D.SAVED)]),
    (S.SHUTOFF, T.RESTORE, S.RUNNING, R.RESTORED,
     [(E.STARTED, D.RESTORED), (E.RESUMED, D.FROM_SNAPSHOT)]),
    (S.SHUTOFF, T.RESTORE_PAUSED, S.PAUSED, R.USER,
     [(E.STARTED, D.RESTORED), (E.SUSPENDED, D.RESTORED)]),
]

REFUSED = [
    (S.RUNNING, T.START), (S.PAUSED, T.START), (S.SHUTOFF, T.SUSPEND), (S.PAUSED, T.SUSPEND),
    (S.RUNNING, T.RESUME), (S.SHUTOFF, T.RESUME), (S.SHUTOFF, T.SHUTDOWN),
    (S.CRASHED, T.SHUTDOWN), (S.SHUTOFF, T.DESTROY), (S.PAUSED, T.PANIC),
    (S.PAUSED, T.GUEST_POWEROFF), (S.CRASHED, T.RESUME),
    (S.NOSTATE, T.DESTROY), (S.NOSTATE, T.SHUTDOWN), (S.NOSTATE, T.START),
    (S.PAUSED, T.GUEST_HALT), (S.CRASHED, T.GUEST_HALT), (S.SHUTOFF, T.RESET),
    (S.SHUTDOWN, T.RESET),
    (S.SHUTOFF, T.SAVE), (S.CRASHED, T.SAVE), (S.SHUTDOWN, T.SAVE), (S.PMSUSPENDED, T.SAVE),
    (S.RUNNING, T.RESTORE), (S.PAUSED, T.RESTORE_PAUSED),
]


@pytest.mark.parametrize(("source", "trigger", "target", "reason", "events"), ALLOWED,
                         ids=[f"{r[0].value}-{r[1].value}" for r in ALLOWED])
def test_allowed_transition(source: State, trigger: T, target: State, reason: Reason,
                            events: list[tuple[E, D]]) -> None:
    move = transition(source, trigger)
    assert (move.target, move.reason, list(move.events)) == (target, reason, events)
    assert allowed(source, trigger)


@pytest.mark.parametrize(("source", "trigger"), REFUSED,
                         ids=[f"{s.value}-{t.value}" for s, t in REFUSED])
def test_refused_transition(source: State, trigger: T) -> None:
    assert not allowed(source, trigger)
    with pytest.raises(TransitionError) as caught:
        transition(source, trigger)
    assert (caught.value.source, caught.value.trigger) == (source, trigger)
    assert f"cannot {trigger.value} a domain in state {source.value}" in str(caught.value)


def test_error_names_the_allowed_states() -> None:
    with pytest.raises(TransitionError, match=r"allowed from: paused\)"):
        transition(S.RUNNING, T.RESUME)


def test_nothing_is_allowed_from_nostate() -> None:
    assert not [key for key in TRANSITIONS if key[0] is S.NOSTATE]


@pytest.mark.parametrize("key", sorted(TRANSITIONS, key=str), ids=str)
def test_every_row_speaks_libvirts_vocabulary(key: tuple[State, T]) -> None:
    move = TRANSITIONS[key]
    assert move.reason in REASONS_BY_STATE[move.target]
    for event, detail in move.events:
        assert detail in DETAILS_BY_EVENT[event]


@pytest.mark.parametrize("trigger", [T.PROCESS_EXIT, T.PROCESS_LOST, T.START_FAILED])
def test_unexplained_stops_are_stopped_failed(trigger: T) -> None:
    """libvirt's "host emulator failed", as DESIGN §4 says."""
    for source in sources_of(trigger):
        assert transition(source, trigger).events[-1] == (E.STOPPED, D.FAILED)


def test_destroying_a_crashed_domain_keeps_the_crash() -> None:
    """libvirt's onCrash=destroy, whoever destroys it; any other destroy is `destroyed`."""
    for source in sources_of(T.DESTROY):
        move = transition(source, T.DESTROY)
        crashed = source is S.CRASHED
        assert (move.target, move.reason) == (S.SHUTOFF, R.CRASHED if crashed else R.DESTROYED)
        assert move.events == ((E.STOPPED, D.CRASHED if crashed else D.DESTROYED),)


def test_the_controllers_own_operations_emit_libvirts_events() -> None:
    """What the reconciler's executor emits for its start, start paused, suspend and resume."""
    assert transition(S.SHUTOFF, T.START).events == ((E.STARTED, D.BOOTED),)
    assert transition(S.SHUTOFF, T.START_PAUSED).events == ((E.STARTED, D.BOOTED),
                                                            (E.SUSPENDED, D.PAUSED))
    assert transition(S.RUNNING, T.SUSPEND).events == ((E.SUSPENDED, D.PAUSED),)
    assert transition(S.PAUSED, T.RESUME).events == ((E.RESUMED, D.UNPAUSED),)


def test_walk_takes_each_row_from_the_previous_target() -> None:
    panicked, reset = walk(S.RUNNING, (T.PANIC, T.RESET))
    assert (panicked.source, panicked.target, reset.source, reset.target) == (
        S.RUNNING, S.CRASHED, S.CRASHED, S.RUNNING)
    assert walk(S.PAUSED, ()) == ()
    with pytest.raises(TransitionError) as caught:
        walk(S.RUNNING, (T.GUEST_HALT, T.GUEST_POWEROFF))  # a halted guest cannot power off
    assert (caught.value.source, caught.value.trigger) == (S.PAUSED, T.GUEST_POWEROFF)


def test_every_stop_from_a_live_state_is_possible() -> None:
    """Whatever state a domain is in, its process can still vanish."""
    assert sources_of(T.PROCESS_EXIT) == LIVE_STATES


@given(st.sampled_from(S), st.sampled_from(T))
def test_lookup_is_total(source: State, trigger: T) -> None:
    assert allowed(source, trigger) == (source in sources_of(trigger))
