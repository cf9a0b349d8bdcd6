"""EtcdStore against a real etcd member: reads with revisions, compare-and-swap, leases, watch."""

from __future__ import annotations

import pytest

from controller.fleet.keys import Keys
from controller.fleet.store import Compacted, Compare, Delete, EtcdStore, Put

pytestmark = pytest.mark.etcd


async def test_txn_lease_and_watch(store: EtcdStore, keys: Keys) -> None:
    first = await store.put(keys.manifest("a.yaml"), b"1")
    listing = await store.get_prefix(keys.manifests)
    assert [(kv.key, kv.value, kv.mod_revision) for kv in listing.kvs] == [
        (keys.manifest("a.yaml"), b"1", first)]
    stale = Compare.mod_revision(keys.manifest("a.yaml"), first)
    swapped = await store.txn([stale], [Put(keys.manifest("a.yaml"), b"2"),
                                        Put(keys.manifest("b.yaml"), b"3")])
    assert swapped.succeeded and swapped.revision == first + 1
    assert not (await store.txn([stale], [Delete(keys.manifest("a.yaml"))])).succeeded
    assert not (await store.txn([Compare.unchanged_since(keys.manifests, first)], [])).succeeded
    assert (await store.txn([Compare.unchanged_since(keys.manifests, swapped.revision)],
                            [])).succeeded

    lease = await store.grant(5)
    await store.put(keys.host("h1"), b"{}", lease=lease.id)
    assert 0 < await store.keepalive(lease.id) <= 5
    await store.revoke(lease.id)
    assert await store.get(keys.host("h1")) is None
    assert await store.keepalive(lease.id) == 0

    batches = store.watch_prefix(keys.manifests, first)
    seen: list[tuple[int, str, str, bytes]] = []
    while not seen or seen[-1][0] < swapped.revision:
        batch = await anext(batches)
        seen += [(e.kv.mod_revision, e.kind, e.kv.key, e.kv.value) for e in batch.events]
        assert batch.revision == seen[-1][0]
    await batches.aclose()
    assert seen == [(first, "PUT", keys.manifest("a.yaml"), b"1"),
                    (swapped.revision, "PUT", keys.manifest("a.yaml"), b"2"),
                    (swapped.revision, "PUT", keys.manifest("b.yaml"), b"3")]

    await store.compact(swapped.revision)
    with pytest.raises(Compacted):
        await anext(store.watch_prefix(keys.manifests, first))
