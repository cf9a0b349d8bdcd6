"""PrefixMirror: the keys under one etcd prefix, kept current by a watch that never misses a change.

What the fleet's readers share (EtcdSource's manifests, the host view's placements, hosts and
status documents): one full read (the keys and the revision they are at), then a watch from the
next revision; each batch of events (whole revisions: a transaction is seen at once or not at
all) updates the keys and calls `on_change`. A watch that breaks (a member killed, etcd
unreachable) is resumed from the revision after the last one applied, so no change is missed
or applied twice (events at or below that revision are skipped, so a full read racing the
watch is harmless), retried with a growing delay; one whose start revision etcd has compacted
away (Compacted) is replaced by a full read. Every `resync` seconds the watch is closed and
everything read again, which also heals a stream that went silent without breaking.

`read_all()` raises EtcdError to its caller (who decides what an unreadable etcd means);
`follow()` starts the task that keeps the mirror current and never raises out of it.
`on_change` runs under the mirror's lock, one at a time, with the keys as they are now.

Public surface: PrefixMirror(store, prefix, on_change, resync, retry, retry_max).read_all,
    follow, stop, kvs, revision
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

import structlog

from controller.fleet import background
from controller.fleet.store import Compacted, EtcdStore, KeyValue, WatchBatch

log = structlog.get_logger(__name__)

OnChange = Callable[[Mapping[str, KeyValue]], Awaitable[None]]


class PrefixMirror:
    def __init__(self, store: EtcdStore, prefix: str, on_change: OnChange, *,
                 resync: float = 30.0, retry: float = 0.5, retry_max: float = 5.0) -> None:
        self._store = store
        self.prefix = prefix
        self._on_change = on_change
        self._resync = resync
        self._retry = retry
        self._retry_max = retry_max
        self._kvs: dict[str, KeyValue] = {}  # by key, as last read or watched
        self._lock = asyncio.Lock()  # one change of the keys and its on_change at a time
        self._task: asyncio.Task[None] | None = None
        self.revision: int | None = None  # etcd's revision the keys are at
        self.reads = 0  # full reads done (a caller waiting for a fresh one compares it)

    @property
    def kvs(self) -> Mapping[str, KeyValue]:
        return MappingProxyType(self._kvs)

    def follow(self) -> None:
        """Keep the mirror current in a task (after a first read_all, or reading first)."""
        self._task = asyncio.create_task(self._follow(), name=f"etcd-watch {self.prefix}")

    async def stop(self) -> None:
        await background.cancel(self._task)
        self._task = None

    async def read_all(self) -> None:
        """Read every key now (EtcdError when etcd cannot be read), then on_change."""
        listing = await self._store.get_prefix(self.prefix)
        async with self._lock:
            if self.revision is None or listing.revision >= self.revision:
                self._kvs = {kv.key: kv for kv in listing.kvs}
                self.revision = listing.revision
            # else the watch already applied newer revisions than this read saw
            self.reads += 1
            await self._on_change(self.kvs)

    async def redeliver(self) -> None:
        """on_change again with the keys as they are (a caller's own state changed)."""
        async with self._lock:
            await self._on_change(self.kvs)

    async def _follow(self) -> None:
        delay, read_first = self._retry, self.revision is None
        while True:
            try:
                if read_first:
                    await self.read_all()
                    read_first = False
                await self._watch()
                read_first = True  # `resync` seconds passed: read everything again
                delay = self._retry
            except asyncio.CancelledError:
                raise
            except Compacted as err:
                log.warning("etcd compacted the revisions this watch needed: reading all again",
                            prefix=self.prefix, revision=self.revision, error=str(err))
                read_first = True
            except Exception as err:  # EtcdError above all; never let the task die
                log.warning("etcd watch failed; resuming", prefix=self.prefix,
                            revision=self.revision, retry_in=delay, error=str(err))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    async def _watch(self) -> None:
        """Apply the changes after `revision` as they come, for `resync` seconds."""
        assert self.revision is not None
        watch = self._store.watch_prefix(self.prefix, self.revision + 1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._resync), contextlib.aclosing(watch) as batches:
                async for batch in batches:
                    await self._apply(batch)

    async def _apply(self, batch: WatchBatch) -> None:
        async with self._lock:
            assert self.revision is not None
            fresh = [e for e in batch.events if e.kv.mod_revision > self.revision]
            for event in fresh:
                if event.kind == "PUT":
                    self._kvs[event.kv.key] = event.kv
                else:
                    self._kvs.pop(event.kv.key, None)
            self.revision = max(self.revision, batch.revision)
            if fresh:
                await self._on_change(self.kvs)
