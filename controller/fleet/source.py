"""EtcdSource: the manifests published in etcd, as the snapshots the engine takes from a directory.

Same shape as controller/manifests/source.py's ManifestSource (`start()`, `stop()`,
`rescan()`, `on_change(Snapshot)`), so `domctl run --etcd` feeds the engine unchanged: the
desired store's removal grace and prune guard, ManifestValid with `file:line:column`, networks.
The files are those `domctl publish` wrote (publish.py), each loaded under its file name with
the loader of the directory source and assembled by the same SnapshotAssembler.

How it follows etcd is mirror.py's PrefixMirror over `manifests/` (shared with the host view's
placements, hosts and status documents): one full read, then a watch resumed from the last
applied revision, a full read after a compaction and every `resync` seconds; each change hands
a new snapshot to `on_change`.

While etcd cannot be read at start, the snapshot says `readable=False`: the caller prunes
nothing and its domains keep their last valid spec, as for an unreadable directory. Loading
runs in an executor thread, one load at a time, so a large manifest never blocks the loop.

Never writes to etcd; never raises out of its task (a failure is logged and retried).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import MappingProxyType

import structlog

from controller.fleet.keys import Keys, ManifestRecord
from controller.fleet.mirror import PrefixMirror
from controller.fleet.store import EtcdError, EtcdStore, KeyValue
from controller.manifests.errors import ManifestError, Problem
from controller.manifests.loader import Documents, load_documents
from controller.manifests.source import Snapshot, SnapshotAssembler

log = structlog.get_logger(__name__)

_Loaded = Documents | ManifestError


class EtcdSource:
    def __init__(self, store: EtcdStore, keys: Keys, on_change: Callable[[Snapshot], None], *,
                 resync: float = 30.0, retry: float = 0.5, retry_max: float = 5.0) -> None:
        self._keys = keys
        self._on_change = on_change
        self._mirror = PrefixMirror(store, keys.manifests, self._deliver, resync=resync,
                                    retry=retry, retry_max=retry_max)
        self._cache: dict[str, tuple[int, _Loaded]] = {}  # file → (mod revision, its load)
        self._assembler = SnapshotAssembler()
        self._last = Snapshot(readable=False)

    @property
    def revision(self) -> int | None:
        """etcd's revision the last snapshot shows."""
        return self._mirror.revision

    async def start(self) -> None:
        """A first full read, delivered to on_change, then follow etcd in a task."""
        await self.rescan()
        self._mirror.follow()

    async def stop(self) -> None:
        await self._mirror.stop()

    async def rescan(self) -> Snapshot:
        """Read everything now; the snapshot goes to on_change and is returned (readable=False
        when etcd could not be read and nothing is known yet)."""
        try:
            await self._mirror.read_all()
        except EtcdError as err:
            log.warning("cannot read the published manifests from etcd", error=str(err))
            if self.revision is not None:
                await self._mirror.redeliver()
            else:
                self._last = Snapshot(readable=False)
                self._on_change(self._last)
        return self._last

    async def _deliver(self, kvs: Mapping[str, KeyValue]) -> None:
        files = {self._keys.file_of(key): kv for key, kv in kvs.items()}
        loaded = await asyncio.get_running_loop().run_in_executor(None, self._load_all, files)
        snapshot = self._assembler.assemble(loaded)
        log.debug("published manifests read", revision=self.revision,
                  domains=len(snapshot.domains), invalid=len(snapshot.problems))
        self._last = snapshot
        self._on_change(snapshot)

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
