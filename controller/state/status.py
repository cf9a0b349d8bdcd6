"""Per-domain status documents (DESIGN §6): conditions, and their files in the state dir.

The reconciler builds a `DomainStatus` after every pass and hands it to `StatusStore.write`,
which replaces `<state_dir>/status/<name>.json` atomically; the API serves `domctl get NAME
-o json` from `StatusStore.get_document`, whose `NoSuchDomain` reads "no domain named NAME".
Conditions follow Kubernetes: `set_condition` moves `lastTransitionTime` only when a
condition's status changes, so a message or reason update keeps the time of the transition.

Field names are the document's camelCase keys, so `to_dict()` is the plain form as is.
Never decides anything: it records what the reconciler observed. The engine never reads a
status document back; the API does (`read`), and the registry checks every one at start-up
(`check_all`) and reads one to rebuild a damaged record. A status file that is unreadable, of
the wrong shape or semantically impossible (a name not its file's, a `since` or transition time
that is no RFC 3339 stamp, a pid <= 0) is quarantined (jsondir) and treated as absent, never
raised: the next pass of its domain writes it afresh.

Public surface:
    ConditionType (Ready, Synced, PendingRestart, ManifestValid, Stalled, Overridden),
    ConditionStatus
    Condition(type, status, reason, message, lastTransitionTime)
    set_condition(conditions, new, now) -> tuple[Condition, ...]
    PendingChange(field, old, new, apply); PendingChange.from_change(Change)
    DomainStatus(...).to_dict(), .condition(type)
    StatusStore(state_dir): write(status), read(name), names(), remove(name), get_document(name),
        check_all()
    check_status(status, name)
    STATES_MEETING
    NoSuchDomain(name)
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import enum
import re
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.protocol import parse_rfc3339, rfc3339
from controller.state.jsondir import Damaged, JsonDir
from reconcilers.diff import Apply, Change
from reconcilers.errors import TerminalError
from reconcilers.model import DesiredState, DriverName, Management, Reason, State, to_plain

_CAMEL_WORD = re.compile(r"[A-Z][A-Za-z0-9]*")


class ConditionType(str, enum.Enum):
    READY = "Ready"  # the observed state equals the desired one
    SYNCED = "Synced"  # observedGeneration == generation and no live change left
    PENDING_RESTART = "PendingRestart"  # restart-only changes wait for the next start
    MANIFEST_VALID = "ManifestValid"
    STALLED = "Stalled"  # backing off after repeated failures
    OVERRIDDEN = "Overridden"  # an imperative API action holds until the manifest changes
    GUEST_AGENT = "GuestAgent"  # the qemu guest agent answers (only with guestAgent: true)
    REMOVAL_BLOCKED = "RemovalBlocked"  # a network's removal waits for its running users


class ConditionStatus(str, enum.Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: ConditionStatus
    reason: str  # one CamelCase word, e.g. "BackingOff"
    message: str = ""
    lastTransitionTime: str = ""  # noqa: N815 - the document's key; set by set_condition

    def __post_init__(self) -> None:
        if not _CAMEL_WORD.fullmatch(self.reason):
            raise ValueError(f"condition reason must be one CamelCase word: {self.reason!r}")


def set_condition(conditions: tuple[Condition, ...], new: Condition,
                  now: float) -> tuple[Condition, ...]:
    """`conditions` with `new` in place of its type (appended if absent).

    `lastTransitionTime` is kept when the status is unchanged and set to `now` (wall-clock
    seconds) when it changes or the condition is new.
    """
    old = next((c for c in conditions if c.type == new.type), None)
    unchanged = old is not None and old.status == new.status
    when = old.lastTransitionTime if unchanged and old is not None else rfc3339(now)
    stamped = replace(new, lastTransitionTime=when)
    if old is None:
        return (*conditions, stamped)
    return tuple(stamped if c.type == new.type else c for c in conditions)


@dataclass(frozen=True)
class PendingChange:
    """A changed field not yet in effect (`domctl diff`, the PendingRestart condition)."""

    field: str  # dotted path, "qemu.disks[0].cache"
    old: Any  # plain JSON forms
    new: Any
    apply: Apply

    @classmethod
    def from_change(cls, change: Change) -> PendingChange:
        return cls(field=change.path, old=change.old, new=change.new, apply=change.apply)


@dataclass(frozen=True)
class InterfaceStatus:
    """One NIC of a running domain, as `virsh domifaddr` shows it."""

    name: str | None  # the host side: tap or veth; None for qemu's user-mode network
    mac: str | None
    network: str | None  # the managed network, if any
    bridge: str | None
    addresses: tuple[str, ...] = ()  # "10.0.0.5/24" (guest side) or "10.0.0.5" (a lease)


@dataclass(frozen=True)
class SavedStatus:
    """A shutoff domain's managed-save image (`virsh managedsave`), restored at its start."""

    path: str
    size: int  # bytes
    savedAt: str  # noqa: N815 - RFC 3339 time of the save
    paused: bool  # saved paused: restored paused


