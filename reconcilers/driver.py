"""The Driver protocol: the one interface the reconciler uses to run a domain.

Both drivers (reconcilers/qemu, reconcilers/lxc) implement every method; an operation a
driver cannot do raises NotSupportedError. The controller constructs each driver with a
DriverContext and never looks inside it. Drivers report what happens on their own (a guest
powering off, a process killed from outside) through `DriverContext.on_event`; those events
are hints: the reconciler re-reads `observe()` before acting on them.

Rules every driver keeps:
- Nothing from a manifest can add an option or a config line (escape or refuse).
- Every process a driver starts is recorded (RuntimeRecord) so it can be found again after a
  controller restart; a process whose identity cannot be proven is never killed.
- `close()` drops connections and watchers but leaves every domain running.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from reconcilers.model import (
    Cause,
    Domain,
    DomainSpec,
    DriverName,
    EventDetail,
    EventType,
    Reason,
    State,
)
from reconcilers.statemachine import Trigger, walk
from reconcilers.stats import DomainStats


@dataclass(frozen=True)
class RuntimeRecord:
    """What proves a running process is the domain we started; persisted by the controller.

    `starttime` is the kernel's start time of the process in clock ticks since boot (field 22 of
    /proc/PID/stat): unlike a wall-clock create time it does not move when the clock is stepped.
    `extra` holds driver-specific paths (QMP socket, pidfile, lxcpath, ...), strings only.
    """

    name: str
    driver: DriverName
    uuid: str
    pid: int
    boot_id: str
    starttime: int
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Live:
    """The observed state of one domain, read from the hypervisor each time."""

    state: State
    reason: Reason
    pid: int | None = None
    record: RuntimeRecord | None = None
    message: str = ""  # e.g. "accel tcg (kvm unusable: ...)", or why a domain is nostate


SHUTOFF_UNKNOWN = Live(State.SHUTOFF, Reason.UNKNOWN)


@dataclass(frozen=True)
class SavedImage:
    """A managed save's image (libvirt's managedsave): the guest's state, complete on disk."""

    path: str
    spec: DomainSpec  # the live spec the guest ran with when saved (a restore needs it again)
    paused: bool  # saved while paused: restored paused
    size: int  # bytes
    saved_at: float  # wall-clock seconds


@dataclass(frozen=True)
class RuntimeEvent:
    """Something a driver saw happen to a domain, with libvirt's events it amounts to."""

    name: str
    state: State
    reason: Reason
    events: tuple[tuple[EventType, EventDetail], ...]
    cause: Cause
    message: str = ""


class ChangeKind(str, enum.Enum):
    LIVE = "live"  # applied to the running domain by apply_live
    RESTART = "restart"  # takes effect at the next start


@dataclass(frozen=True)
class DriverContext:
    """What the controller hands a driver: where to put files, and whom to tell about events."""

    runtime_dir: Path  # sockets, pidfiles (tmpfs-like, /run/domctl)
    state_dir: Path  # persistent driver data (e.g. the lxcpath, the busybox rootfs cache)
    log_dir: Path  # one <name>.log per domain: argv, timestamps, serial/console output
    on_event: Callable[[RuntimeEvent], None]


@dataclass(frozen=True)
class Capabilities:
    """What a driver found on this host when probed; a broken driver is disabled, not fatal."""

    driver: DriverName
    available: bool
    version: str = ""
    message: str = ""  # why it is unavailable, or notes such as "kvm unusable: ..."
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Console:
    """How to reach a domain's console from this host (for `domctl console`)."""

    socket: str = ""  # a Unix stream socket to relay the terminal to (qemu serial: socket)
    argv: tuple[str, ...] = ()  # or a command to run in the terminal (lxc-console)


VNC_BASE_PORT = 5900
"""VNC display 0's TCP port."""


