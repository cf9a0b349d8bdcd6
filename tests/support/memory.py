"""MemoryDriver: the Driver protocol over a dictionary, for engine tests that need no processes.

Its domains move only by the rows of reconcilers/statemachine.py, and it keeps the real drivers'
rules: a domain outlives the driver (it lives in a MemoryHost, as a process outlives the
controller), a fresh driver sees it as `nostate` until it re-attaches the record, and nothing it
did not start or adopt is touched. tests/contract runs it through the same contract tests as
the qemu and LXC drivers. Knobs for engine tests: `fail_start`, `fail_save`, `invalid`,
`host.deaf`, `host.figures` (what `stats` reports, or raises, per name). Managed saves are
images in the MemoryHost (they outlive the driver, as files on disk do), holding the spec the
domain ran with; an lxc-named driver refuses them, as LxcDriver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconcilers.diff import classify_leaves
from reconcilers.driver import (
    Capabilities,
    ChangeKind,
    Console,
    Display,
    GuestInterfaces,
    Live,
    RuntimeEvent,
    RuntimeRecord,
    SavedImage,
)
from reconcilers.errors import DomctlError, DriverError, HostValidationError, NotSupportedError
from reconcilers.model import Cause, Domain, DomainSpec, DriverName, Reason, State
from reconcilers.statemachine import Transition, Trigger, transition
from reconcilers.stats import DiskStats, DomainStats

LIVE_FIELDS = frozenset({
    "current_memory", "cputune.shares", "cputune.quota", "cputune.period", "cputune.vcpupin",
    "cputune.emulatorpin", "lifecycle.on_poweroff", "lifecycle.on_reboot", "lifecycle.on_crash",
    "state", "restart_policy", "update_policy", "shutdown_timeout",
})


@dataclass
class MemoryHost:
    """What outlives a MemoryDriver: the domains that run, by name, and the pids handed out."""

    running: dict[str, Live] = field(default_factory=dict)
    deaf: set[str] = field(default_factory=set)  # guests that ignore a shutdown request
    next_pid: int = 1000
    tokens: dict[str, str] = field(default_factory=dict)  # the start token each domain got
    specs: dict[str, DomainSpec] = field(default_factory=dict)  # what each running one runs
    saved: dict[str, SavedImage] = field(default_factory=dict)  # managed-save images
    wall: Callable[[], float] = time.time  # the clock of SavedImage.saved_at
    figures: dict[str, DomainStats | DomctlError] = field(default_factory=dict)
    """What `stats(name)` returns (or raises) for a running domain; unset: idle figures."""


def _ignore(event: RuntimeEvent) -> None:
    del event


class MemoryDriver:
    """Domains in a MemoryHost; `fail_start` and `invalid` make the next start raise them."""

    def __init__(self, host: MemoryHost | None = None,
                 on_event: Callable[[RuntimeEvent], None] = _ignore,
                 name: DriverName = DriverName.QEMU) -> None:
        self.name = name
        self.host = host or MemoryHost()
        self.on_event = on_event
        self.fail_start: Exception | None = None
        self.fail_save: DomctlError | None = None
        self.invalid: HostValidationError | None = None
        self._ours: set[str] = set()  # started or adopted by this driver
        self._last_stop: dict[str, Reason] = {}

    @property
    def running(self) -> dict[str, Live]:
        return self.host.running

    async def capabilities(self) -> Capabilities:
        return Capabilities(self.name, True, version="memory")

    async def validate(self, domain: Domain) -> None:
        if self.invalid is not None:
            raise self.invalid

    async def start(self, domain: Domain, paused: bool, token: str) -> Live:
        await self.validate(domain)
        name = domain.name
        if self.fail_start is not None:
            raise self.fail_start
        if name in self.running:
            raise DriverError(name, "start", "already running")
        trigger = Trigger.START_PAUSED if paused else Trigger.START
        return self._spawn(domain, domain.spec, trigger, token)

    def _spawn(self, domain: Domain, spec: DomainSpec, trigger: Trigger, token: str) -> Live:
        name = domain.name
        if domain.metadata.uuid is None:
            raise DriverError(name, "start", "metadata.uuid must be set before a start")
        self.host.next_pid += 1
        record = RuntimeRecord(name=name, driver=self.name, uuid=domain.metadata.uuid,
                               pid=self.host.next_pid, boot_id="memory", starttime=1)
        started = transition(State.SHUTOFF, trigger)
        self.running[name] = Live(started.target, started.reason, pid=record.pid, record=record)
        self.host.tokens[name] = token
        self.host.specs[name] = spec
        self._ours.add(name)
        return self.running[name]

    def _move(self, name: str, operation: str,
              triggers: Sequence[Trigger]) -> list[Transition]:
        """Take `triggers` one after another from the domain's state (a stop removes it)."""
        if name not in self._ours or name not in self.running:
            raise DriverError(name, operation, "not running under this driver")
        live, steps = self.running[name], []
        for trigger in triggers:
            steps.append(transition(live.state, trigger))
            live = Live(steps[-1].target, steps[-1].reason, pid=live.pid, record=live.record)
        if live.state is State.SHUTOFF:
            del self.running[name]
            self._ours.discard(name)
            self._last_stop[name] = live.reason
        else:
            self.running[name] = live
        return steps

    async def suspend(self, name: str) -> None:
        self._move(name, "suspend", [Trigger.SUSPEND])

    async def resume(self, name: str) -> None:
        self._move(name, "resume", [Trigger.RESUME])

    async def shutdown(self, name: str, timeout: float) -> bool:
        if not self._unknown_is_off(name, "shutdown"):
            return True
        if name in self.host.deaf:
            await asyncio.sleep(timeout)
            return False
        self._stop(name, "shutdown", [Trigger.SHUTDOWN, Trigger.GUEST_POWEROFF], "shut down")
        return True

    async def destroy(self, name: str) -> None:
        if self._unknown_is_off(name, "destroy"):
            self._stop(name, "destroy", [Trigger.DESTROY], "destroyed")

    def _unknown_is_off(self, name: str, operation: str) -> bool:
        """True for a domain of ours; False for one that does not run; refuses a stranger."""
        if name in self._ours:
            return True
        if name in self.running:
            raise DriverError(name, operation, "runs, but was not started or adopted by this "
                                               "driver; refusing to touch it")
        return False

    def _stop(self, name: str, operation: str, triggers: Sequence[Trigger], message: str) -> None:
        steps = self._move(name, operation, triggers)
        self.on_event(RuntimeEvent(name, steps[-1].target, steps[-1].reason,
                                   tuple(event for step in steps for event in step.events),
                                   Cause.CONTROLLER, message))

    async def observe(self, name: str) -> Live:
        live = self.running.get(name)
        if live is None:
            return Live(State.SHUTOFF, self._last_stop.get(name, Reason.UNKNOWN))
        if name not in self._ours:
            return Live(State.NOSTATE, Reason.UNKNOWN, pid=live.pid,
                        message="runs, but was not started or adopted by this driver")
        return live

    async def reattach(self, record: RuntimeRecord) -> Live | None:
        live = self.running.get(record.name)
        if live is None:
            return None
        if live.record != record:
            return Live(State.NOSTATE, Reason.UNKNOWN, pid=live.pid,
                        message=f"the record does not match pid {live.pid}")
        self._ours.add(record.name)
        return live

    async def recover(self, domain: Domain, token: str) -> Live | None:
        live = self.running.get(domain.name)
        if live is None or self.host.tokens.get(domain.name) != token:
            return None
        self._ours.add(domain.name)
        return live

    async def strays(self, name: str) -> tuple[str, ...]:
        live = self.running.get(name)
        if live is None or name in self._ours:
            return ()
        return (f"memory pid {live.pid}",)

    def classify(self, old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
        return classify_leaves(old, new, LIVE_FIELDS)

    async def apply_live(self, name: str, old: DomainSpec, new: DomainSpec) -> Sequence[str]:
        self._move(name, "apply_live", [])
        self.host.specs[name] = new
        return ()

    async def save(self, name: str) -> SavedImage:
        if self.name is DriverName.LXC:
            raise NotSupportedError(self.name.value, "managed save")
        live = self.running.get(name)
        if live is None or name not in self._ours:
            raise DriverError(name, "save", "not running: nothing to save")
        if self.fail_save is not None:
            raise self.fail_save
        spec = self.host.specs[name]
        image = SavedImage(f"memory://{name}.save", spec, live.state is State.PAUSED,
                           spec.memory // 4, self.host.wall())
        self.host.saved[name] = image  # complete before the process goes
        self._stop(name, "save", [Trigger.SAVE], "saved")
        return image

    def saved_image(self, name: str) -> SavedImage | None:
        return self.host.saved.get(name)

    async def discard_saved(self, name: str) -> None:
        self.host.saved.pop(name, None)

    async def restore(self, domain: Domain, token: str) -> Live:
        name = domain.name
        image = self.host.saved.get(name)
        if image is None:
            raise DriverError(name, "restore", "no managed-save image")
        if self.fail_start is not None:
            raise self.fail_start
        if name in self.running:
            raise DriverError(name, "restore", "already running")
        live = self._spawn(domain, image.spec,
                           Trigger.RESTORE_PAUSED if image.paused else Trigger.RESTORE, token)
        del self.host.saved[name]  # the guest runs from it now
        return live

    def console(self, name: str, spec: DomainSpec) -> Console:
        return Console()

    def exec_argv(self, name: str, command: Sequence[str]) -> tuple[str, ...]:
        """The command as it is: a memory domain is this host."""
        self._require_ours(name, "exec")
        return tuple(command)

    async def display(self, name: str) -> Display | None:
        self._require_ours(name, "display")
        return None

    def _require_ours(self, name: str, operation: str) -> None:
        if name not in self.running or name not in self._ours:
            raise DriverError(name, operation, "not running under this controller")

    async def disks(self, name: str, spec: DomainSpec) -> Sequence[Mapping[str, Any]]:
        return [{"name": disk.name, "source": disk.source} for disk in
                (spec.qemu.disks if spec.qemu is not None else ())]

    async def release_storage(self, name: str, spec: DomainSpec) -> Sequence[str]:
        return ()

    async def interfaces(self, name: str) -> GuestInterfaces:
        return GuestInterfaces()

    async def stats(self, name: str) -> DomainStats:
        self._move(name, "stats", [])  # DriverError unless it runs under this driver
        figures = self.host.figures.get(name)
        if isinstance(figures, DomctlError):
            raise figures
        if figures is not None:
            return figures
        spec = self.host.specs[name]
        return DomainStats(
            cpu_seconds=0.0, rss_bytes=spec.memory,
            balloon_bytes=(spec.current_memory or spec.memory) if spec.qemu else None,
            disks=tuple(DiskStats(disk.name, 0, 0, 0, 0)
                        for disk in (spec.qemu.disks if spec.qemu is not None else ())))

    async def close(self) -> None:
        self._ours.clear()