@dataclass(frozen=True)
class DomainStatus:
    """The status document of one domain; field names are the JSON keys (DESIGN §6)."""

    name: str
    uuid: str
    driver: DriverName
    desired: DesiredState | None  # None: no valid manifest (e.g. being removed)
    state: State
    reason: Reason
    pid: int | None = None
    id: int | None = None
    generation: str | None = None
    observedGeneration: str | None = None  # noqa: N815
    restarts: int = 0
    since: str | None = None  # RFC 3339 time of the last state change
    backoffUntil: str | None = None  # noqa: N815 - RFC 3339 time of the next try
    conditions: tuple[Condition, ...] = ()
    pending: tuple[PendingChange, ...] = ()
    interfaces: tuple[InterfaceStatus, ...] = ()
    saved: SavedStatus | None = None
    management: Management | None = None  # spec.management; None: no valid manifest
    display: str | None = None  # the VNC display a running VM listens on (HOST:DISPLAY)

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = to_plain(self)
        return plain

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# The observed states in which a domain has reached each desired state (Ready, `domctl start`).
STATES_MEETING: Mapping[DesiredState, frozenset[State]] = {
    DesiredState.RUNNING: frozenset({State.RUNNING, State.BLOCKED}),
    DesiredState.PAUSED: frozenset({State.PAUSED}),
    DesiredState.SHUTOFF: frozenset({State.SHUTOFF}),
}

def check_status(status: DomainStatus, name: str) -> None:
    """ValueError for a document no pass of ours writes (from_plain only checks the types)."""
    if status.name != name:
        raise ValueError(f"names domain {status.name!r}, not {name!r}")
    for field, stamp in (("since", status.since), ("backoffUntil", status.backoffUntil),
                         ("saved.savedAt", status.saved.savedAt if status.saved else None),
                         *((f"conditions[{c.type.value}].lastTransitionTime",
                            c.lastTransitionTime or None) for c in status.conditions)):
        if stamp is not None:
            try:
                parse_rfc3339(stamp)
            except (ValueError, OverflowError):
                raise ValueError(f"{field} is not an RFC 3339 time: {stamp[:40]!r}") from None
    for field, value in (("pid", status.pid), ("id", status.id)):
        if value is not None and value <= 0:
            raise ValueError(f"{field} must be positive, got {value}")
    if status.restarts < 0:
        raise ValueError(f"restarts must not be negative, got {status.restarts}")
    if len({c.type for c in status.conditions}) != len(status.conditions):
        raise ValueError("a condition type appears twice")


class NoSuchDomain(TerminalError):
    """`domctl get` of a name with no status document (exit 1)."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        super().__init__(f"no domain named {name}{hint}")


class StatusStore:
    """The status documents under `<state_dir>/status/`."""

    def __init__(self, state_dir: Path) -> None:
        self._files = JsonDir(state_dir / "status")
        self._known: dict[str, DomainStatus] = {}  # as last written or read (one writer: us)
        self._watchers: dict[str | None, set[Callable[[], None]]] = {}  # None: every name

    def write(self, status: DomainStatus) -> None:
        """Replace the document; an unchanged one is not rewritten (no fsync per resync).
        Whoever `watch`es the name is told, so nothing needs to poll for a change."""
        if self._known.get(status.name) == status:
            return
        self._files.write(status.name, status.to_dict())
        self._stored(status)

    async def publish(self, status: DomainStatus) -> None:
        """`write`, in a worker thread and without fsync: a status document is an output,
        rebuilt by the domain's next pass, so a host crash that loses the last write costs
        nothing (a torn file is impossible: temp file and rename; a damaged one is
        quarantined and rebuilt). An fsync would make every state change wait for the disk
        (about 4 ms of a start here). Readers and watchers see the document once written."""
        if self._known.get(status.name) == status:
            return
        await asyncio.to_thread(self._files.write, status.name, status.to_dict(), False)
        self._stored(status)

    def _stored(self, status: DomainStatus) -> None:
        self._known[status.name] = status
        self._notify(status.name)

    def _notify(self, name: str) -> None:
        for notify in [*self._watchers.get(name, ()), *self._watchers.get(None, ())]:
            notify()

    async def changes(self, name: str) -> AsyncGenerator[DomainStatus | None, None]:
        """`name`'s status now (None: it has none), then again after every change of it,
        woken by `write`/`publish`, never polled. Runs until the caller stops iterating."""
        changed = asyncio.Event()
        with self.watch(name, changed.set):
            while True:
                yield self.read(name)
                await changed.wait()
                changed.clear()

    @contextlib.contextmanager
    def watch(self, name: str | None, notify: Callable[[], None]) -> Iterator[None]:
        """Call `notify` after every change or removal of `name`'s document (None: of any
        document) while the block runs."""
        self._watchers.setdefault(name, set()).add(notify)
        try:
            yield
        finally:
            watchers = self._watchers.get(name, set())
            watchers.discard(notify)
            if not watchers:
                self._watchers.pop(name, None)

    def read(self, name: str) -> DomainStatus | None:
        """The domain's status; None when there is none or it is damaged (quarantined)."""
        known = self._known.get(name)
        if known is None:
            try:
                known = self._files.read_as(DomainStatus, name,
                                            lambda status: check_status(status, name))
            except Damaged:
                return None
            if known is not None:
                self._known[name] = known
        return known

    def check_all(self) -> list[str]:
        """Read every document once, so that a damaged one is reported and moved aside at
        start-up rather than when someone asks; the names of the good ones."""
        return [name for name in self.names() if self.read(name) is not None]

    def names(self) -> list[str]:
        return self._files.names()

    def remove(self, name: str) -> None:
        self._known.pop(name, None)
        self._files.remove(name)
        self._notify(name)

    def get_document(self, name: str) -> dict[str, Any]:
        """The JSON document `domctl get NAME -o json` prints; NoSuchDomain when absent."""
        names = self.names()
        status = self.read(name) if name in names else None
        if status is None:
            raise NoSuchDomain(name, names)
        return status.to_dict()
