"""Scheduler: one host of the fleet at a time places the domains (the decision is scheduling.py's).

Every `domctl run --etcd` host runs a Scheduler beside its Registration; one of them leads.

Election: a candidate grants a lease of `ttl` seconds and puts `scheduler` (keys.Leader) under
it only if the key is absent (one transaction). The winner renews every ttl/3; the others watch
the key and campaign again as soon as it is deleted (the leader resigned, or its lease ran out),
so a new leader acts within the TTL of the old one's death. A leader that finds its lease gone,
or that could not renew it for so long that it may expire before the next try, stops acting at
once. Every write of a leader also compares the `scheduler` key's create revision with the one
its election wrote: a deposed leader still running a pass (a long pause, a partition) has each
write refused by etcd itself, whatever its own clock says.

The leader follows the published manifests with EtcdSource (the hosts' own reading: the same
loader, cache, watch and full re-reads) and watches `hosts/`, `cordons/` and `placements/`; any
change pokes a pass, and changes within `settle` seconds share one. A pass reads the hosts,
cordons, placements and scheduling records (FleetState), runs scheduling.schedule, and writes:
- PLACE or MOVE: the placement, in ONE transaction per domain that compares
  `placements/<domain>`'s mod revision with the one read (0: absent), so two writers can never
  both place it; a lost compare stops the pass and a new one reads again and decides again.
  The domain's scheduling record goes in the same transaction.
- UNSCHEDULABLE, UNREACHABLE: `scheduling/<domain>` (keys.Scheduling), only when its kind or
  message changed; KEEP deletes a record left from before.
- A domain gone from the manifests (not merely in a file the loader now refuses): its
  scheduling record is deleted at once; its placement once it has been gone `removal_grace`
  seconds (the hosts' own removal grace, so a re-publish in between keeps it where it runs)
  AND the status its host published says the domain no longer runs there (no status, one of
  another host, or shutoff). A placement deleted while the host still ran the domain would
  let a re-published domain of that name start elsewhere beside it; so a removed domain on a
  lost host keeps its placement until the host comes back and removes it.
A failover MOVE needs `hosts/<name>` gone, i.e. the lost host's lease expired: the host fenced
itself before that (its deadline is shorter than the TTL). A pass whose etcd calls failed is
retried after `retry` seconds; passes run again every `resync` seconds whatever happens.

Public surface:
    Scheduler(store, keys, host_name, ttl=, removal_grace=).start, stop, leading (an Event)
    FleetState.read(store, keys): hosts, cordons, placements, scheduling records, revisions
    released(status, placement) -> bool
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from controller.fleet import background
from controller.fleet.keys import Cordon, HostRecord, Keys, Leader, Placement, Scheduling
from controller.fleet.registration import DEFAULT_TTL
from controller.fleet.scheduling import Decision, HostView, Kind, demand_of, schedule
from controller.fleet.source import EtcdSource
from controller.fleet.store import (
    Compacted,
    Compare,
    Delete,
    EtcdError,
    EtcdStore,
    KeyValue,
    Lease,
    Listing,
    Put,
)
from controller.manifests.source import Snapshot
from controller.protocol import rfc3339
from controller.settings import PruneSettings

log = structlog.get_logger(__name__)

T = TypeVar("T")
_RELEASED_STATES = frozenset({"shutoff"})


@dataclass(frozen=True)
class FleetState:
    """What a pass decides from: the records under hosts/, cordons/, placements/ and
    scheduling/, by name, with each key's mod revision (a record that does not parse is left
    out with a warning, its revision kept, so a write over it still compares)."""

    hosts: Mapping[str, HostRecord]
    cordons: Mapping[str, Cordon]
    placements: Mapping[str, Placement]
    schedulings: Mapping[str, Scheduling]
    revisions: Mapping[str, int]  # by key

    @classmethod
    async def read(cls, store: EtcdStore, keys: Keys) -> FleetState:
        hosts, cordons, placements, schedulings = await asyncio.gather(
            store.get_prefix(keys.hosts), store.get_prefix(keys.cordons),
            store.get_prefix(keys.placements), store.get_prefix(keys.schedulings))
        return cls(hosts=_records(hosts, HostRecord.decode),
                   cordons=_records(cordons, Cordon.decode),
                   placements=_records(placements, Placement.decode),
                   schedulings=_records(schedulings, Scheduling.decode),
                   revisions={kv.key: kv.mod_revision for listing in (
                       hosts, cordons, placements, schedulings) for kv in listing.kvs})

    def views(self) -> list[HostView]:
        """The hosts that hold a lease, with the operator's cordons."""
        views = []
        for name, record in sorted(self.hosts.items()):
            cordon = self.cordons.get(name)
            views.append(HostView(record, cordoned=cordon is not None,
                                  draining=cordon is not None and cordon.drain))
        return views

    def revision(self, key: str) -> int:
        """The key's mod revision as read (0: absent)."""
        return self.revisions.get(key, 0)


