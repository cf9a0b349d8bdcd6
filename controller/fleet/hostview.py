"""The host view: the fleet's desired state cut down to what THIS host must do.

`domctl run --etcd ... --host NAME` feeds the engine the snapshots of EtcdSource (every published
manifest) filtered by the placements (`placements/<domain>`, written by the scheduler), so the
engine, unchanged, reconciles exactly the domains placed here. Per domain of the snapshot:

- placed here, and released → in the engine's snapshot as the manifest says. Released: the
  placement has no `previous` host (or it is this one); or the previous host no longer holds a
  lease (`hosts/<previous>` is gone: a failover, and that host fenced itself before its lease
  ran out, fencing.py) and the domain says `placement.failover: true` (a domain without it
  is moved only by a drain or an edit, and waits for its release whatever happens to the
  previous host); or `status/<domain>`, written by the previous host for this placement's
  epoch (or a later one), says it is shut off there; or this host's own status document already
  answers this epoch (it took the domain over before a restart). Once released, a placement
  stays released for its epoch (a previous host that registers again later changes nothing).
- placed here but not released yet (the previous host is still shutting it down) → `state:
  shutoff` when this host knows it, else absent: it starts once the release is seen;
- placed elsewhere, or unplaced, but known here (it has a record: it ran, or was defined, here)
  → `state: shutoff`: it stops here, gracefully, and stays defined with its local volumes (a
  move never deletes anything) until the manifest itself goes;
- never known here and not placed here → absent.

So a move is a change of state, never a removal: the engine's removal grace and mass-prune
guard (a drain moves everything) see nothing to remove. A domain fenced by this host (fencing.py)
is at `state: shutoff` too, until the fence is lifted.

Until the placements, the hosts and the status documents have been read once, the snapshot says
`readable=False` (the engine keeps its domains on their last valid spec, as for an unreadable
directory), never an empty fleet that would stop everything.

`host_view()` and `released()` are pure (tests/unit/test_fleet_hostview.py); `HostView` holds the
four mirrors (manifests through EtcdSource; placements, hosts, statuses through PrefixMirror)
and hands each new view to the engine's on_snapshot.

Public surface:
    Role, Fleet, StatusMark, released(name, placement, fleet, me, failover, granted), role(...),
    host_view(snapshot, roles) -> Snapshot, HostView(store, keys, me, on_snapshot, known, ...),
    decoded(kvs, decode)
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from controller.fleet.keys import Keys, Placement
from controller.fleet.mirror import PrefixMirror
from controller.fleet.source import EtcdSource
from controller.fleet.store import EtcdStore, KeyValue
from controller.manifests.source import Snapshot
from reconcilers.model import DesiredState, Domain

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


class Role(str, enum.Enum):
    RUN = "run"  # placed here and released: as the manifest says
    FENCED = "fenced"  # placed here, but this host fenced itself: shutoff
    WAIT = "wait"  # placed here, the previous host has not released it yet
    RELEASE = "release"  # known here, placed elsewhere or unplaced: shutoff
    ABSENT = "absent"  # neither placed nor known here


SHUTOFF_ROLES = frozenset({Role.FENCED, Role.WAIT, Role.RELEASE})


@dataclass(frozen=True)
class StatusMark:
    """What a status document in etcd says of who wrote it: host, placement epoch, state."""

    host: str
    epoch: int
    state: str

    @classmethod
    def decode(cls, key: str, value: bytes) -> StatusMark:
        try:
            data = json.loads(value)
            return cls(str(data["host"]), int(data["epoch"]), str(data["state"]))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{key}: not a fleet status document: {err}") from None


@dataclass(frozen=True)
class Fleet:
    """What etcd says about the domains' whereabouts, as far as it was read."""

    placements: Mapping[str, Placement] = field(default_factory=dict)
    hosts: frozenset[str] | None = None  # hosts holding a lease; None: not read yet
    statuses: Mapping[str, StatusMark] | None = None  # by domain; None: not read yet

    @property
    def read(self) -> bool:
        return self.hosts is not None and self.statuses is not None


