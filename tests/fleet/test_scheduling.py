"""controller/fleet/scheduling.py: the scheduler's rules as tables (no etcd: a pure function);
and the pure parts of scheduler.py: a removed domain's release read from its status."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from controller.fleet.keys import HostRecord
from controller.fleet.keys import Placement as Placed
from controller.fleet.scheduler import released
from controller.fleet.scheduling import Decision, Demand, HostView, Kind, demand_of, schedule
from controller.fleet.store import KeyValue
from reconcilers.model import Placement
from tests.support.domains import domain


def host(name: str, memory_mib: int = 4096, cpus: int = 4, drivers: tuple[str, ...] = (
        "qemu", "lxc"), cordoned: bool = False, draining: bool = False,
         **labels: str) -> HostView:
    return HostView(HostRecord(name, cpus, memory_mib, drivers, MappingProxyType(labels)),
                    cordoned=cordoned, draining=draining)


def vm(name: str, memory_mib: int = 1024, vcpus: int = 1, driver: str = "qemu",
       priority: int = 0, **placement: object) -> Demand:
    return Demand(name, driver, memory_mib, vcpus, Placement(**placement),  # type: ignore[arg-type]
                  priority)


def where(decisions: list[Decision]) -> dict[str, tuple[str, str | None, int]]:
    return {d.name: (d.kind.value, d.host, d.epoch) for d in decisions}


def test_new_domains_spread_by_free_memory_and_fill_in_name_order() -> None:
    decisions = schedule([vm("a", 3000), vm("b", 1000), vm("c", 1000)],
                         [host("h1"), host("h2", memory_mib=2048)], {})
    assert where(decisions) == {"a": ("place", "h1", 1), "b": ("place", "h2", 1),
                                "c": ("place", "h1", 1)}  # 1096 MiB free beats 1048


def test_a_placed_domain_stays_and_its_memory_is_taken_first() -> None:
    decisions = schedule([vm("new", 3000), vm("old", 3000)], [host("h1"), host("h2")],
                         {"old": Placed("h2", 4)})
    assert where(decisions) == {"new": ("place", "h1", 1), "old": ("keep", "h2", 4)}


def test_selector_hosts_and_driver_filter_and_a_refusal_counts_the_reasons() -> None:
    hosts = [host("h1", zone="a"), host("h2", zone="b"), host("h3", drivers=("qemu",)),
             host("h4", cordoned=True, zone="a")]
    decisions = schedule([vm("sel", selector=(("zone", "b"),)), vm("ct", driver="lxc",
                          hosts=("h3", "h1")), vm("none", memory_mib=9000)], hosts, {})
    assert where(decisions)["sel"] == ("place", "h2", 1)
    assert where(decisions)["ct"] == ("place", "h1", 1)
    none = next(d for d in decisions if d.name == "none")
    assert (none.kind, none.host) == (Kind.UNSCHEDULABLE, None)
    assert none.message == "0/4 hosts fit: 3 without 9000 MiB free, 1 cordoned"


def test_a_spread_group_goes_to_different_hosts_then_the_least_crowded() -> None:
    web = [vm(f"web-{i}", 100, spread_group="web") for i in range(4)]
    decisions = schedule(web, [host("h1", memory_mib=8000), host("h2"), host("h3")], {})
    hosts = [str(d.host) for d in decisions]
    assert sorted(hosts[:3]) == ["h1", "h2", "h3"]  # one each before any host has two
    assert hosts[3] == "h1"  # then the most free memory


def test_a_lost_host_moves_failover_domains_with_the_next_epoch_and_keeps_the_others() -> None:
    placements = {"f": Placed("gone", 3), "s": Placed("gone", 7)}
    decisions = schedule([vm("f", failover=True), vm("s")], [host("h1")], placements)
    assert where(decisions) == {"f": ("move", "h1", 4), "s": ("unreachable", "gone", 7)}
    moved = next(d for d in decisions if d.name == "f")
    assert moved.message == "from gone (failed over: its lease expired)"
    assert moved.placement() == Placed("h1", 4, previous="gone")
    stuck = next(d for d in decisions if d.name == "s")
    assert "placement.failover is false" in stuck.message


def test_drain_moves_everything_off_and_cordon_moves_nothing() -> None:
    placements = {"a": Placed("h1", 1), "b": Placed("h2", 1)}
    decisions = schedule([vm("a"), vm("b")], [host("h1", draining=True),
                                              host("h2", cordoned=True), host("h3")], placements)
    assert where(decisions) == {"a": ("move", "h3", 2), "b": ("keep", "h2", 1)}


def test_a_placement_edit_that_excludes_the_host_moves_the_domain() -> None:
    decisions = schedule([vm("a", hosts=("h2",))], [host("h1"), host("h2")],
                         {"a": Placed("h1", 5)})
    assert where(decisions) == {"a": ("move", "h2", 6)}


def test_higher_priority_is_placed_first_when_room_is_short() -> None:
    decisions = schedule([vm("low", 3000), vm("high", 3000, priority=10)], [host("h1")], {})
    assert where(decisions) == {"high": ("place", "h1", 1), "low": ("unschedulable", None, 0)}


@pytest.mark.parametrize("hosts", [[], [host("h1", cordoned=True)]])
def test_no_host_to_place_on_says_why(hosts: list[HostView]) -> None:
    [decision] = schedule([vm("a")], hosts, {})
    assert decision.kind is Kind.UNSCHEDULABLE
    assert decision.message in ("no host holds a lease: 0 hosts to place it on",
                                "0/1 hosts fit: 1 cordoned")


def test_a_manifest_asks_its_memory_in_whole_mib_vcpus_placement_and_priority() -> None:
    wanted = Placement(hosts=("h1",), failover=True)
    asked = demand_of(domain("a", "lxc", memory=64 * 1024 * 1024 + 1, vcpus=2,
                             start_priority=5, placement=wanted))
    assert asked == Demand("a", "lxc", 65, 2, wanted, 5)


@pytest.mark.parametrize(("status", "free"), [
    (None, True),
    (b'{"host": "h2", "state": "running"}', True),  # the host it moved to
    (b'{"host": "h1", "state": "shutoff"}', True),
    (b'{"host": "h1", "state": "running"}', False),
    (b'{"state": "running"}', False),
    (b"not json", False),
])
def test_a_removed_domain_is_released_when_its_status_says_it_no_longer_runs_there(
        status: bytes | None, free: bool) -> None:
    kv = None if status is None else KeyValue("/p/status/a", status, 1, 1, 1, 0)
    assert released(kv, Placed("h1", 1)) is free