def _records(listing: Listing, decode: Callable[[str, bytes], T]) -> dict[str, T]:
    records = {}
    for kv in listing.kvs:
        try:
            records[Keys.last(kv.key)] = decode(kv.key, kv.value)
        except ValueError as err:
            log.warning("fleet record ignored", key=kv.key, error=str(err))
    return records


def released(status: KeyValue | None, placement: Placement | None) -> bool:
    """Whether the domain's status says it no longer runs on the host it is placed on: no
    status, a status of another host, or shut off there (a status that does not parse is not
    proof)."""
    if status is None or placement is None:
        return True
    try:
        document: Any = json.loads(status.value)
    except ValueError:
        return False
    if not isinstance(document, dict):
        return False
    host = document.get("host")
    return (host is not None and host != placement.host) or \
        document.get("state") in _RELEASED_STATES


class _Deposed(Exception):
    """etcd refused a write because this host no longer holds the `scheduler` key."""


class Scheduler:
    def __init__(self, store: EtcdStore, keys: Keys, host_name: str, *,
                 ttl: int = DEFAULT_TTL, removal_grace: float = PruneSettings.grace,
                 settle: float = 0.2, resync: float = 30.0, retry: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._keys = keys
        self.host_name = host_name
        self.ttl = ttl
        self._removal_grace = removal_grace
        self._settle = settle
        self._resync = resync
        self._retry = retry
        self._clock = clock
        self._log = log.bind(scheduler=host_name)
        self.leading = asyncio.Event()  # set while this host leads
        self._lease: int | None = None  # the lease of the campaign won
        self._term = 0  # the create revision of our `scheduler` key while leading
        self._renewed = 0.0  # when the last renewal etcd confirmed was sent
        self._poke = asyncio.Event()
        self._snapshot: Snapshot | None = None
        self._absent: dict[str, float] = {}  # removed domains still placed: since when
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        return self.ttl / 3

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"scheduler-{self.host_name}")

    async def stop(self, *, resign: bool = True) -> None:
        """Stop campaigning and acting; `resign` revokes the leader's lease so another host
        takes over now (without: it takes over once the lease expires)."""
        await background.cancel(self._task)
        self._task = None
        if resign:
            await self._resign()
        self._lease = None

    # -- election -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                lease = await self._campaign()
                if lease is None:
                    await self._await_vacancy()
                else:
                    await self._lead(lease)
            except asyncio.CancelledError:
                raise
            except (EtcdError, TimeoutError) as err:
                self._log.warning("scheduler election step failed; retrying",
                                  error=str(err) or "timed out", retry_in=self._retry)
                await asyncio.sleep(self._retry)
            except Exception:  # never let the election die
                self._log.exception("scheduler election step failed; retrying")
                await asyncio.sleep(self._retry)

    async def _campaign(self) -> Lease | None:
        """The lease under which this host now holds `scheduler`; None when another does."""
        key = self._keys.scheduler
        sent = self._clock()
        async with asyncio.timeout(self.interval):
            lease = await self._store.grant(self.ttl)
            record = Leader(self.host_name, rfc3339(time.time()))
            answer = await self._store.txn([Compare(key, "CREATE", 0)],
                                           [Put(key, record.encode(), lease.id)])
            if not answer.succeeded:
                await self._store.revoke(lease.id)
                return None
        self._lease, self._term, self._renewed = lease.id, answer.revision, sent
        return lease

    async def _await_vacancy(self) -> None:
        """Until the leader's key is deleted (or `ttl` seconds, to campaign again anyway)."""
        current = await self._store.get(self._keys.scheduler)
        if current is None:
            return
        watch = self._store.watch_prefix(self._keys.scheduler, current.mod_revision + 1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.ttl), contextlib.aclosing(watch) as batches:
                async for batch in batches:
                    if any(event.kind == "DELETE" for event in batch.events):
                        return

    async def _lead(self, lease: Lease) -> None:
        self._log.info("scheduler leader elected", lease=f"{lease.id:x}", ttl=lease.ttl,
                       term=self._term)
        self.leading.set()
        tasks = {asyncio.create_task(self._keep_alive(lease.id), name="scheduler-lease"),
                 asyncio.create_task(self._work(), name="scheduler-work")}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.leading.clear()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # leadership lost (not cancelled): hand the key over at once if it is still ours
        self._log.warning("scheduler stepped down", term=self._term)
        await self._resign()

    async def _resign(self) -> None:
        lease, self._lease, self._term = self._lease, None, 0
        if lease is None:
            return
        try:
            await self._store.revoke(lease)
        except EtcdError as err:
            self._log.warning("cannot revoke the scheduler lease: it will expire instead",
                              error=str(err), ttl=self.ttl)

    async def _keep_alive(self, lease: int) -> None:
        """Renew every ttl/3; return (step down) once the lease is gone, or when renewals
        failed for so long that it may expire before the next try."""
        while True:
            await asyncio.sleep(self.interval)
            sent = self._clock()
            try:
                async with asyncio.timeout(self.interval):
                    remaining = await self._store.keepalive(lease)
            except (EtcdError, TimeoutError) as err:
                since = self._clock() - self._renewed
                if since + self.interval >= self.ttl:
                    self._log.error("scheduler lease not renewed in time: stepping down",
                                    error=str(err) or "timed out", since_renewal=round(since, 1))
                    return
                self._log.warning("scheduler lease renewal failed", error=str(err) or
                                  "timed out", since_renewal=round(since, 1))
                continue
            if remaining <= 0:
                self._log.error("scheduler lease expired: stepping down")
                return
            self._renewed = sent

    # -- the leader's work ----------------------------------------------------------------------

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._poke.set()

    async def _work(self) -> None:
        """Passes, as changes come, until etcd says this host no longer leads."""
        self._snapshot, self._absent = None, {}
        source = EtcdSource(self._store, self._keys, self._on_snapshot, resync=self._resync)
        triggers = [asyncio.create_task(self._trigger(prefix), name=f"scheduler-watch-{prefix}")
                    for prefix in (self._keys.hosts, self._keys.cordons,
                                   self._keys.placements)]
        try:
            await source.start()
            again: float | None = None
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._resync if again is None else again):
                        await self._poke.wait()
                await asyncio.sleep(self._settle)  # a burst of changes: one pass
                self._poke.clear()
                again = await self._pass()
        except _Deposed:
            self._log.warning("etcd refused a write: this host no longer leads the scheduler")
        finally:
            for task in triggers:
                task.cancel()
            for task in triggers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await source.stop()

    async def _trigger(self, prefix: str) -> None:
        """Poke a pass at every change under `prefix` (the pass reads what changed)."""
        revision = 0
        while True:
            try:
                if not revision:
                    revision = (await self._store.get_prefix(prefix)).revision
                    self._poke.set()
                watch = self._store.watch_prefix(prefix, revision + 1)
                async with contextlib.aclosing(watch) as batches:
                    async for batch in batches:
                        revision = batch.revision
                        self._poke.set()
            except asyncio.CancelledError:
                raise
            except Compacted:
                revision = 0
            except Exception as err:  # EtcdError above all: resume from `revision`
                self._log.warning("scheduler watch failed; resuming", prefix=prefix,
                                  error=str(err), retry_in=self._retry)
                await asyncio.sleep(self._retry)

    async def _pass(self) -> float | None:
        """Decide and write; seconds until a pass is due again (None: at the next change)."""
        snapshot = self._snapshot
        if snapshot is None or not snapshot.readable:
            return None  # nothing known of the manifests: place nothing, delete nothing
        try:
            state = await FleetState.read(self._store, self._keys)
            decisions = schedule((demand_of(d) for d in snapshot.domains.values()),
                                 state.views(), state.placements)
            for decision in decisions:
                if not await self._apply(decision, state):
                    return 0.0  # a compare lost: read again and decide again
            return await self._remove(state, _declared(snapshot))
        except _Deposed:
            raise
        except EtcdError as err:  # a write may or may not have happened: the next pass reads
            self._log.warning("scheduling pass failed; retrying", error=str(err),
                              retry_in=self._retry)
            return self._retry
        except Exception:  # a bug must not end the leadership: log it, and try again later
            self._log.exception("scheduling pass failed; retrying", retry_in=self._resync)
            return self._resync

    async def _apply(self, decision: Decision, state: FleetState) -> bool:
        """Write what `decision` changes; False when a compare was lost."""
        name = decision.name
        logger = self._log.bind(domain=name)
        placement_key, scheduling_key = (self._keys.placement(name),
                                         self._keys.scheduling(name))
        recorded = state.revision(scheduling_key) > 0
        placement = decision.placement()
        if placement is not None:
            operations: list[Put | Delete] = [Put(placement_key, placement.encode())]
            if recorded:
                operations.append(Delete(scheduling_key))
            if not await self._write(placement_key, state, operations):
                logger.info("placement changed meanwhile: deciding again")
                return False
            logger.info("domain placed" if decision.kind is Kind.PLACE else "domain moved",
                        host=placement.host, epoch=placement.epoch,
                        previous=placement.previous, why=decision.message or None)
            return True
        if decision.kind is Kind.KEEP:
            if not recorded:
                logger.debug("domain stays", host=decision.host, epoch=decision.epoch)
                return True
            logger.info("domain placed fine again: scheduling record deleted",
                        host=decision.host)
            return await self._write(scheduling_key, state, [Delete(scheduling_key)])
        record = state.schedulings.get(name)
        if record is not None and (record.kind, record.message) == (decision.kind.value,
                                                                    decision.message):
            return True
        logger.warning("domain unschedulable" if decision.kind is Kind.UNSCHEDULABLE
                       else "domain's host unreachable", host=decision.host,
                       message=decision.message)
        scheduling = Scheduling(decision.kind.value, decision.message, rfc3339(time.time()))
        return await self._write(scheduling_key, state, [Put(scheduling_key,
                                                             scheduling.encode())])

    async def _remove(self, state: FleetState, declared: frozenset[str]) -> float | None:
        """Delete what a domain gone from the manifests left (see the module docstring);
        seconds until a removal still waiting is checked again."""
        now = self._clock()
        for name in self._absent.keys() & declared:
            del self._absent[name]
        for name in sorted(state.schedulings.keys() - declared):
            key = self._keys.scheduling(name)
            if await self._write(key, state, [Delete(key)]):
                self._log.info("scheduling record of a removed domain deleted", domain=name)
        waiting = False
        for key in sorted(k for k in state.revisions if k.startswith(self._keys.placements)):
            name = Keys.last(key)
            if name in declared:
                continue
            since = self._absent.setdefault(name, now)
            placement = state.placements.get(name)
            if now - since < self._removal_grace or not released(
                    await self._store.get(self._keys.status(name)), placement):
                waiting = True
                continue
            if await self._write(key, state, [Delete(key)]):
                self._absent.pop(name, None)
                self._log.info("placement of a removed domain deleted", domain=name,
                               host=placement.host if placement else None)
        return min(1.0, self._removal_grace) if waiting else None

    async def _write(self, key: str, state: FleetState, operations: list[Put | Delete]) -> bool:
        """One transaction: `key` as read, and this host still the leader of its term.
        False when `key` changed; _Deposed when the leadership is gone."""
        if not self._term:  # no term: `create_revision == 0` would hold for anyone
            raise _Deposed
        answer = await self._store.txn(
            [Compare.mod_revision(key, state.revision(key)),
             Compare(self._keys.scheduler, "CREATE", self._term)], operations)
        if answer.succeeded:
            return True
        leader = await self._store.get(self._keys.scheduler)
        if leader is None or leader.create_revision != self._term:
            raise _Deposed
        return False


def _declared(snapshot: Snapshot) -> frozenset[str]:
    """Every domain the manifests still declare: loaded, in conflict, or in a file this
    host's loader refuses (kept where it runs, as the hosts keep its last valid spec)."""
    names = set(snapshot.domains) | set(snapshot.conflicts)
    for declared in snapshot.names_by_file.values():
        names |= declared
    return frozenset(names)