def released(name: str, placement: Placement, fleet: Fleet, me: str, *, failover: bool,
             granted: Collection[tuple[str, int]] = ()) -> bool:
    """Whether a domain placed on `me` may run here (the module docstring's rule)."""
    previous = placement.previous
    if previous is None or previous == me or (name, placement.epoch) in granted:
        return True
    if failover and fleet.hosts is not None and previous not in fleet.hosts:
        return True  # a failover: the previous host's lease is gone, and it fenced itself
    mark = fleet.statuses.get(name) if fleet.statuses is not None else None
    if mark is None:
        return False
    if mark.host == previous and mark.epoch >= placement.epoch and mark.state == "shutoff":
        return True
    return mark.host == me and mark.epoch == placement.epoch


def role(name: str, me: str, fleet: Fleet, known: Collection[str], *, failover: bool = False,
         fenced: Collection[str] = (), granted: Collection[tuple[str, int]] = ()) -> Role:
    """What this host does with `name` (`failover`: its manifest's placement.failover)."""
    placement = fleet.placements.get(name)
    if placement is not None and placement.host == me:
        if not released(name, placement, fleet, me, failover=failover, granted=granted):
            return Role.WAIT if name in known else Role.ABSENT
        return Role.FENCED if name in fenced else Role.RUN
    return Role.RELEASE if name in known else Role.ABSENT


def host_view(snapshot: Snapshot, roles: Mapping[str, Role]) -> Snapshot:
    """`snapshot` with each domain as its role says (a name without a role is absent)."""
    def kept(name: str) -> bool:
        return roles.get(name, Role.ABSENT) is not Role.ABSENT

    domains = {name: _shutoff(domain) if roles[name] in SHUTOFF_ROLES else domain
               for name, domain in snapshot.domains.items() if kept(name)}
    return dataclasses.replace(
        snapshot, domains=domains,
        names_by_file={file: frozenset(filter(kept, names))
                       for file, names in snapshot.names_by_file.items()},
        conflicts={name: found for name, found in snapshot.conflicts.items() if kept(name)})


def _shutoff(domain: Domain) -> Domain:
    if domain.spec.state is DesiredState.SHUTOFF:
        return domain
    return dataclasses.replace(domain, spec=dataclasses.replace(domain.spec,
                                                                state=DesiredState.SHUTOFF))


