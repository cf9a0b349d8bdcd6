"""Registration: this host in etcd, under a lease it keeps alive (the node lease of Kubernetes).

`domctl run --etcd ... --host NAME` registers `hosts/NAME` (keys.py: capacity, drivers,
labels) under a lease of `ttl` seconds (default 10) and renews it every ttl/3 (0.5 s after a
failed renewal, so one failure alone never reaches the fencing deadline). The key lives
exactly as long as the lease: a host that dies, or is cut off from etcd, drops out of the
fleet within `ttl` seconds without anyone deleting anything, and that expiry is what the
scheduler's failover will act on.

What the host must know about its own lease, for the self-fencing to come (issue 18 point 4):
`renewed_at` is when the last renewal that etcd confirmed was *sent* (monotonic clock), so
`renewed_at + ttl` is never later than the moment etcd may expire the lease; every renewal that
fails (etcd unreachable, slower than ttl/3, no leader) is reported to `on_renewal_failed` with
the time since that last confirmed renewal; a renewal that finds the lease gone reports
`on_lost` and registers again under a new lease.

A name held by another lease (another host of that name, or this host's previous run whose
lease has not expired yet) is not taken over: registration waits, retrying every ttl/3, and
says so, because two live hosts of one name would each reconcile the other's domains.

A controller restart must not look like a lost host (the scheduler would fail its domains
over while they still run here, adopted by the new run): with `lease_file`, the lease's id is
kept in the state dir, and the next run first renews that lease, when it still lives and still
holds `hosts/NAME`, instead of waiting for it to expire.

`stop()` leaves the lease to expire (a controller that stops leaves its domains running, and
must not look like a host whose domains may be moved at once); `stop(revoke=True)` deregisters
now (a drained host leaving the fleet).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import psutil
import structlog

from controller.fleet import background
from controller.fleet.keys import HostRecord, Keys
from controller.fleet.store import Compare, EtcdError, EtcdStore, Put
from controller.state.fsutil import atomic_write_text

log = structlog.get_logger(__name__)

DEFAULT_TTL = 10
RETRY = 0.5  # seconds before the next try after a failed renewal (at most ttl/3)


def local_host(name: str, drivers: Iterable[str],
               labels: Mapping[str, str] | None = None) -> HostRecord:
    """This machine's record: its CPUs and memory, the drivers available, the labels given."""
    return HostRecord(name=name, cpus=os.cpu_count() or 1,
                      memory_mib=psutil.virtual_memory().total // (1024 * 1024),
                      drivers=tuple(sorted(drivers)),
                      labels=MappingProxyType(dict(labels or {})))


@dataclass(frozen=True)
class RenewalFailure:
    error: str
    since_renewal: float  # seconds since the last renewal etcd confirmed was sent
    ttl: int


