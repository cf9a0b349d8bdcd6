"""Why a container's init exited: a pure classification of what LXC logged and what we asked.

Called by LxcDriver's Tracker (tracking.py) when the pidfd on init fires (and the container
reached STOPPED). A pidfd says *that* init exited, not how; LXC's monitor reaps init and logs
its fate at DEBUG level in the container's lxc.log ("... is halting", "Killed(9) - ... init
exited") and a non-zero exit status at INFO level ("Child <pid> ended on error (3)"), so the
driver reads that log. An init that returned with no such line exited 0: a clean shutdown, as
libvirt reports any init exit (shutoff/shutdown, stopped/shutdown). One that failed (non-zero)
is reported as crashed (shutoff/crashed, stopped/failed): a deliberate difference from libvirt,
which reports every init exit as a shutdown (docs/architecture.md).

Each outcome names a state-machine trigger; the state, reason and libvirt events come from
reconcilers/statemachine.py. The exit is taken from `running` (`shutdown` while our halt
request is under way): a frozen init cannot exit on its own, and a destroy ends a frozen and a
running container alike.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from reconcilers.driver import RuntimeEvent, runtime_event
from reconcilers.model import Cause, State
from reconcilers.statemachine import Trigger


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
    EXITED = "exited"  # returned 0 (LXC logs only a non-zero status)
    FAILED = "failed"  # returned a non-zero status


@dataclass(frozen=True)
class Fate:
    fate: InitFate
    detail: str  # LXC's own words, for the event message


_HALT = re.compile(r'Container "[^"]*" is halting')
_REBOOT = re.compile(r'Container "[^"]*" is rebooting')
_SIGNAL = re.compile(r'- (\w+)\((\d+)\) - Container "[^"]*" init exited')
_ERROR = re.compile(r'Child <\d+> ended on error \((\d+)\)')


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
        match = _ERROR.search(line)
        if match:
            return Fate(InitFate.FAILED, f"init exited with status {match.group(1)}")
    return Fate(InitFate.EXITED, "init exited with status 0")


def exit_event(name: str, intent: Intent, fate: Fate) -> RuntimeEvent:
    """The state, reason and libvirt events for a stopped container."""
    source = State.SHUTDOWN if intent is Intent.SHUTDOWN else State.RUNNING
    if intent is Intent.DESTROY:
        return runtime_event(name, source, (Trigger.DESTROY,), Cause.CONTROLLER,
                             "destroyed by domctl")
    if intent is Intent.SHUTDOWN and fate.fate in (InitFate.HALTED, InitFate.EXITED,
                                                   InitFate.FAILED):
        # a custom init may simply exit on its halt signal: that is the clean shutdown we asked
        return runtime_event(name, source, (Trigger.GUEST_POWEROFF,), Cause.CONTROLLER,
                             "shut down at domctl's request")
    if fate.fate in (InitFate.HALTED, InitFate.EXITED):  # libvirt: any init exit
        return runtime_event(name, source, (Trigger.GUEST_POWEROFF,), Cause.GUEST, fate.detail)
    return runtime_event(name, source, (Trigger.PROCESS_EXIT,),
                         Cause.EXTERNAL if fate.fate is InitFate.KILLED else Cause.GUEST,
                         fate.detail)


def reboot_event(name: str) -> RuntimeEvent:
    """LXC started the container again after its init asked for a reboot."""
    return runtime_event(name, State.RUNNING, (Trigger.RESET,), Cause.GUEST,
                         "init rebooted the container")