class HostView:
    """The fleet as this host sees it, handed to the engine (`on_snapshot`) at every change."""

    def __init__(self, store: EtcdStore, keys: Keys, me: str,
                 on_snapshot: Callable[[Snapshot], None], known: Callable[[], Collection[str]],
                 *, resync: float = 30.0, retry: float = 0.5, retry_max: float = 5.0) -> None:
        self.me = me
        self._keys = keys
        self._on_snapshot = on_snapshot
        self._known = known
        timing = {"resync": resync, "retry": retry, "retry_max": retry_max}
        self.source = EtcdSource(store, keys, self._manifests, **timing)
        self.placements = PrefixMirror(store, keys.placements, self._placements, **timing)
        self.hosts = PrefixMirror(store, keys.hosts, self._hosts, **timing)
        self.statuses = PrefixMirror(store, keys.statuses, self._statuses, **timing)
        self.fleet = Fleet()
        self.fenced: set[str] = set()
        self.roles: dict[str, Role] = {}
        self._placements_read = False
        self._granted: set[tuple[str, int]] = set()
        self._snapshot: Snapshot | None = None  # the published manifests, as last read
        self._last = Snapshot(readable=False)  # the view last handed to the engine
        self._delivered: frozenset[str] = frozenset()  # names in the last view handed over
        self.listeners: list[Callable[[], None]] = []  # told after every new view

    async def start(self) -> None:
        """Read what can be read now (a mirror etcd does not answer reads in its task), the
        manifests last, then follow etcd."""
        for mirror in (self.placements, self.hosts, self.statuses):
            try:
                await mirror.read_all()
            except Exception as err:  # EtcdError: its task reads it when etcd answers
                log.warning("cannot read the fleet from etcd yet", prefix=mirror.prefix,
                            error=str(err))
        await self.source.start()
        for mirror in (self.placements, self.hosts, self.statuses):
            mirror.follow()

    async def stop(self) -> None:
        await self.source.stop()
        for mirror in (self.placements, self.hosts, self.statuses):
            await mirror.stop()

    async def rescan(self) -> Snapshot:
        """The API's rescan: the manifests read again; the view handed over then."""
        await self.source.rescan()
        return self._last

    @property
    def published(self) -> Snapshot | None:
        """The published manifests as last read (None: not read yet)."""
        return self._snapshot

    def placement(self, name: str) -> Placement | None:
        return self.fleet.placements.get(name)

    def fence(self, names: Collection[str]) -> None:
        self.fenced |= set(names)
        self.deliver()

    def unfence(self) -> None:
        self.fenced.clear()
        self.deliver()

    # -- the mirrors' changes -------------------------------------------------------------------

    def _manifests(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self.deliver(always=True)  # as the directory source does at every rescan

    async def _placements(self, kvs: Mapping[str, KeyValue]) -> None:
        self._placements_read = True
        self.fleet = dataclasses.replace(self.fleet, placements=decoded(kvs, Placement.decode))
        self.deliver()

    async def _hosts(self, kvs: Mapping[str, KeyValue]) -> None:
        self.fleet = dataclasses.replace(self.fleet,
                                         hosts=frozenset(map(Keys.last, kvs)))
        self.deliver()

    async def _statuses(self, kvs: Mapping[str, KeyValue]) -> None:
        self.fleet = dataclasses.replace(self.fleet, statuses=decoded(kvs, StatusMark.decode))
        self.deliver()

    def _view(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None or not snapshot.readable or not self._placements_read \
                or not self.fleet.read:
            return Snapshot(readable=False)
        known = set(self._known()) | self._delivered
        roles = {name: role(name, self.me, self.fleet, known, fenced=self.fenced,
                            granted=self._granted, failover=domain is not None
                            and domain.spec.placement.failover)
                 for name in snapshot.domains.keys() | known
                 for domain in (snapshot.domains.get(name),)}
        for name, given in roles.items():
            placement = self.fleet.placements.get(name)
            if given in (Role.RUN, Role.FENCED) and placement is not None:
                self._granted.add((name, placement.epoch))
            if given is not self.roles.get(name, Role.ABSENT):
                log.info("fleet role", domain=name, role=given.value,
                         placement=dataclasses.asdict(placement) if placement else None)
        self.roles = roles
        self._granted = {(name, epoch) for name, epoch in self._granted if name in roles}
        view = host_view(snapshot, roles)
        self._delivered = frozenset(view.domains)
        return view

    def deliver(self, *, always: bool = False) -> None:
        """Hand the view as it is now to the engine when it changed (`always`: anyway); tell
        the listeners. A status document written anywhere in the fleet changes the view of
        no domain most of the time: the engine is spared those."""
        if self._snapshot is None:
            return
        view = self._view()
        if always or view != self._last:
            self._last = view
            self._on_snapshot(view)
        for listener in self.listeners:
            listener()


def decoded(kvs: Mapping[str, KeyValue],
             decode: Callable[[str, bytes], _T]) -> dict[str, _T]:
    """Each value decoded, by the name its key ends with; one that does not decode is left out,
    with a warning (not ours to repair)."""
    found: dict[str, _T] = {}
    for key, kv in kvs.items():
        try:
            found[Keys.last(key)] = decode(key, kv.value)
        except ValueError as err:
            log.warning("fleet record ignored", key=key, error=str(err))
    return found