class Registration:
    def __init__(self, store: EtcdStore, keys: Keys, record: HostRecord, *,
                 ttl: int = DEFAULT_TTL,
                 on_renewal_failed: Callable[[RenewalFailure], None] = lambda _failure: None,
                 on_lost: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic,
                 lease_file: Path | None = None) -> None:
        self._store = store
        self._keys = keys
        self.record = record
        self.ttl = ttl
        self._on_renewal_failed = on_renewal_failed
        self._on_lost = on_lost
        self._clock = clock
        self._lease_file = lease_file
        self.lease: int | None = None
        self.renewed_at: float | None = None
        self.registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        return self.ttl / 3

    async def start(self) -> None:
        """Try to register now, then keep the lease alive (or keep trying) in a task."""
        await self._try_register()
        self._task = asyncio.create_task(self._run(), name=f"register-{self.record.name}")

    async def stop(self, *, revoke: bool = False) -> None:
        await background.cancel(self._task)
        self._task = None
        if revoke and self.lease is not None:
            try:
                await self._store.revoke(self.lease)
                log.info("host deregistered", host=self.record.name)
            except EtcdError as err:
                log.warning("cannot deregister the host: its lease will expire instead",
                            host=self.record.name, ttl=self.ttl, error=str(err))
        self.lease, self.renewed_at = None, None
        self.registered.clear()

    async def _run(self) -> None:
        confirmed = True
        while True:
            # after a failed renewal, the next try comes soon: waiting a whole interval after
            # one that hung for its whole bound would pass the fencing deadline (renewed_at +
            # ttl - margin) on a single failure, such as a request caught in etcd's election
            await asyncio.sleep(self.interval if confirmed else min(RETRY, self.interval))
            try:
                if self.lease is None:
                    await self._try_register()
                    confirmed = True
                else:
                    confirmed = await self._renew(self.lease)
            except Exception:  # never let the keep-alive die: log, and go on renewing
                log.exception("host registration step failed", host=self.record.name)

    async def _try_register(self) -> None:
        """Grant a lease and put the record under it, unless another lease holds the name."""
        key = self._keys.host(self.record.name)
        if await self._adopt(key):
            return
        sent = self._clock()
        try:
            async with asyncio.timeout(self.interval):
                lease = await self._store.grant(self.ttl)
                answer = await self._store.txn([Compare(key, "CREATE", 0)],
                                               [Put(key, self.record.encode(), lease.id)])
                if not answer.succeeded:
                    await self._store.revoke(lease.id)
        except (EtcdError, TimeoutError) as err:
            log.warning("cannot register the host in etcd; retrying", host=self.record.name,
                        error=str(err) or "timed out")
            return
        if not answer.succeeded:
            log.warning("host name registered under another lease (another host of this name, "
                        "or this host's previous run until its lease expires); waiting",
                        host=self.record.name, ttl=self.ttl)
            return
        self.lease, self.renewed_at = lease.id, sent
        self.registered.set()
        log.info("host registered", host=self.record.name, lease=f"{lease.id:x}", ttl=lease.ttl)
        if self._lease_file is not None:
            try:
                atomic_write_text(self._lease_file, f"{lease.id}\n")
            except OSError as err:
                log.warning("cannot keep the lease id for the next run", error=str(err))

    async def _adopt(self, key: str) -> bool:
        """The previous run's lease, renewed, when it still holds `key` (see the docstring)."""
        if self._lease_file is None:
            return False
        try:
            lease = int(self._lease_file.read_text())
        except (OSError, ValueError):
            return False
        sent = self._clock()
        try:
            async with asyncio.timeout(self.interval):
                holder = await self._store.get(key)
                if holder is None or holder.lease != lease \
                        or holder.value != self.record.encode():
                    return False
                if await self._store.keepalive(lease) <= 0:
                    return False
        except (EtcdError, TimeoutError):
            return False
        self.lease, self.renewed_at = lease, sent
        self.registered.set()
        log.info("host registration taken over from the previous run", host=self.record.name,
                 lease=f"{lease:x}", ttl=self.ttl)
        return True

    async def _renew(self, lease: int) -> bool:
        """Whether etcd answered (the lease renewed, or found gone and registered again)."""
        sent = self._clock()
        try:
            async with asyncio.timeout(self.interval):
                remaining = await self._store.keepalive(lease)
        except (EtcdError, TimeoutError) as err:
            failure = RenewalFailure(error=str(err) or "timed out",
                                     since_renewal=self._clock() - (self.renewed_at or sent),
                                     ttl=self.ttl)
            log.warning("host lease renewal failed", host=self.record.name,
                        error=failure.error, since_renewal=round(failure.since_renewal, 1),
                        ttl=self.ttl)
            self._on_renewal_failed(failure)
            return False
        if remaining > 0:
            self.renewed_at = sent
            return True
        log.error("host lease expired: the host was out of the fleet; registering again",
                  host=self.record.name, lease=f"{lease:x}")
        self.lease, self.renewed_at = None, None
        self.registered.clear()
        self._on_lost()
        await self._try_register()
        return True
