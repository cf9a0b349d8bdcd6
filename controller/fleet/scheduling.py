"""Where each domain of the fleet runs: the scheduler's decision, as a pure function.

The leader (one at a time, by election) calls `schedule` with what etcd holds — the domains with
their demands and `spec.placement`, the hosts that hold a lease, the cordons, the current
placements — and writes each decision that changes a placement with a compare-and-swap
(controller/fleet/). Nothing here does I/O, so every rule is a table test.

Rules, in the order they apply (Kubernetes' filter-then-score, Nomad's bin-packing aside):
- A placed domain stays where it is while its host holds a lease and still matches its
  placement (an edit of `placement.hosts` or `selector` that excludes the host moves it): a
  cordon keeps new domains off a host, it moves nothing (drain does: a drained host's domains
  are placed again).
- A domain whose host lost its lease is placed on another host with the next epoch when its
  placement says `failover: true` (the lost host fenced itself before its lease could run out);
  otherwise it stays placed there and is reported `HostUnreachable`.
- A new (or failed-over, or drained) domain goes to a host that holds a lease, is not cordoned
  or draining, has its driver, is in `placement.hosts` (when given), carries every
  `placement.selector` label, and has the memory free (the sum of the memory of the domains
  placed on it stays within its own) and at least its vCPUs (CPU time is shared, memory is
  not: CPU is overcommitted, as every hypervisor does). Among those: the fewest domains of its
  `spreadGroup`, then the most free memory (spreading load), then the name.
- Domains are taken highest `startPriority` first, then by name, so a result is reproducible.
- No host fits: the domain stays unplaced, with a reason counting why each host was refused
  ("0/3 hosts fit: 2 without 2048 MiB free, 1 cordoned").

Public surface:
    Demand(name, driver, memory_mib, vcpus, placement, priority=0), demand_of(domain),
    HostView(record, cordoned=False, draining=False), Decision(name, kind, host, epoch,
    message), schedule(demands, hosts, placements) -> list[Decision]
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controller.fleet.keys import HostRecord
from controller.fleet.keys import Placement as Placed
from reconcilers.model import Domain, Placement

MiB = 1024 * 1024


@dataclass(frozen=True)
class Demand:
    """What a domain asks of a host."""

    name: str
    driver: str
    memory_mib: int
    vcpus: int
    placement: Placement
    priority: int = 0  # spec.startPriority: higher is placed first


def demand_of(domain: Domain) -> Demand:
    """What a manifest's domain asks: its memory in MiB rounded up (`spec.memory`: a qemu VM
    that may grow towards `maxMemory` is counted at what it starts with), vCPUs, placement,
    `startPriority`."""
    spec = domain.spec
    return Demand(domain.name, spec.driver.value, -(-spec.memory // MiB), spec.vcpus,
                  spec.placement, spec.start_priority)


@dataclass(frozen=True)
class HostView:
    """A host that holds a lease (its registered record), and the operator's marks on it."""

    record: HostRecord
    cordoned: bool = False
    draining: bool = False

    @property
    def name(self) -> str:
        return self.record.name


class Kind(str, enum.Enum):
    KEEP = "keep"  # stays on its host (nothing to write)
    PLACE = "place"  # placed for the first time
    MOVE = "move"  # placed on another host: failover or drain (the epoch grows)
    UNREACHABLE = "unreachable"  # its host is lost and it may not fail over: stays placed
    UNSCHEDULABLE = "unschedulable"  # no host fits: stays unplaced


@dataclass(frozen=True)
class Decision:
    name: str
    kind: Kind
    host: str | None  # where it runs (or stays placed); None: unplaced
    epoch: int  # the placement's epoch after this decision (0: never placed)
    message: str = ""
    previous: str | None = None  # MOVE: the host it leaves (keys.Placement.previous)

    def placement(self) -> Placed | None:
        """The placement record this decision writes (None: nothing to write)."""
        if self.kind not in (Kind.PLACE, Kind.MOVE) or self.host is None:
            return None
        return Placed(self.host, self.epoch, self.previous)


