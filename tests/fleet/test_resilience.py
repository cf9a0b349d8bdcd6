"""The fleet's reads and leases when etcd members come and go, or a host is cut off from them:
a watch resumed from its last revision after its member restarted, a full re-read once the
revisions it needed were compacted, a host lease that expires when keep-alive stops and comes
back with a new lease, a 3-member cluster that loses one member."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import structlog

from controller.fleet.keys import HostRecord, Keys
from controller.fleet.publish import PublishResult, publish
from controller.fleet.registration import Registration, RenewalFailure, local_host
from controller.fleet.source import EtcdSource
from controller.fleet.store import EtcdStore, EtcdUnavailable
from tests.fleet.helpers import Snapshots, memory, write
from tests.support.etcd import EtcdCluster, TcpProxy
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.etcd
MiB = 1024 * 1024
T = TypeVar("T")


@pytest.fixture
async def through_proxy(proxy: TcpProxy) -> AsyncIterator[EtcdStore]:
    """A host's client that reaches etcd only through the proxy."""
    client = EtcdStore([proxy.endpoint], timeout=1.0)
    try:
        yield client
    finally:
        await client.close()


async def test_watch_resumes_after_its_member_restarted(tmp_path: Path, etcd3: EtcdCluster,
                                                       keys: Keys) -> None:
    host = EtcdStore(etcd3.endpoints[:1])  # the host's only member: m0
    admin = EtcdStore(etcd3.endpoints[1:])
    snapshots = Snapshots()
    source = EtcdSource(host, keys, snapshots, retry=0.2, retry_max=0.5)
    try:
        write(tmp_path / "m", "a.yaml", "web-1")
        await publish(tmp_path / "m", admin, keys)
        await source.start()
        await snapshots.wait_for(lambda s: "web-1" in s.domains)
        await asyncio.to_thread(etcd3.kill, 0)
        write(tmp_path / "m", "a.yaml", "web-1", memory="128Mi")  # while m0 is down
        write(tmp_path / "m", "b.yaml", "web-2")
        published: list[PublishResult] = []
        await eventually(lambda: publish(tmp_path / "m", admin, keys), published.append)
        changed = published[-1]
        await asyncio.sleep(0.5)  # the host's watch fails and retries meanwhile
        await asyncio.to_thread(etcd3.restart, 0)
        seen = await snapshots.wait_for(lambda s: "web-2" in s.domains)
        assert memory(seen) == {"web-1": 128 * MiB, "web-2": 64 * MiB}
        assert source.revision == changed.revision
        assert all(s.readable and "web-1" in s.domains for s in snapshots.seen)
    finally:
        await source.stop()
        await host.close()
        await admin.close()


async def test_compacted_revisions_mean_a_full_read(tmp_path: Path, store: EtcdStore,
                                                    through_proxy: EtcdStore, proxy: TcpProxy,
                                                    keys: Keys) -> None:
    snapshots = Snapshots()
    source = EtcdSource(through_proxy, keys, snapshots, retry=0.2, retry_max=0.5)
    write(tmp_path / "m", "a.yaml", "web-1")
    await publish(tmp_path / "m", store, keys)
    await source.start()
    try:
        await snapshots.wait_for(lambda s: "web-1" in s.domains)
        with structlog.testing.capture_logs() as logs:
            proxy.cut()
            write(tmp_path / "m", "b.yaml", "web-2")
            await publish(tmp_path / "m", store, keys)
            (tmp_path / "m" / "b.yaml").unlink()
            write(tmp_path / "m", "c.yaml", "web-3")
            last = await publish(tmp_path / "m", store, keys)
            await store.compact(last.revision)
            proxy.restore()
            await snapshots.wait_for(lambda s: set(s.domains) == {"web-1", "web-3"})
        assert source.revision == last.revision
        assert any(log["event"].startswith("etcd compacted") for log in logs)
    finally:
        await source.stop()


