"""Why a container's init exited: a pure classification of what LXC logged and what we asked.

Called by LxcDriver when the pidfd on init fires (and the container reached STOPPED). A pidfd
says *that* init exited, not how; LXC's monitor reaps init and logs its fate at DEBUG level in
the container's lxc.log ("... is halting", "Killed(9) - ... init exited"), so the driver reads
that log. Never guesses "shutdown" for an exit nobody can explain: that is reported as crashed.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from reconcilers.driver import RuntimeEvent, stopped_event
from reconcilers.model import Cause, EventDetail, EventType, Reason, State


class Intent(str, enum.Enum):
    """What the driver itself last asked of a container, so its exit can be attributed."""

    NONE = "none"
    SHUTDOWN = "shutdown"  # halt signal sent by shutdown()
    DESTROY = "destroy"  # lxc-stop -k sent by destroy()


class InitFate(str, enum.Enum):
    """What LXC's monitor saw when it reaped init."""

    HALTED = "halted"  # init called reboot(POWER_OFF/HALT): the kernel reports SIGINT
    REBOOTED = "rebooted"  # reboot(RESTART): SIGHUP; LXC starts the container again
    KILLED = "killed"  # died of another signal (kill -9 from outside, a crash)
    EXITED = "exited"  # returned; LXC does not log the exit status


@dataclass(frozen=True)
class Fate:
    fate: InitFate
    detail: str  # LXC's own words, for the event message


_HALT = re.compile(r'Container "[^"]*" is halting')
_REBOOT = re.compile(r'Container "[^"]*" is rebooting')
_SIGNAL = re.compile(r'- (\w+)\((\d+)\) - Container "[^"]*" init exited')


def init_fate(lxc_log: str) -> Fate:
    """The fate of the last init recorded in `lxc_log` (the log is truncated at each start)."""
    for line in reversed(lxc_log.splitlines()):
        if _HALT.search(line):
            return Fate(InitFate.HALTED, "init halted the container")
        if _REBOOT.search(line):
            return Fate(InitFate.REBOOTED, "init rebooted the container")
        match = _SIGNAL.search(line)
        if match:
            return Fate(InitFate.KILLED, f"init was killed by signal {match.group(2)} "
                                         f"({match.group(1)})")
    return Fate(InitFate.EXITED, "init exited (LXC does not report its exit status)")


def exit_event(name: str, intent: Intent, fate: Fate) -> RuntimeEvent:
    """The state, reason and libvirt events for a stopped container."""
    if intent is Intent.DESTROY:
        return _stopped(name, Reason.DESTROYED, Cause.CONTROLLER, "destroyed by domctl")
    if intent is Intent.SHUTDOWN and fate.fate in (InitFate.HALTED, InitFate.EXITED):
        # a custom init may simply exit on its halt signal: that is the clean shutdown we asked
        return _stopped(name, Reason.SHUTDOWN, Cause.CONTROLLER,
                        "shut down at domctl's request", EventDetail.FINISHED)
    if fate.fate is InitFate.HALTED:
        return _stopped(name, Reason.SHUTDOWN, Cause.GUEST, fate.detail, EventDetail.GUEST)
    return _stopped(name, Reason.CRASHED, Cause.EXTERNAL if fate.fate is InitFate.KILLED
                    else Cause.GUEST, fate.detail)


def _stopped(name: str, reason: Reason, cause: Cause, message: str,
             shutdown: EventDetail | None = None) -> RuntimeEvent:
    events = [stopped_event(reason)]
    if shutdown is not None:
        events.insert(0, (EventType.SHUTDOWN, shutdown))
    return RuntimeEvent(name=name, state=State.SHUTOFF, reason=reason, events=tuple(events),
                        cause=cause, message=message)
