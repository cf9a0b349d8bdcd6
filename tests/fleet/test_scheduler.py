"""controller/fleet/scheduler.py on real etcd: placements written by selector, capacity and
spread; two schedulers at once (one leads, each domain placed once); a leader that dies and the
other taking over; a host whose lease runs out (failover with the next epoch, or `unreachable`);
a removed domain's placement deleted. Hosts are Registrations of fake records: no `domctl run`."""

from __future__ import annotations

import asyncio
import time

import pytest

from controller.fleet.keys import Keys, Placement
from controller.fleet.scheduler import FleetState
from controller.fleet.scheduling import Decision, Kind
from controller.fleet.store import EtcdStore
from controller.service.fleet_admin import drain_host
from reconcilers.model import Domain
from reconcilers.model import Placement as Wanted
from tests.fleet.conftest import TTL, Fleet
from tests.support.domains import domain
from tests.support.etcd import EtcdCluster, TcpProxy
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.etcd


def vm(name: str, memory: str = "64Mi", **placement: object) -> Domain:
    return domain(name, memory=memory, uuid=None, placement=Wanted(**placement))  # type: ignore[arg-type]


def where(state: FleetState) -> dict[str, tuple[str, int]]:
    return {name: (p.host, p.epoch) for name, p in state.placements.items()}


async def placement_writes(store: EtcdStore, keys: Keys, since: int) -> list[str]:
    """The domain of every write under placements/ after revision `since`, in order."""
    latest = (await store.get_prefix(keys.placements)).revision
    written: list[str] = []
    if latest <= since:
        return written
    async with asyncio.timeout(5):
        async for batch in store.watch_prefix(keys.placements, since + 1):
            written += [Keys.last(e.kv.key) for e in batch.events if e.kind == "PUT"]
            if batch.revision >= latest:
                return written
    return written


async def test_placement_by_selector_capacity_and_spread(fleet: Fleet) -> None:
    await fleet.host("h1", memory_mib=1024, zone="a")
    await fleet.host("h2", memory_mib=4096, zone="b")
    await fleet.host("h3", memory_mib=4096, zone="b", drivers=("qemu",))
    await fleet.publish(vm("pinned", "512Mi", selector=(("zone", "a"),)),
                        vm("big", "3000Mi"), vm("huge", "8Gi"),
                        *(vm(f"web-{i}", spread_group="web") for i in range(3)))
    await fleet.scheduler("h1")
    state = await fleet.until(lambda s: len(s.placements) == 5 and "huge" in s.schedulings,
                              "five placements and huge unschedulable")
    placed = where(state)
    assert placed["pinned"] == ("h1", 1)
    assert placed["big"] == ("h2", 1)  # free memory ties h2 and h3: by name
    assert sorted(placed[f"web-{i}"][0] for i in range(3)) == ["h1", "h2", "h3"]
    record = state.schedulings["huge"]
    assert (record.kind, record.message) == ("unschedulable",
                                             "0/3 hosts fit: 3 without 8192 MiB free")
    await fleet.publish(vm("pinned", "512Mi", selector=(("zone", "a"),)), vm("big", "3000Mi"),
                        *(vm(f"web-{i}", spread_group="web") for i in range(3)))
    state = await fleet.until(lambda s: "huge" not in s.schedulings, "huge's record deleted")
    assert where(state) == placed  # nothing else moved


async def test_two_schedulers_one_leader_each_domain_placed_once_then_takeover(
        fleet: Fleet) -> None:
    await fleet.host("h1")
    await fleet.host("h2")
    since = (await fleet.store.get_prefix(fleet.keys.placements)).revision
    first, second = await asyncio.gather(fleet.scheduler("s1"), fleet.scheduler("s2"))
    await fleet.publish(*(vm(f"d{i}", spread_group="g") for i in range(8)))
    state = await fleet.until(lambda s: len(s.placements) == 8, "eight placements")
    assert [first.leading.is_set(), second.leading.is_set()].count(True) == 1
    assert {epoch for _host, epoch in where(state).values()} == {1}
    writes = await placement_writes(fleet.store, fleet.keys, since)
    assert sorted(writes) == sorted(state.placements)  # each written once: no lost update
    leader, other = (first, second) if first.leading.is_set() else (second, first)

    await leader.stop(resign=False)  # dies: its lease runs out within TTL
    died = time.monotonic()
    await asyncio.wait_for(other.leading.wait(), TTL + 3)
    assert time.monotonic() - died <= TTL + 2
    await fleet.publish(*(vm(f"d{i}", spread_group="g") for i in range(9)))
    state = await fleet.until(lambda s: "d8" in s.placements, "d8 placed by the new leader")
    assert {epoch for _host, epoch in where(state).values()} == {1}


