"""What decide() reads about a domain besides its manifest and its live state.

The engine's ledger (controller/engine/ledger.py) records these facts as they happen and
hands them to `reconcilers.decide.decide()` as one `History`; the status projection reads the
same records. Plain frozen data: what the facts *mean* is decided only in decide.py.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconcilers.diff import Classification
from reconcilers.driver import SavedImage
from reconcilers.model import Cause, DesiredState, DomainSpec, Reason, StopMode


class ApiAction(str, enum.Enum):
    """An imperative request through the API (`domctl stop NAME`, ...)."""

    START = "start"
    STOP = "stop"
    SUSPEND = "suspend"
    RESUME = "resume"
    RESTART = "restart"  # down first, then the manifest's state with an explicit start
    DESTROY = "destroy"  # at once (the engine interrupts a graceful shutdown), then held off
    SAVE = "save"  # a managed save at once (the engine's save_now), then held off


# The state each request drives the domain to while it is in force (restart: see decide()).
API_STATES: Mapping[ApiAction, DesiredState] = {
    ApiAction.START: DesiredState.RUNNING, ApiAction.RESUME: DesiredState.RUNNING,
    ApiAction.STOP: DesiredState.SHUTOFF, ApiAction.SUSPEND: DesiredState.PAUSED,
    ApiAction.RESTART: DesiredState.SHUTOFF, ApiAction.DESTROY: DesiredState.SHUTOFF,
    ApiAction.SAVE: DesiredState.SHUTOFF,
}
# How the requests that stop a domain stop it: `domctl stop` (and a restart's first half) is
# a graceful shutdown whatever the manifest's stopMode, `domctl save` a managed save.
API_STOP_MODES: Mapping[ApiAction, StopMode] = {
    ApiAction.STOP: StopMode.SHUTDOWN, ApiAction.RESTART: StopMode.SHUTDOWN,
    ApiAction.DESTROY: StopMode.SHUTDOWN, ApiAction.SAVE: StopMode.SAVE,
}
EXPLICIT_STARTS = frozenset({ApiAction.START, ApiAction.RESTART})
"""Requests that overrule an earlier stop or stall (decide() compares their times)."""


@dataclass(frozen=True)
class ApiRequest:
    """An API request: in force while the manifest epoch it was made under holds."""

    action: ApiAction
    uid: int  # who asked (SO_PEERCRED)
    epoch: int  # History.epoch when it was made
    at: float  # wall-clock seconds of the request
    force_boot: bool = False  # `domctl start --force-boot`: a saved image is discarded

    def describe(self) -> str:
        action = f"{self.action.value}{' --force-boot' if self.force_boot else ''}"
        return (f"{action} through the API by uid {self.uid}; honoured until the manifest "
                "changes")

    def in_force(self, epoch: int) -> bool:
        """A request holds while the manifest epoch it was made under is the current one."""
        return self.epoch == epoch


@dataclass(frozen=True)
class LastStop:
    """How the domain last reached shutoff (recorded by the caller at every stop)."""

    reason: Reason  # the shutoff reason
    cause: Cause  # who caused it
    epoch: int  # History.epoch when it happened
    at: float = 0.0  # wall-clock seconds of the stop
    host: bool = False  # by `domctl host-shutdown`: the next controller starts it again


@dataclass(frozen=True)
class Stalled:
    """A terminal error (errors.TerminalError): no retry until the manifest changes."""

    message: str
    epoch: int  # History.epoch when it was raised
    at: float = 0.0  # wall-clock seconds when it was raised
    host: bool = False  # a host validation error: re-checked by every start


@dataclass(frozen=True)
class HostShutdown:
    """`domctl host-shutdown` took the domain down: it stays down, whatever the manifest or
    the API say, until the controller restarts (the host is going down)."""

    mode: StopMode  # how: a managed save or a graceful shutdown
    uid: int  # who asked
    at: float  # wall-clock seconds

    def describe(self) -> str:
        return (f"host-shutdown --mode {self.mode.value} by uid {self.uid}; held down until "
                "the controller restarts")


@dataclass(frozen=True)
class History:
    """What the controller remembers about one domain, beyond its desired spec and live state."""

    now: float  # the caller's clock, the one backoff_until is on
    wall: float = 0.0  # wall-clock seconds, the clock of every `at`
    epoch: int = 0
    """Counts changes of the desired spec (edits, reverts, removal, re-adding): a content hash
    cannot order events, as a revert brings an old generation back."""
    last_stop: LastStop | None = None
    failures: int = 0  # consecutive failures counted by the crash-loop backoff (for messages)
    backoff_until: float | None = None  # no restart before this time
    stalled: Stalled | None = None
    live_spec: DomainSpec | None = None  # the spec the running domain has (None: not running)
    classification: Classification = field(default_factory=dict)
    """The driver's classify(live_spec, desired spec)."""
    override: ApiRequest | None = None  # the last API request (in force under its epoch)
    shutting_down: bool = False  # a graceful shutdown is waiting for the guest
    saving: bool = False  # a managed save runs outside the work queue (save_now)
    removal_in: float | None = None
    """Seconds until a vanished manifest's domain is removed (inf: held by the prune guard);
    None while a manifest declares it."""
    last_spec: DomainSpec | None = None
    """The last valid manifest's spec: what an undefine releases the storage of (its volumes'
    delete policies) once the manifest is gone."""
    saved: SavedImage | None = None  # the domain's managed-save image (a shutoff domain's)
    saved_classification: Classification = field(default_factory=dict)
    """The driver's classify(saved.spec, desired spec): a restart-only change discards it."""
    host_shutdown: HostShutdown | None = None  # a host shutdown holds the domain down
    waiting_for: tuple[str, ...] = ()
    """The domain's dependencies (spec.dependsOn) that are not Ready, each with why ("db: not
    Ready (shutoff)", "cache: no such domain"): a start waits for them."""
    dependents_up: tuple[str, ...] = ()
    """Removed domains that depend on this removed one and are still up: they stop first."""
    start_slot: bool = True
    """False while --max-parallel-starts starts are in flight, or a domain of a higher
    startPriority waits for a slot: a start waits (the engine requeues it)."""
