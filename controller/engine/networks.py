"""The engine of managed networks: one pass per network name, like the domains', on its own queue.

The daemon builds one NetworkController beside the domains' Controller, hands it every
manifest snapshot (`on_snapshot`), calls `start()` (the records of networks applied before,
each queued once) before the domains' first passes, and runs `worker()`. The domains' side
is reached through `DomainSide`: which running domains use a network (a removal waits for
them), the static DHCP reservations their NICs ask for, and a requeue of the domains on a
network when it comes up (they were waiting for it) or its leases change (their addresses).

One pass (`reconcile`): with a manifest, plan the host parts (reconcilers/net/network.py),
make the host match — a network found intact is left alone, so a controller restart
disturbs no lease, tap or veth — record it and show its status; a network that was up and is
found broken (a bridge deleted by hand, dnsmasq killed) emits `stopped/broken` (external) and
`started/repaired` (controller). Without a manifest but with a record: take it down, unless a
running domain still has a NIC on it (RemovalBlocked, re-checked every `removal_recheck`
seconds and whenever a domain stops). A network whose file turned invalid keeps its last valid
spec (the manifest source keeps it in the snapshot) and shows ManifestValid=False.

Drift raises no event for a bridge or a table; dnsmasq's exit does (a pidfd watch), and
every network is re-checked every `resync` seconds. Failures (a command that failed) are
shown as Ready=False with the tool's message and retried with the error backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from ipaddress import IPv4Interface
from typing import Protocol

import structlog

from controller.engine.backoff import ErrorBackoff
from controller.engine.clock import Clock, LoopClock
from controller.engine.workqueue import ShutDown, WorkQueue
from controller.manifests.errors import Problem
from controller.manifests.source import Snapshot
from controller.protocol import rfc3339
from controller.settings import BackoffSettings, NetworkSettings
from controller.state.events import EventBus
from controller.state.networks import LeaseStatus, NetworkRecord, NetworkStatus, NetworkStore
from controller.state.status import Condition, ConditionStatus, ConditionType, set_condition
from reconcilers.errors import DomctlError
from reconcilers.identity import ExitWatch
from reconcilers.model import Cause, EventType
from reconcilers.net.dnsmasq import Reservation
from reconcilers.net.model import Network
from reconcilers.net.names import UnsafeValue, check_reserved
from reconcilers.net.network import NetworkHost, plan

log = structlog.get_logger(__name__)

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE


class DomainSide(Protocol):
    """What the network engine asks of the domains' engine."""

    def network_users(self, network: str) -> list[str]:
        """Running domains with a NIC on `network`."""
        ...

    def reservations(self, network: str) -> list[tuple[str, str, str]]:
        """(domain, mac, ip) of the NICs on `network` that ask for a static address."""
        ...

    def network_changed(self, network: str) -> None:
        """`network` came up or its leases changed: requeue the domains on it."""
        ...