async def test_etcd_unreachable_at_start_prunes_nothing(tmp_path: Path, store: EtcdStore,
                                                       through_proxy: EtcdStore,
                                                       proxy: TcpProxy, keys: Keys) -> None:
    write(tmp_path / "m", "a.yaml", "web-1")
    await publish(tmp_path / "m", store, keys)
    snapshots = Snapshots()
    source = EtcdSource(through_proxy, keys, snapshots, retry=0.2, retry_max=0.5)
    proxy.cut()
    await source.start()
    try:
        assert [s.readable for s in snapshots.seen] == [False]  # the caller prunes nothing
        proxy.restore()
        await snapshots.wait_for(lambda s: s.readable and "web-1" in s.domains)
    finally:
        await source.stop()


async def test_host_lease_expires_when_keepalive_stops(store: EtcdStore,
                                                       through_proxy: EtcdStore,
                                                       proxy: TcpProxy, keys: Keys) -> None:
    failures: list[RenewalFailure] = []
    lost: list[bool] = []
    record = local_host("h1", ["qemu", "lxc"], {"zone": "a"})
    host = Registration(through_proxy, keys, record, ttl=2, on_renewal_failed=failures.append,
                        on_lost=lambda: lost.append(True))
    twin = Registration(store, keys, HostRecord("h1", 1, 1), ttl=2)
    await host.start()
    try:
        assert host.registered.is_set()
        stored = await store.get(keys.host("h1"))
        assert stored is not None and HostRecord.decode(stored.key, stored.value) == record
        await twin.start()  # another host of that name: it waits
        assert not twin.registered.is_set()
        await twin.stop()
        await asyncio.sleep(3)  # longer than the TTL: kept alive
        assert await store.get(keys.host("h1")) is not None and not failures

        proxy.cut()  # the host lives on, etcd no longer hears from it
        cut_at = time.monotonic()
        await async_wait_until(lambda: failures, "a failed renewal reported", timeout=3)
        while await store.get(keys.host("h1")) is not None:  # until etcd expires the lease
            assert time.monotonic() - cut_at < host.ttl + 2, "the host key outlived its lease"
            await asyncio.sleep(0.1)
        assert failures[-1].since_renewal > host.ttl - host.interval

        proxy.restore()
        await async_wait_until(lambda: lost, "the lease reported lost", timeout=5)
        await async_wait_until(host.registered.is_set, "registered again", timeout=5)
        again = await store.get(keys.host("h1"))
        assert again is not None and again.lease == host.lease
    finally:
        await host.stop(revoke=True)
    assert await store.get(keys.host("h1")) is None


async def eventually(write: Callable[[], Awaitable[T]],
                     done: Callable[[T], object] = lambda _result: None,
                     within: float = 10.0) -> None:
    """A write retried, as its callers do, while the members elect a new leader: one sent
    to the dead leader fails (EtcdUnavailable: etcd answers "request timed out"); `done`
    gets the result of the one that went through."""
    deadline = time.monotonic() + within
    while True:
        try:
            done(await write())
            return
        except EtcdUnavailable:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def test_three_members_survive_one_killed(etcd3: EtcdCluster, keys: Keys) -> None:
    client = EtcdStore(etcd3.endpoints, timeout=2.0)
    host = Registration(client, keys, HostRecord("h1", 1, 1), ttl=2)
    try:
        await host.start()
        await client.put(keys.status("web-1"), b"before")
        await asyncio.to_thread(etcd3.kill, 0)  # the member the client was using
        await eventually(lambda: client.put(keys.status("web-1"), b"after"))
        await asyncio.sleep(3)  # longer than the host's TTL: renewed through the others
        assert await client.get(keys.host("h1")) is not None and host.registered.is_set()
        await asyncio.to_thread(etcd3.restart, 0)
        alone = EtcdStore(etcd3.endpoints[:1])
        try:
            stored = await alone.get(keys.status("web-1"))  # m0 caught up
            assert stored is not None and stored.value == b"after"
        finally:
            await alone.close()
    finally:
        await host.stop(revoke=True)
        await client.close()
