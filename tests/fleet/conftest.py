"""Fixtures of the fleet tests: real etcd members on loopback (tests/support/etcd.py).

Tests marked `etcd` need Debian's etcd-server (`/usr/bin/etcd`); they are skipped, with the
reason, only when it is missing. `etcd` is one member shared by a module (each test writes under
a prefix of its own, `keys`), held from the leak guard while the module runs and stopped in its
finalizer; `etcd3` is a 3-member cluster of the test's own, for the tests that kill members.
`fleet` is the scheduler tests' fleet on `etcd` under `keys`: fake hosts registered under short
leases, schedulers, published domains, reads until a condition holds; everything it started is
stopped in its finalizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import MappingProxyType

import pytest

from controller.fleet.keys import HostRecord, Keys
from controller.fleet.publish import publish
from controller.fleet.registration import Registration
from controller.fleet.scheduler import FleetState, Scheduler
from controller.fleet.store import EtcdStore
from reconcilers.model import Domain
from tests.support import domains, leaks
from tests.support.etcd import EtcdCluster, TcpProxy, require_etcd
from tests.support.waiting import async_wait_until

TTL = 2  # seconds: the shortest lease etcd grants with the test members' election timeout


@pytest.fixture(autouse=True)
def _etcd_installed(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("etcd") is not None:
        require_etcd()


def _cluster(directory: Path, size: int) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(directory, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_etcd()
    directory = tmp_path_factory.mktemp("etcd")
    leaks.hold(directory)
    try:
        yield from _cluster(directory, 1)
    finally:
        leaks.release(directory)


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    yield from _cluster(tmp_path / "etcd", 3)


@pytest.fixture
def keys() -> Keys:
    """A prefix of the test's own, so tests sharing a member never see each other's keys."""
    return Keys(f"/t-{secrets.token_hex(4)}/")


@pytest.fixture
async def store(etcd: EtcdCluster) -> AsyncIterator[EtcdStore]:
    client = EtcdStore(etcd.endpoints)
    try:
        yield client
    finally:
        await client.close()


class Fleet:
    """Hosts, schedulers and manifests of one test, on one etcd prefix."""

    def __init__(self, store: EtcdStore, keys: Keys, directory: Path) -> None:
        self.store, self.keys, self.directory = store, keys, directory
        self.hosts: dict[str, Registration] = {}
        self.schedulers: list[Scheduler] = []

    async def host(self, name: str, memory_mib: int = 4096, cpus: int = 4,
                   drivers: tuple[str, ...] = ("qemu", "lxc"), **labels: str) -> Registration:
        """A fake host registered under a TTL-second lease (no `domctl run` behind it)."""
        registration = Registration(self.store, self.keys, HostRecord(
            name, cpus, memory_mib, drivers, MappingProxyType(labels)), ttl=TTL)
        self.hosts[name] = registration
        await registration.start()
        assert registration.registered.is_set(), f"host {name} not registered"
        return registration

    async def scheduler(self, name: str, store: EtcdStore | None = None) -> Scheduler:
        """A scheduler of `name` (through `store`: the test's client by default)."""
        scheduler = Scheduler(store or self.store, self.keys, name, ttl=TTL, settle=0.05,
                              removal_grace=0.5)
        self.schedulers.append(scheduler)
        await scheduler.start()
        return scheduler

    async def publish(self, *published: Domain) -> None:
        """Exactly these domains, one file each, as `domctl publish` writes them."""
        self.directory.mkdir(exist_ok=True)
        for old in self.directory.glob("*.yaml"):
            old.unlink()
        for domain in published:
            (self.directory / f"{domain.name}.yaml").write_text(domains.manifest(domain))
        await publish(self.directory, self.store, self.keys, confirm_prune=True)

    async def until(self, predicate: Callable[[FleetState], bool], what: str, *,
                    timeout: float = 10.0) -> FleetState:
        """The fleet's records, read every 50 ms, once `predicate` holds for them."""
        latest: list[FleetState] = []

        async def refresh() -> None:
            while True:
                latest[:] = [await FleetState.read(self.store, self.keys)]
                await asyncio.sleep(0.05)

        task = asyncio.create_task(refresh())
        try:
            return await async_wait_until(
                lambda: latest[0] if latest and predicate(latest[0]) else None, what,
                timeout=timeout, explain=lambda: f"last read: {latest}")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for scheduler in self.schedulers:
            await scheduler.stop()
        for registration in self.hosts.values():
            await registration.stop(revoke=True)


@pytest.fixture
async def fleet(store: EtcdStore, keys: Keys, tmp_path: Path) -> AsyncIterator[Fleet]:
    built = Fleet(store, keys, tmp_path / "manifests")
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
def proxy(etcd: EtcdCluster) -> Iterator[TcpProxy]:
    """A cuttable TCP proxy in front of the module's etcd member: a host behind it can be cut
    off from etcd while it stays alive."""
    between = TcpProxy(etcd.endpoints[0])
    try:
        yield between
    finally:
        between.close()