async def test_a_lost_compare_writes_nothing(fleet: Fleet) -> None:
    await fleet.host("h1")
    scheduler = await fleet.scheduler("s1")
    await asyncio.wait_for(scheduler.leading.wait(), 5)
    keys = fleet.keys  # "x" is in no manifest: its status holds the placement where it is
    await fleet.store.put(keys.status("x"), b'{"host": "h2", "state": "running"}')
    stale = await FleetState.read(fleet.store, keys)
    await fleet.store.put(keys.placement("x"), Placement("h2", 1).encode())  # someone else
    assert not await scheduler._apply(Decision("x", Kind.PLACE, "h1", 1), stale)
    assert (await FleetState.read(fleet.store, keys)).placements["x"] == Placement("h2", 1)


async def test_a_leader_cut_off_from_etcd_stops_acting_before_another_leads(
        fleet: Fleet, etcd: EtcdCluster) -> None:
    proxy = TcpProxy(etcd.endpoints[0])
    cut_off = EtcdStore([proxy.endpoint], timeout=1.0)
    try:
        first = await fleet.scheduler("s1", store=cut_off)
        await asyncio.wait_for(first.leading.wait(), 5)
        second = await fleet.scheduler("s2")
        proxy.cut()
        cut = time.monotonic()
        stepped_down = await async_wait_until(
            lambda: time.monotonic() if not first.leading.is_set() else None,
            "the cut-off leader stepping down", timeout=TTL)
        assert not second.leading.is_set()
        await asyncio.wait_for(second.leading.wait(), TTL + 3)
        assert stepped_down - cut < TTL
        await fleet.host("h1")
        await fleet.publish(vm("after"))
        await fleet.until(lambda s: "after" in s.placements, "placed by the new leader")
    finally:
        await fleet.close()  # the schedulers first: one of them uses `cut_off`
        await cut_off.close()
        proxy.close()


async def test_a_lost_host_fails_over_its_failover_domains_and_strands_the_others(
        fleet: Fleet) -> None:
    lost = await fleet.host("h1")
    await fleet.publish(vm("ha", failover=True), vm("pet"))
    await fleet.scheduler("h1")
    await fleet.until(lambda s: where(s) == {"ha": ("h1", 1), "pet": ("h1", 1)},
                      "both on h1")
    await fleet.host("h2")
    await lost.stop()  # its keep-alive stops: the lease expires within TTL
    state = await fleet.until(lambda s: "h1" not in s.hosts and "pet" in s.schedulings
                              and s.placements["ha"].host == "h2", "failover",
                              timeout=TTL + 5)
    assert state.placements["ha"] == Placement("h2", 2, previous="h1")
    assert state.placements["pet"] == Placement("h1", 1)
    assert state.schedulings["pet"].kind == "unreachable"
    assert "ha" not in state.schedulings
    lines: list[str] = []  # a drain of the lost host: pet cannot leave it, and says why
    assert await drain_host(fleet.store, fleet.keys, "h1", timeout=5, report=lines.append) == []
    assert lines[1:] == ["pet: stays on h1: unreachable: host h1 "
                         "is unreachable (its lease expired); placement.failover is false, so "
                         "the domain stays placed there until the host is back"]


async def test_a_removed_domain_loses_its_placement_once_released(fleet: Fleet) -> None:
    await fleet.host("h1")
    await fleet.publish(vm("keep"), vm("gone"))
    await fleet.scheduler("h1")
    await fleet.until(lambda s: len(s.placements) == 2, "both placed")
    status = fleet.keys.status("gone")
    await fleet.store.put(status, b'{"host": "h1", "state": "running"}')
    await fleet.publish(vm("keep"))
    await asyncio.sleep(1.0)  # past the removal grace: held by the status saying running
    assert "gone" in (await FleetState.read(fleet.store, fleet.keys)).placements
    await fleet.store.put(status, b'{"host": "h1", "state": "shutoff"}')
    state = await fleet.until(lambda s: "gone" not in s.placements, "gone's placement deleted")
    assert where(state) == {"keep": ("h1", 1)}
