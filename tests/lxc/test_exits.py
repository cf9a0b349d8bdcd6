"""Exit classification as a table: what we asked × what LXC's monitor logged → libvirt terms."""

from __future__ import annotations

import pytest

from reconcilers.lxc.exits import Fate, InitFate, Intent, exit_event, init_fate
from reconcilers.model import Cause, EventDetail, EventType, Reason

HALT = ('lxc-start c1 20261124174436.253 DEBUG    start - ../src/lxc/start.c:__lxc_start:2137 '
        '- Interrupt(2) - Container "c1" is halting')
KILLED = ('lxc-start c1 20261124174433.397 DEBUG    start - ../src/lxc/start.c:__lxc_start:2147 '
          '- Killed(9) - Container "c1" init exited')
REBOOT = 'lxc-start c1 1 DEBUG start - x - Hangup(1) - Container "c1" is rebooting'
NOISE = 'lxc-start c1 1 DEBUG start - x - Container init process 7309 exited'
FAILED = ('lxc-start c1 20261126031659.174 INFO     error - ../src/lxc/error.c:'
          'lxc_error_set_and_log:31 - Child <12233> ended on error (3)')
ON_SIGNAL = 'lxc-start c1 1 INFO error - x - Child <12233> ended on signal Killed(9)'


@pytest.mark.parametrize("log, fate", [
    (f"{NOISE}\n{HALT}\n", InitFate.HALTED),
    (f"{KILLED}\n{NOISE}", InitFate.KILLED),
    (f"{KILLED}\n{ON_SIGNAL}", InitFate.KILLED),
    (f"{NOISE}\n{FAILED}", InitFate.FAILED),
    (REBOOT, InitFate.REBOOTED),
    (NOISE, InitFate.EXITED),
    ("", InitFate.EXITED),
])
def test_init_fate(log: str, fate: InitFate) -> None:
    assert init_fate(log).fate is fate


def test_killed_names_the_signal() -> None:
    assert "signal 9 (Killed)" in init_fate(KILLED).detail


def test_the_exit_status_is_named() -> None:
    assert init_fate(FAILED).detail == "init exited with status 3"
    assert init_fate(NOISE).detail == "init exited with status 0"


STOPPED = {reason: (EventType.STOPPED, detail) for reason, detail in [
    (Reason.SHUTDOWN, EventDetail.SHUTDOWN), (Reason.DESTROYED, EventDetail.DESTROYED),
    (Reason.CRASHED, EventDetail.FAILED)]}


@pytest.mark.parametrize("intent, fate, reason, cause, shutdown", [
    (Intent.DESTROY, InitFate.KILLED, Reason.DESTROYED, Cause.CONTROLLER, None),
    (Intent.DESTROY, InitFate.HALTED, Reason.DESTROYED, Cause.CONTROLLER, None),
    (Intent.SHUTDOWN, InitFate.HALTED, Reason.SHUTDOWN, Cause.CONTROLLER, EventDetail.FINISHED),
    (Intent.SHUTDOWN, InitFate.EXITED, Reason.SHUTDOWN, Cause.CONTROLLER, EventDetail.FINISHED),
    (Intent.SHUTDOWN, InitFate.KILLED, Reason.CRASHED, Cause.EXTERNAL, None),
    (Intent.NONE, InitFate.HALTED, Reason.SHUTDOWN, Cause.GUEST, EventDetail.GUEST),
    (Intent.NONE, InitFate.KILLED, Reason.CRASHED, Cause.EXTERNAL, None),
    (Intent.SHUTDOWN, InitFate.FAILED, Reason.SHUTDOWN, Cause.CONTROLLER, EventDetail.FINISHED),
    # libvirt: an init that exits is a shutdown; domctl tells a failed one apart
    (Intent.NONE, InitFate.EXITED, Reason.SHUTDOWN, Cause.GUEST, EventDetail.GUEST),
    (Intent.NONE, InitFate.FAILED, Reason.CRASHED, Cause.GUEST, None),
])
def test_exit_event(intent: Intent, fate: InitFate, reason: Reason, cause: Cause,
                    shutdown: EventDetail | None) -> None:
    event = exit_event("c1", intent, Fate(fate, "detail"))
    assert (event.reason, event.cause) == (reason, cause)
    expected = ((EventType.SHUTDOWN, shutdown),) if shutdown else ()
    assert event.events == expected + (STOPPED[reason],)