@dataclass(frozen=True)
class Display:
    """Where a domain's graphical console listens now (for `domctl vncdisplay`)."""

    host: str
    port: int

    @property
    def vnc(self) -> str:
        """virsh vncdisplay's form: HOST:DISPLAY, the display being the port less 5900."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port - VNC_BASE_PORT}"


class AgentState(str, enum.Enum):
    """Whether the qemu guest agent answers (the GuestAgent condition)."""

    CONNECTED = "Connected"  # guest-ping answered
    NOT_RESPONDING = "NotResponding"  # the channel is there, nothing answers (yet)


@dataclass(frozen=True)
class GuestInterfaces:
    """What a driver knows of a running domain's addresses from the guest's side.

    `addresses` maps a NIC's MAC (lower case) to its addresses with prefix ("10.0.0.5/24",
    "fd00::5/64"): from the container's network namespace (lxc) or the guest agent's
    guest-network-get-interfaces (qemu). `agent` is None when the domain has no agent.
    """

    addresses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    agent: AgentState | None = None
    agent_message: str = ""


@runtime_checkable
class Driver(Protocol):
    """The operations of DESIGN §2. `name` arguments are domain names."""

    name: DriverName

    async def capabilities(self) -> Capabilities:
        """Probe the host once (cached); never raises."""
        ...

    async def validate(self, domain: Domain) -> None:
        """Raise HostValidationError naming the field if this host cannot run the spec."""
        ...

    async def start(self, domain: Domain, paused: bool, token: str) -> Live:
        """Start the domain (metadata.uuid is always set); return its live state. `token`,
        which the engine recorded before the call, goes into the spawned process's
        environment (identity.START_TOKEN_ENV), for `recover`."""
        ...

    async def suspend(self, name: str) -> None: ...

    async def resume(self, name: str) -> None: ...

    async def shutdown(self, name: str, timeout: float) -> bool:
        """Ask the guest to shut down; wait up to `timeout` s; True if it stopped."""
        ...

    async def destroy(self, name: str) -> None:
        """Stop the domain now (SIGTERM, then SIGKILL) and release its resources."""
        ...

    async def observe(self, name: str) -> Live:
        """The domain's state now; SHUTOFF_UNKNOWN-like for a domain the driver does not run."""
        ...

    async def reattach(self, record: RuntimeRecord) -> Live | None:
        """Adopt a domain after a controller restart.

        Returns its Live state when adopted, None when the process is gone, and a Live in
        State.NOSTATE (with a message) when a process exists but is not provably ours.
        The state is the hypervisor's; the reason may be vaguer than the one the domain had
        (unknown, starting up): qemu and LXC do not keep it, the engine's ledger does.
        """
        ...

    async def recover(self, domain: Domain, token: str) -> Live | None:
        """Adopt what start `token` spawned when the controller died before recording it.

        The process is found by what the driver puts in its command line and proven by the
        token in its environment. None when there is none; one that is provably this start's
        but cannot be adopted is stopped (it was never recorded, so it is nobody else's).
        """
        ...

    async def strays(self, name: str) -> tuple[str, ...]:
        """Processes of this domain name that this driver neither started nor adopted,
        described ("qemu pid 123"): the engine refuses any start while one exists, in any
        driver, so a name never runs twice."""
        ...

    def classify(self, old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
        """Each changed field (dotted path: "memory", "cputune.shares") → live or restart."""
        ...

    async def apply_live(self, name: str, old: DomainSpec, new: DomainSpec) -> Sequence[str]:
        """Apply the LIVE fields of classify(old, new) to the running domain; the devices
        added or removed, in libvirt's words (`device-added: vcpu1`), for the event."""
        ...

    def console(self, name: str, spec: DomainSpec) -> Console:
        """Where the domain's console is; TerminalError saying why when it has none."""
        ...

    async def disks(self, name: str, spec: DomainSpec) -> Sequence[Mapping[str, Any]]:
        """The domain's storage as `virsh domblklist` + `domblkinfo` show it: per device its
        name, the file used, base image, format, virtual and actual size (JSON-ready keys);
        for `domctl describe` and `get -o json`, read when asked, never per pass."""
        ...

    async def save(self, name: str) -> SavedImage:
        """Managed save: pause the guest, write its state to an image (complete or absent,
        never half-written: a crash mid-save leaves none), then quit qemu. The domain is then
        shutoff/saved. NotSupportedError for a driver that cannot (lxc)."""
        ...

    def saved_image(self, name: str) -> SavedImage | None:
        """The domain's managed-save image, if one is on disk (cheap: no process is run)."""
        ...

    async def discard_saved(self, name: str) -> None:
        """Delete the domain's managed-save image (a restart-only change or a forced boot)."""
        ...

    async def restore(self, domain: Domain, token: str) -> Live:
        """Start the domain from its managed-save image (as `start`: the token in the
        process's environment; running, or paused if it was saved paused); the image is
        deleted once the guest runs from it. DriverError when there is none."""
        ...

    async def release_storage(self, name: str, spec: DomainSpec) -> Sequence[str]:
        """The domain is being undefined: delete the volumes domctl made for it whose
        deletePolicy is Delete; return the paths kept (Retain), for the undefined event."""
        ...

    async def interfaces(self, name: str) -> GuestInterfaces:
        """The running domain's addresses as its guest sees them; never raises (empty when
        unknown: not running, no agent, a namespace gone)."""
        ...

    async def stats(self, name: str) -> DomainStats:
        """The running domain's figures now (virsh domstats: CPU time, memory, disk and NIC
        traffic, reconcilers/stats.py), read when asked, never per pass; DriverError when
        it is not running under this driver or they cannot be read."""
        ...

    def exec_argv(self, name: str, command: Sequence[str]) -> tuple[str, ...]:
        """The host command that runs `command` inside the running domain on the caller's
        terminal and exits with its code (`domctl exec`); NotSupportedError where the driver
        has no way in from the host."""
        ...

    async def display(self, name: str) -> Display | None:
        """Where the running domain's graphical console listens now, as the hypervisor reports
        it (an automatic VNC port included); None when it has none. DriverError when it is not
        running under this driver."""
        ...

    async def close(self) -> None:
        """Drop connections and watchers; leave every domain running."""
        ...


def runtime_event(name: str, source: State, triggers: Sequence[Trigger], cause: Cause,
                  message: str) -> RuntimeEvent:
    """What a driver reports for what it saw: `triggers` taken from `source` in the state
    machine, whose rows give the state, reason and libvirt events (drivers spell none).

    Raises TransitionError for a move the table does not allow; each driver's tests take every
    input of its event table through here (tests/reconcile/test_driver_events.py).
    """
    steps = walk(source, triggers)
    return RuntimeEvent(name=name, state=steps[-1].target, reason=steps[-1].reason,
                        events=tuple(event for step in steps for event in step.events),
                        cause=cause, message=message)
