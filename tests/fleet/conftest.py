"""Fixtures of the fleet tests: real etcd members on loopback (tests/support/etcd.py).

Tests marked `etcd` need Debian's etcd-server (`/usr/bin/etcd`); they are skipped, with the
reason, only when it is missing. `etcd` is one member shared by a module (each test writes under
a prefix of its own, `keys`), held from the leak guard while the module runs and stopped in its
finalizer; `etcd3` is a 3-member cluster of the test's own, for the tests that kill members.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from controller.fleet.keys import Keys
from controller.fleet.store import EtcdStore
from tests.support import leaks
from tests.support.etcd import ETCD, EtcdCluster


@pytest.fixture(autouse=True)
def _etcd_installed(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("etcd") is not None and not os.access(ETCD, os.X_OK):
        pytest.skip(f"{ETCD} is not installed (Debian's etcd-server)")


def _cluster(directory: Path, size: int) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(directory, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if not os.access(ETCD, os.X_OK):
        pytest.skip(f"{ETCD} is not installed (Debian's etcd-server)")
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