def schedule(demands: Iterable[Demand], hosts: Iterable[HostView],
             placements: Mapping[str, Placed]) -> list[Decision]:
    """One decision per demand, in placement order (see the module docstring)."""
    live = {host.name: host for host in hosts}
    ordered = sorted(demands, key=lambda d: (-d.priority, d.name))
    by_name = {demand.name: demand for demand in ordered}
    used: collections.Counter[str] = collections.Counter()  # MiB placed, by host
    groups: collections.Counter[tuple[str, str]] = collections.Counter()  # (group, host)
    decisions: dict[str, Decision] = {}
    for demand in ordered:  # first the domains that stay: their room is taken
        placed = placements.get(demand.name)
        if placed is None:
            continue
        host = live.get(placed.host)
        if host is not None and not host.draining and not _mismatch(demand, host):
            decisions[demand.name] = Decision(demand.name, Kind.KEEP, placed.host, placed.epoch)
        elif host is None and not demand.placement.failover:
            decisions[demand.name] = Decision(
                demand.name, Kind.UNREACHABLE, placed.host, placed.epoch,
                f"host {placed.host} is unreachable (its lease expired); placement.failover "
                "is false, so the domain stays placed there until the host is back")
        else:
            continue
        _take(demand, placed.host, used, groups)
    for demand in ordered:
        if demand.name in decisions:
            continue
        placed = placements.get(demand.name)
        chosen, refusals = _choose(demand, live.values(), used, groups)
        if chosen is None:
            decisions[demand.name] = Decision(
                demand.name, Kind.UNSCHEDULABLE, None, placed.epoch if placed else 0,
                _unschedulable(len(live), refusals))
            continue
        _take(demand, chosen, used, groups)
        if placed is None:
            decisions[demand.name] = Decision(demand.name, Kind.PLACE, chosen, 1)
        else:
            host = live.get(placed.host)
            why = ("failed over: its lease expired" if host is None else "drained"
                   if host.draining else "its placement no longer matches the host")
            decisions[demand.name] = Decision(demand.name, Kind.MOVE, chosen, placed.epoch + 1,
                                              f"from {placed.host} ({why})", placed.host)
    return [decisions[name] for name in by_name]


def _take(demand: Demand, host: str, used: collections.Counter[str],
          groups: collections.Counter[tuple[str, str]]) -> None:
    used[host] += demand.memory_mib
    if demand.placement.spread_group is not None:
        groups[(demand.placement.spread_group, host)] += 1


def _choose(demand: Demand, hosts: Iterable[HostView], used: Mapping[str, int],
            groups: Mapping[tuple[str, str], int]) -> tuple[str | None, collections.Counter[str]]:
    """The best fitting host, and why each other host was refused (counted by reason)."""
    refusals: collections.Counter[str] = collections.Counter()
    fitting: list[HostView] = []
    for host in hosts:
        refusal = _refusal(demand, host, used.get(host.name, 0))
        if refusal:
            refusals[refusal] += 1
        else:
            fitting.append(host)
    if not fitting:
        return None, refusals
    group = demand.placement.spread_group

    def score(host: HostView) -> tuple[int, int, str]:
        members = groups.get((group, host.name), 0) if group is not None else 0
        free = host.record.memory_mib - used.get(host.name, 0)
        return members, -free, host.name

    return min(fitting, key=score).name, refusals


def _refusal(demand: Demand, host: HostView, used_mib: int) -> str:
    """Why `host` cannot take `demand` ("" when it can)."""
    record = host.record
    if host.draining:
        return "draining"
    if host.cordoned:
        return "cordoned"
    mismatch = _mismatch(demand, host)
    if mismatch:
        return mismatch
    if record.memory_mib - used_mib < demand.memory_mib:
        return f"without {demand.memory_mib} MiB free"
    if record.cpus < demand.vcpus:
        return f"with fewer than {demand.vcpus} CPUs"
    return ""


def _mismatch(demand: Demand, host: HostView) -> str:
    """Why `host` can never run `demand` whatever else runs there ("" when it can)."""
    placement, record = demand.placement, host.record
    if demand.driver not in record.drivers:
        return f"without the {demand.driver} driver"
    if placement.hosts and host.name not in placement.hosts:
        return "not in placement.hosts"
    missing = [key for key, value in placement.selector if record.labels.get(key) != value]
    if missing:
        return "not matching placement.selector"
    return ""


def _unschedulable(total: int, refusals: Mapping[str, int]) -> str:
    if total == 0:
        return "no host holds a lease: 0 hosts to place it on"
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(
        refusals.items(), key=lambda item: (-item[1], item[0])))
    return f"0/{total} hosts fit: {reasons}"