class NetworkController:
    def __init__(self, host: NetworkHost, store: NetworkStore, events: EventBus,
                 settings: NetworkSettings = NetworkSettings(), clock: Clock | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.host = host
        self.store = store
        self.events = events
        self.settings = settings
        self.clock: Clock = clock or LoopClock()
        self.wall = wall
        self.queue = WorkQueue(self.clock)
        self.domains: DomainSide | None = None
        self._errors = ErrorBackoff(BackoffSettings())
        self._desired: dict[str, Network] = {}
        self._problems: dict[str, list[Problem]] = {}  # by file
        self._conflicts: dict[str, list[Problem]] = {}  # by network name
        self._active: dict[str, str] = {}  # network → bridge, for the networks that are up
        self._watches: dict[str, tuple[int, ExitWatch]] = {}  # network → dnsmasq pid, watch

    # --- inputs ------------------------------------------------------------------------------

    def bridges(self) -> Mapping[str, str]:
        """The bridges of the networks that are up (a NIC resolves against these)."""
        return dict(self._active)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        if not snapshot.readable:
            return  # a missing directory removes nothing
        before = self._desired
        self._desired = dict(snapshot.networks)
        self._problems = {path: list(problems) for path, problems in snapshot.problems.items()}
        self._conflicts = {name: list(problems)
                           for name, problems in snapshot.network_conflicts.items()}
        for name, record in self.store.records().items():
            # in a conflict, or in a file invalid since before this controller started: kept
            # as it is (the source knows no last valid spec then; the record does)
            if name not in self._desired and (name in self._conflicts
                                              or record.file in self._problems):
                self._desired[name] = before.get(name) or record.as_network()
        for name in sorted(before.keys() | self._desired.keys()):
            old, new = before.get(name), self._desired.get(name)
            if old is None or new is None or old.generation != new.generation \
                    or self._problems.get(new.source.file) or name in self._conflicts:
                self.queue.add(name)

    def start(self) -> None:
        """Queue every network applied before (a restart re-checks and re-attaches each)."""
        for name in sorted(self.store.records()):
            self.queue.add(name)

    def domain_stopped(self, networks: frozenset[str]) -> None:
        """A domain on these networks stopped: a removal waiting for it may go on."""
        for name in networks:
            if name not in self._desired and name in self.store.records():
                self.queue.add(name)

    def reservations_changed(self, networks: frozenset[str]) -> None:
        for name in networks:
            if name in self._desired:
                self.queue.add(name)

    def leases_changed(self, name: str) -> None:
        """dnsmasq rewrote the network's lease file (engine/leasewatch.py)."""
        if name in self._active:
            self.queue.add(name)
            if self.domains is not None:
                self.domains.network_changed(name)

    # --- the worker --------------------------------------------------------------------------

    async def worker(self) -> None:
        while True:
            try:
                name = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.reconcile(name)
            except Exception:
                log.exception("network pass crashed; retrying later", network=name)
                self.queue.add_after(name, self._errors.when(name))
            finally:
                self.queue.done(name)

    def stop(self) -> None:
        self.queue.shutdown()
        for _, watch in self._watches.values():
            watch.cancel()
        self._watches.clear()

    # --- one pass ----------------------------------------------------------------------------

    async def reconcile(self, name: str) -> None:
        desired = self._desired.get(name)
        record = self.store.record(name)
        if desired is None:
            if record is not None:
                await self._remove(record)
            return
        if record is not None and record.bridge != desired.spec.bridge:
            if not await self._remove(record, renamed=True):
                return
            record = None
        await self._ensure(desired, record)

    async def _ensure(self, desired: Network, record: NetworkRecord | None) -> None:
        name = desired.name
        if record is None or record.generation != desired.generation:
            self.events.emit_network(name, EventType.DEFINED,
                                     "added" if record is None else "updated", Cause.MANIFEST,
                                     {"generation": desired.generation,
                                      "file": desired.source.file})
        reservations, refused = self._reservations(desired)
        wanted = plan(desired, self.host.directory, reservations,
                      self.settings.dnsmasq_user, self.settings.dnsmasq_group)
        was_active = name in self._active
        try:
            _, repaired = await self.host.ensure(wanted)
        except DomctlError as error:
            log.warning("network not ready", network=name, error=str(error))
            self._active.pop(name, None)
            await self._show(desired, record, active=False, ready=Condition(
                ConditionType.READY, F, "Failed", str(error)))
            self.queue.add_after(name, self._errors.when(name))
            return
        self._errors.forget(name)
        self._announce(name, was_active or (record is not None and record.active), repaired)
        self._active[name] = desired.spec.bridge
        self._watch_dnsmasq(name)
        message = ("" if not refused else
                   "reservations refused: " + "; ".join(refused))
        await self._show(desired, record, active=True, ready=Condition(
            ConditionType.READY, T, "Active", message))
        if not was_active and self.domains is not None:
            self.domains.network_changed(name)
        self.queue.add_after(name, self.settings.resync)

    def _announce(self, name: str, was_up: bool, repaired: list[str]) -> None:
        """Events of a pass that found the network up: `started/created` for a new one;
        `stopped/broken` then `started/repaired` for one found broken (also by a controller
        that was away meanwhile); none for one found intact (a re-attach)."""
        if not was_up:
            self.events.emit_network(name, EventType.STARTED, "created", Cause.MANIFEST,
                                     message=f"set up: {', '.join(repaired)}")
        elif repaired:
            parts = ", ".join(repaired)
            self.events.emit_network(name, EventType.STOPPED, "broken", Cause.EXTERNAL,
                                     message=f"found missing or changed: {parts}")
            self.events.emit_network(name, EventType.STARTED, "repaired", Cause.CONTROLLER,
                                     message=f"repaired: {parts}")
        elif name not in self._active:
            log.info("network re-attached", network=name)

    def _reservations(self, desired: Network) -> tuple[list[Reservation], list[str]]:
        """The domains' static addresses on this network; the ones outside its subnet or
        clashing with another are refused (named), never passed to dnsmasq."""
        if self.domains is None or desired.spec.ipv4 is None:
            return [], []
        gateway = IPv4Interface(desired.spec.ipv4.address)
        taken: dict[str, str] = {}
        found, refused = [], []
        for domain, mac, ip in self.domains.reservations(desired.name):
            try:
                address = check_reserved(gateway, ip, f"{domain} ip")
            except UnsafeValue as error:
                refused.append(str(error))
                continue
            if ip in taken or mac in taken.values():
                refused.append(f"{domain} ip {ip}: already reserved for {taken.get(ip, mac)}")
                continue
            taken[ip] = domain
            found.append(Reservation(mac, address))
        return found, refused

    def _watch_dnsmasq(self, name: str) -> None:
        pid = self.host.dnsmasq_pid(name)
        watched = self._watches.get(name)
        if watched is not None and watched[0] == pid:
            return
        if watched is not None:
            watched[1].cancel()
            del self._watches[name]
        if pid is not None:
            self._watches[name] = (pid, ExitWatch(pid, lambda: self.queue.add(name)))

    async def _remove(self, record: NetworkRecord, renamed: bool = False) -> bool:
        """Take the network down unless running domains use it; True when it is gone."""
        name = record.name
        users = self.domains.network_users(name) if self.domains is not None else []
        if users:
            what = "renaming its bridge" if renamed else "removal"
            status = self.store.status(name)
            conditions = set_condition(
                status.conditions if status is not None else record.conditions,
                Condition(ConditionType.REMOVAL_BLOCKED, T, "InUse",
                          f"{what} waits for running domains: {', '.join(users)}"), self.wall())
            if record.active:  # still up (also for a controller that just started)
                self._active[name] = record.bridge
                self._watch_dnsmasq(name)
            await self.store.publish(self._status(name, record, None, active=record.active,
                                                  conditions=conditions, users=users))
            self.queue.add_after(name, self.settings.removal_recheck)
            return False
        watched = self._watches.pop(name, None)
        if watched is not None:
            watched[1].cancel()
        self._active.pop(name, None)
        removed = await self.host.remove(name, record.bridge)
        self.events.emit_network(name, EventType.STOPPED, "removed", Cause.MANIFEST,
                                 message=f"removed: {', '.join(removed) or 'nothing was left'}")
        if not renamed:
            self.events.emit_network(name, EventType.UNDEFINED, "removed", Cause.MANIFEST)
        self.store.remove(name)
        log.info("network removed", network=name, parts=removed)
        return True

    # --- status ------------------------------------------------------------------------------

    async def _show(self, desired: Network, record: NetworkRecord | None, active: bool,
                    ready: Condition) -> None:
        now = self.wall()
        since = record.since if record is not None and record.active == active else now
        conditions = record.conditions if record is not None else ()
        problems = [*self._problems.get(desired.source.file, []),
                    *self._conflicts.get(desired.name, [])]
        valid = (Condition(ConditionType.MANIFEST_VALID, T, "Valid") if not problems else
                 Condition(ConditionType.MANIFEST_VALID, F, "Invalid",
                           "; ".join(str(p) for p in problems[:3])))
        blocked = Condition(ConditionType.REMOVAL_BLOCKED, F, "Declared")
        for condition in (ready, valid, blocked):
            conditions = set_condition(conditions, condition, now)
        updated = NetworkRecord(name=desired.name, bridge=desired.spec.bridge,
                                spec=desired.spec, generation=desired.generation,
                                file=desired.source.file, active=active, since=since,
                                conditions=conditions)
        await asyncio.to_thread(self.store.save, updated)
        users = self.domains.network_users(desired.name) if self.domains is not None else []
        await self.store.publish(self._status(desired.name, updated, desired, active,
                                              conditions, users))

    def _status(self, name: str, record: NetworkRecord, desired: Network | None, active: bool,
                conditions: tuple[Condition, ...], users: list[str]) -> NetworkStatus:
        spec = record.spec
        owners = {mac: domain for domain, mac, _ in
                  (self.domains.reservations(name) if self.domains is not None else [])}
        leases = tuple(LeaseStatus(mac=lease.mac, address=lease.address,
                                   hostname=lease.hostname,
                                   expires=rfc3339(lease.expires) if lease.expires else None,
                                   domain=owners.get(lease.mac))
                       for lease in self.host.leases(name))
        return NetworkStatus(
            name=name, state="active" if active else "inactive", bridge=record.bridge,
            generation=desired.generation if desired is not None else None,
            observedGeneration=record.generation,
            since=rfc3339(record.since) if record.since is not None else None,
            ipv4=spec.ipv4.address if spec.ipv4 is not None else None,
            ipv6=spec.ipv6.address if spec.ipv6 is not None else None,
            nat=spec.ipv4 is not None and spec.ipv4.nat,
            dnsmasqPid=self.host.dnsmasq_pid(name) if active else None,
            users=tuple(users), leases=leases, conditions=conditions)

    def lease_addresses(self) -> dict[str, list[str]]:
        """MAC → the addresses dnsmasq leased to it, over every network that is up."""
        found: dict[str, list[str]] = {}
        for name in self._active:
            for lease in self.host.leases(name):
                found.setdefault(lease.mac, []).append(lease.address)
        return found

