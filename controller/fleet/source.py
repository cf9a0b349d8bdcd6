"""EtcdSource: the manifests published in etcd, as the snapshots the engine takes from a directory.

Same shape as controller/manifests/source.py's ManifestSource (`start()`, `stop()`,
`rescan()`, `on_change(Snapshot)`), so `domctl run --etcd` feeds the engine unchanged: the
desired store's removal grace and prune guard, ManifestValid with `file:line:column`, networks.
The files are those `domctl publish` wrote (publish.py), each loaded under its file name with
the loader of the directory source and assembled by the same SnapshotAssembler.

How it follows etcd: one full read (the keys under `manifests/` and the revision they are at),
then a watch from the next revision; each batch of events (whole revisions: a publish is one
transaction, so it is seen at once or not at all) updates the files and hands a new snapshot
to `on_change`. A watch that breaks (a member killed, etcd unreachable) is resumed from the
revision after the last one applied, so no change is missed or applied twice, retried with a
growing delay; one whose start revision etcd has compacted away (Compacted) is replaced by a
full read. Every `resync` seconds the watch is closed and everything read again, which also
heals a watch stream that went silent without breaking.

While etcd cannot be read at start, the snapshot says `readable=False`: the caller prunes
nothing and its domains keep their last valid spec, as for an unreadable directory. Loading
runs in an executor thread, one load at a time, so a large manifest never blocks the loop.

Never writes to etcd; never raises out of its task (a failure is logged and retried).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from types import MappingProxyType

import structlog

from controller.fleet.keys import Keys, ManifestRecord
from controller.fleet.store import Compacted, EtcdError, EtcdStore, KeyValue, WatchBatch
from controller.manifests.errors import ManifestError, Problem
from controller.manifests.loader import Documents, load_documents
from controller.manifests.source import Snapshot, SnapshotAssembler

log = structlog.get_logger(__name__)

_Loaded = Documents | ManifestError


class EtcdSource:
    def __init__(self, store: EtcdStore, keys: Keys, on_change: Callable[[Snapshot], None], *,
                 resync: float = 30.0, retry: float = 0.5, retry_max: float = 5.0) -> None:
        self._store = store
        self._keys = keys
        self._on_change = on_change
        self._resync = resync
        self._retry = retry
        self._retry_max = retry_max
        self._files: dict[str, KeyValue] = {}  # by file name, as last read or watched
        self._cache: dict[str, tuple[int, _Loaded]] = {}  # file → (mod revision, its load)
        self._assembler = SnapshotAssembler()
        self._lock = asyncio.Lock()  # one change of the files and its snapshot at a time
        self._task: asyncio.Task[None] | None = None
        self.revision: int | None = None  # etcd's revision the last snapshot shows

    async def start(self) -> None:
        """A first full read, delivered to on_change, then follow etcd in a task."""
        await self.rescan()
        self._task = asyncio.create_task(self._follow(), name="etcd-manifests")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def rescan(self) -> Snapshot:
        """Read everything now; the snapshot goes to on_change and is returned (readable=False
        when etcd could not be read and nothing is known yet)."""
        try:
            return await self._read_all()
        except EtcdError as err:
            log.warning("cannot read the published manifests from etcd", error=str(err))
            if self.revision is not None:
                async with self._lock:
                    return await self._deliver()
            snapshot = Snapshot(readable=False)
            self._on_change(snapshot)
            return snapshot

    async def _follow(self) -> None:
        delay, read_first = self._retry, self.revision is None
        while True:
            try:
                if read_first:
                    await self._read_all()
                    read_first = False
                await self._watch()
                read_first = True  # `resync` seconds passed: read everything again
                delay = self._retry
            except asyncio.CancelledError:
                raise
            except Compacted as err:
                log.warning("etcd compacted the revisions this watch needed: reading all "
                            "manifests again", revision=self.revision, error=str(err))
                read_first = True
            except Exception as err:  # EtcdError above all; never let the task die
                log.warning("etcd watch of the manifests failed; resuming",
                            revision=self.revision, retry_in=delay, error=str(err))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    async def _watch(self) -> None:
        """Apply the changes after `revision` as they come, for `resync` seconds."""
        assert self.revision is not None
        watch = self._store.watch_prefix(self._keys.manifests, self.revision + 1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._resync), contextlib.aclosing(watch) as batches:
                async for batch in batches:
                    await self._apply(batch)

    async def _read_all(self) -> Snapshot:
        listing = await self._store.get_prefix(self._keys.manifests)
        async with self._lock:
            if self.revision is None or listing.revision >= self.revision:
                self._files = {self._keys.file_of(kv.key): kv for kv in listing.kvs}
                self.revision = listing.revision
            # else the watch already applied newer revisions than this read saw
            return await self._deliver()

    async def _apply(self, batch: WatchBatch) -> None:
        async with self._lock:
            assert self.revision is not None
            fresh = [e for e in batch.events if e.kv.mod_revision > self.revision]
            for event in fresh:
                name = self._keys.file_of(event.kv.key)
                if event.kind == "PUT":
                    self._files[name] = event.kv
                else:
                    self._files.pop(name, None)
            self.revision = max(self.revision, batch.revision)
            if fresh:
                await self._deliver()

    async def _deliver(self) -> Snapshot:
        files = dict(self._files)
        loaded = await asyncio.get_running_loop().run_in_executor(None, self._load_all, files)
        snapshot = self._assembler.assemble(loaded)
        log.debug("published manifests read", revision=self.revision,
                  domains=len(snapshot.domains), invalid=len(snapshot.problems))
        self._on_change(snapshot)
        return snapshot

    def _load_all(self, files: Mapping[str, KeyValue]) -> Mapping[str, _Loaded]:
        """Each file's load, from the cache while its mod revision is the same."""
        loaded = {}
        for name, kv in files.items():
            cached = self._cache.get(name)
            if cached is None or cached[0] != kv.mod_revision:
                cached = (kv.mod_revision, _load(name, kv))
                self._cache[name] = cached
            loaded[name] = cached[1]
        for gone in self._cache.keys() - files.keys():
            del self._cache[gone]
        return MappingProxyType(loaded)


def _load(name: str, kv: KeyValue) -> _Loaded:
    try:
        record = ManifestRecord.decode(kv.key, kv.value)
        return load_documents(record.text, name)
    except ValueError as err:  # not written by `domctl publish`
        return ManifestError([Problem(name, 1, 1, "(record)", str(err))])
    except ManifestError as err:
        return err
