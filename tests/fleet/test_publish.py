"""`publish` and EtcdSource against a real etcd member: a directory mirrored into etcd and read
back as the engine's snapshots; an invalid directory, a concurrent publish and a mass removal
each refused with nothing written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.fleet.keys import Keys, ManifestRecord
from controller.fleet.publish import (
    PruneHeld,
    PublishConflict,
    PublishRefused,
    commit,
    plan,
    publish,
)
from controller.fleet.source import EtcdSource
from controller.fleet.store import EtcdStore
from tests.fleet.helpers import Snapshots, memory, write

pytestmark = pytest.mark.etcd
MiB = 1024 * 1024


@pytest.fixture
async def source(store: EtcdStore, keys: Keys) -> AsyncIterator[tuple[EtcdSource, Snapshots]]:
    snapshots = Snapshots()
    follower = EtcdSource(store, keys, snapshots)
    await follower.start()
    try:
        yield follower, snapshots
    finally:
        await follower.stop()


async def test_round_trip_and_an_invalid_file_writes_nothing(
        tmp_path: Path, store: EtcdStore, keys: Keys,
        source: tuple[EtcdSource, Snapshots]) -> None:
    follower, snapshots = source
    directory = tmp_path / "manifests"
    write(directory, "a.yaml", "web-1")
    write(directory, "b.yaml", "web-2", "web-3")
    first = await publish(directory, store, keys)
    assert first.written == ("a.yaml", "b.yaml") and first.deleted == ()
    seen = await snapshots.wait_for(lambda s: len(s.domains) == 3)
    assert seen.domains["web-3"].source.file == "b.yaml" and not seen.problems
    assert follower.revision == first.revision

    write(directory, "a.yaml", "web-1", memory="128Mi")
    bad = write(directory, "c.yaml", "web-4")
    bad.write_text(bad.read_text().replace("memory: 64Mi", "memory: lots"))
    with pytest.raises(PublishRefused) as refused:
        await publish(directory, store, keys)
    assert [str(p).split(": ")[0] for p in refused.value.problems] == [f"{bad}:8:3"]
    assert "spec.memory" in str(refused.value)
    assert (await store.get_prefix(keys.prefix)).revision == first.revision  # nothing written

    write(directory, "c.yaml", "web-4")
    (directory / "b.yaml").unlink()
    second = await publish(directory, store, keys)
    assert (second.written, second.deleted) == (("a.yaml", "c.yaml"), ("b.yaml",))
    seen = await snapshots.wait_for(lambda s: set(s.domains) == {"web-1", "web-4"})
    assert memory(seen) == {"web-1": 128 * MiB, "web-4": 64 * MiB}
    assert follower.revision == second.revision
    assert (await publish(directory, store, keys)).revision == second.revision  # unchanged

    # a record this host's loader refuses (written by another domctl version, say)
    record = ManifestRecord("d.yaml", bad.read_text().replace("memory: 64Mi", "memory: lots"))
    await store.put(keys.manifest("d.yaml"), record.encode())
    seen = await snapshots.wait_for(lambda s: "d.yaml" in s.problems)
    assert [str(p).split(": ")[0] for p in seen.problems["d.yaml"]] == ["d.yaml:8:3"]
    assert set(seen.domains) == {"web-1", "web-4"}


async def test_a_concurrent_publish_fails_the_compare(tmp_path: Path, store: EtcdStore,
                                                     keys: Keys) -> None:
    write(tmp_path / "one", "a.yaml", "web-1")
    write(tmp_path / "two", "a.yaml", "web-1", memory="128Mi")
    write(tmp_path / "two", "b.yaml", "web-2")
    mine, theirs = await plan(tmp_path / "one", store, keys), await plan(tmp_path / "two",
                                                                          store, keys)
    landed = await commit(theirs, store, keys)
    with pytest.raises(PublishConflict):
        await commit(mine, store, keys)
    listing = await store.get_prefix(keys.manifests)
    assert listing.revision == landed.revision
    assert [keys.file_of(kv.key) for kv in listing.kvs] == ["a.yaml", "b.yaml"]
    assert b"128Mi" in listing.kvs[0].value


async def test_a_mass_removal_is_held_until_confirmed(tmp_path: Path, store: EtcdStore,
                                                     keys: Keys) -> None:
    directory = tmp_path / "manifests"
    for index in range(4):
        write(directory, f"{index}.yaml", f"web-{index}")
    before = await publish(directory, store, keys)
    for index in range(1, 4):
        (directory / f"{index}.yaml").unlink()
    with pytest.raises(PruneHeld) as held:
        await publish(directory, store, keys)
    assert held.value.removing == ["web-1", "web-2", "web-3"]
    assert (await store.get_prefix(keys.prefix)).revision == before.revision
    after = await publish(directory, store, keys, confirm_prune=True)
    assert after.deleted == ("1.yaml", "2.yaml", "3.yaml")
