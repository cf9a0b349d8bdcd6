"""Fleet mode end to end (issue 18 points 3, 4, 5, 7): a 3-member etcd cluster, three real
`domctl run --etcd` hosts (separate processes with their own state and runtime dirs, labels,
each standing in the scheduler's election, a 6 s lease), and cheap diskless tcg VMs.

One fleet serves the whole module, the scenarios in order, each restarting what it killed:
placement by selector, capacity and spread (and the fleet view through a host's API); a dead
host (controller and qemu killed) whose failover domain runs elsewhere within TTL + 10 s while
the other shows HostUnreachable; a host cut off from etcd while alive, fencing its failover
domain before another host starts it; the etcd leader member killed; the scheduler leader's
controller killed and restarted (its domains untouched); a drain and an uncordon.

Each host talks to every etcd member through a TcpProxy of its own (tests/support/etcd.py), so
a test can cut one host off. A sampler (tests/support/fleet.py) looks at every domain on the
three hosts every 50 ms for the whole module: each test ends by asserting that it never saw
one running on two hosts. The scheduler leader is h1 at the start (started first, the others
once it leads); the scenarios that kill or cut a host pick one that leads nothing, and the
failover domains are kept off the leader (placement.hosts), so that the leader's controller,
killed alone in (e), leaves no failover domain behind to run twice: the limit docs/fleet.md
states.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.fleet.keys import HostRecord, Keys, Leader, Placement
from controller.protocol import headline
from reconcilers.model import Domain
from reconcilers.model import Placement as Spec
from tests.daemon.conftest import DOMCTL, Controller, proc_cmdline, unique
from tests.support import domains, leaks
from tests.support.cleanup import qemu_pidfiles
from tests.support.etcd import EtcdCluster, TcpProxy, require_etcd
from tests.support.fleet import (
    Sampler,
    base,
    etcd_call,
    event_time,
    host_args,
    placement_of,
    publish_domains,
    running_here,
    running_pid,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.qemu]

TTL = 6  # a host fences its failover domains 4 s after its last confirmed renewal
LABELS = {"h1": "rack=r1,disk=ssd", "h2": "rack=r1", "h3": "rack=r2"}
MiB = 1024 * 1024


def vm(name: str, *, memory: int = 64 * MiB, state: str = "running", priority: int = 0,
       hosts: tuple[str, ...] = (), selector: dict[str, str] | None = None,
       group: str | None = None, failover: bool = False) -> Domain:
    """A cheap diskless tcg VM with a placement."""
    return domains.domain(name, uuid=None, memory=memory, state=state, start_priority=priority,
                          placement=Spec(hosts=tuple(sorted(hosts)),
                                         selector=tuple(sorted((selector or {}).items())),
                                         spread_group=group, failover=failover))


@dataclass
class Three:
    etcd: EtcdCluster
    keys: Keys
    directory: Path
    hosts: dict[str, Controller]
    proxies: dict[str, list[TcpProxy]]
    sampler: Sampler | None = None
    published: dict[str, Domain] = field(default_factory=dict)

    @property
    def endpoints(self) -> list[str]:
        return self.etcd.endpoints

    def name(self, prefix: str) -> str:
        """A fresh domain name, known to every host's clean-up."""
        name = unique(prefix)
        for host in self.hosts.values():
            host.names.add(name)
        return name

    def publish(self, *published: Domain) -> None:
        self.published |= {domain.name: domain for domain in published}
        publish_domains(self.directory / "published", self.endpoints, self.keys, *published)

    def placement(self, name: str) -> Placement | None:
        return placement_of(self.endpoints, self.keys, name)

    def leader(self) -> str | None:
        kv = etcd_call(self.endpoints, "get", self.keys.scheduler)
        return Leader.decode(kv.key, kv.value).host if kv is not None else None

    def registered(self, host: str) -> HostRecord | None:
        kv = etcd_call(self.endpoints, "get", self.keys.host(host))
        return HostRecord.decode(kv.key, kv.value) if kv is not None else None

    def wait_placed(self, name: str, check: Callable[[Placement], bool] = lambda _p: True,
                    timeout: float = 20.0) -> Placement:
        def placed() -> Placement | None:
            found = self.placement(name)
            return found if found is not None and check(found) else None
        return wait_until(placed, f"{name} placed", timeout=timeout, interval=0.1)

    def wait_running(self, name: str, host: str | None = None,
                     timeout: float = 30.0) -> tuple[str, int]:
        """(host, pid) once `name` is placed (on `host`, if given) and runs there."""
        def found() -> tuple[str, int] | None:
            placed = self.placement(name)
            if placed is None or host not in (None, placed.host):
                return None
            pid = running_pid(self.hosts[placed.host], name)
            return (placed.host, pid) if pid is not None else None
        return wait_until(found, f"{name} running" + (f" on {host}" if host else ""),
                          timeout=timeout, interval=0.1, explain=self.explain)

    def get(self, via: str, *names: str) -> dict[str, dict[str, Any]]:
        """`domctl get -o json` through host `via`'s socket, by name."""
        done = self.hosts[via].domctl("get", *names, "-o", "json")
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)
        items = found.get("items", [found]) if isinstance(found, dict) else found
        return {document["name"]: document for document in items}

    def admin(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """An admin command (hosts, drain, uncordon) against the fleet's etcd."""
        return subprocess.run([str(DOMCTL), *args, "--etcd", ",".join(self.endpoints),
                               "--prefix", self.keys.prefix], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def etcd_leader(self) -> int:
        """The index of the etcd member that leads (etcd's maintenance status)."""
        def status(index: int) -> dict[str, Any]:
            request = urllib.request.Request(
                f"http://{self.endpoints[index]}/v3/maintenance/status", data=b"{}",
                method="POST")
            with urllib.request.urlopen(request, timeout=2) as answer:
                document: dict[str, Any] = json.load(answer)
                return document
        first = status(0)
        return next(i for i in range(len(self.endpoints))
                    if status(i)["header"]["member_id"] == first["leader"])

    def never_twice(self) -> None:
        assert self.sampler is not None
        assert self.sampler.samples > 0
        assert self.sampler.twice == [], self.sampler.twice[:5]

    def explain(self) -> str:
        return "\n".join(f"{name}: runs {sorted(running_here(host))}\n{host.stderr_tail(15)}"
                         for name, host in self.hosts.items())


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Three]:
    require_etcd()
    directory = tmp_path_factory.mktemp("three")
    leaks.hold(directory)
    with contextlib.ExitStack() as stack:
        stack.callback(leaks.release, directory)
        cluster = EtcdCluster(directory / "etcd", 3)
        stack.callback(cluster.stop)
        cluster.start()
        fleet = Three(cluster, Keys(f"/three-{secrets.token_hex(4)}/"), directory, {}, {})
        for name in LABELS:
            fleet.proxies[name] = [TcpProxy(endpoint) for endpoint in cluster.endpoints]
            for proxy in fleet.proxies[name]:
                stack.callback(proxy.close)
        stack.callback(_clean_up, fleet.hosts)  # before the proxies close and etcd stops
        for name, labels in LABELS.items():
            args = host_args(",".join(p.endpoint for p in fleet.proxies[name]), name,
                             fleet.keys, TTL, scheduler=True)
            fleet.hosts[name] = Controller(base(directory, name),
                                           (*args, "--host-labels", labels))
            fleet.hosts[name].start()
            if name == "h1":  # the leader, before anyone else stands
                wait_until(lambda: fleet.leader() == "h1", "h1 leading", timeout=15)
        fleet.sampler = Sampler(list(fleet.hosts.values()))
        stack.callback(fleet.sampler.stop)
        yield fleet


def _clean_up(hosts: dict[str, Controller]) -> None:
    """Every host stopped and swept (Controller.cleanup, which never raises) at once: each
    takes seconds, mostly its qemu processes' ends."""
    with concurrent.futures.ThreadPoolExecutor(max(1, len(hosts))) as pool:
        list(pool.map(Controller.cleanup, hosts.values()))


def test_placement_by_selector_capacity_and_spread_shown_by_any_host(three: Three) -> None:
    ssd, rack2 = three.name("ssd"), three.name("rack2")
    web = [three.name("web") for _ in range(3)]
    big, cap1, cap3, wide = (three.name(p) for p in ("big", "cap", "cap", "wide"))
    record = three.registered("h2")
    assert record is not None and record.labels == {"rack": "r1"}
    # h2 has 0.6 of its memory taken by `big`; `wide` (group cap, half the memory) would
    # go there for the spread (h1 and h3 hold one of the group each), but does not fit
    mib = record.memory_mib
    three.publish(vm(ssd, selector={"disk": "ssd"}), vm(rack2, selector={"rack": "r2"}),
                  *(vm(name, group="web") for name in web),
                  vm(big, memory=mib * 6 // 10 * MiB, state="shutoff", priority=1,
                     hosts=("h2",)),
                  vm(cap1, state="shutoff", priority=1, hosts=("h1",), group="cap"),
                  vm(cap3, state="shutoff", priority=1, hosts=("h3",), group="cap"),
                  vm(wide, memory=mib // 2 * MiB, state="shutoff", group="cap"))
    assert three.wait_running(ssd)[0] == "h1"
    assert three.wait_running(rack2)[0] == "h3"
    assert sorted(three.wait_running(name)[0] for name in web) == ["h1", "h2", "h3"]
    assert three.wait_placed(big).host == "h2"
    assert three.wait_placed(wide).host in ("h1", "h3")

    # the fleet view through one host: every domain, each where it is placed
    def shown() -> dict[str, dict[str, Any]] | None:
        found = three.get("h2")
        states = {name: found.get(name, {}).get("state") for name in (ssd, big, wide)}
        return found if states == {ssd: "running", big: "shutoff", wide: "shutoff"} else None
    documents = wait_until(shown, "the fleet's documents through h2", timeout=20,
                           interval=0.2)
    for name in (ssd, rack2, *web, big, cap1, cap3, wide):
        placed = three.placement(name)
        assert placed is not None and documents[name]["host"] == placed.host, documents[name]
    assert documents[ssd]["pid"] == running_pid(three.hosts["h1"], ssd)  # h1's own document
    three.never_twice()


def test_a_dead_host_s_failover_domain_runs_elsewhere_the_other_is_host_unreachable(
        three: Three) -> None:
    group = unique("fo")
    filler, moving, staying = three.name("filler"), three.name("moving"), three.name("staying")
    # `moving` goes to h3 (h2 holds one of its group already) and may fail over to h2 only
    three.publish(vm(filler, state="shutoff", priority=1, hosts=("h2",), group=group),
                  vm(moving, hosts=("h2", "h3"), group=group, failover=True),
                  vm(staying, hosts=("h3",)))
    assert three.wait_running(moving)[0] == "h3"
    three.wait_running(staying, "h3")
    dead = three.hosts["h3"]
    try:
        pids = [pid for name in qemu_pidfiles(dead.runtime)  # its own qemu processes only
                if (pid := running_pid(dead, name)) and str(dead.runtime) in
                " ".join(proc_cmdline(pid))]
        assert len(pids) >= 2, pids
        dead.kill(signal.SIGKILL)
        for pid in pids:  # as a dead machine: everything it ran is gone too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        three.wait_running(moving, "h2", timeout=TTL + 10)
        assert time.monotonic() - killed_at <= TTL + 10
        placed = three.placement(moving)
        assert placed is not None and (placed.epoch, placed.previous) == (2, "h3")

        def unreachable() -> dict[str, Any] | None:
            document = three.get("h1", staying).get(staying)
            return document if document and document["reason"] == "HostUnreachable" else None
        document = wait_until(unreachable, f"{staying} HostUnreachable through h1", timeout=15,
                              interval=0.2)
        assert document["host"] == "h3" and "HostUnreachable" in headline(document)
        table = three.hosts["h1"].domctl("get", staying).stdout.splitlines()
        assert table[0].split()[:2] == ["NAME", "HOST"], table  # the CLI's fleet table
        assert table[1].split()[:2] == [staying, "h3"] and "HostUnreachable" in table[1], table
        assert three.get("h1", moving)[moving]["host"] == "h2"
    finally:
        if not dead.running():
            dead.start()
    three.wait_running(staying, "h3", timeout=40)  # back with its host, where it stays
    assert three.placement(moving) == placed and running_pid(dead, moving) is None
    three.never_twice()


def test_a_host_cut_off_from_etcd_fences_before_another_host_starts_the_domain(
        three: Three) -> None:
    group = unique("cut")
    filler, moving = three.name("filler"), three.name("moving")
    three.publish(vm(filler, state="shutoff", priority=1, hosts=("h3",), group=group),
                  vm(moving, hosts=("h2", "h3"), group=group, failover=True))
    assert three.wait_running(moving)[0] == "h2"
    cut, other = three.hosts["h2"], three.hosts["h3"]
    before = (len(cut.events(moving)), len(other.events(moving)))
    for proxy in three.proxies["h2"]:
        proxy.cut()
    try:
        fenced = event_time(cut, moving, "stopped", "destroyed", before[0], timeout=TTL + 5)
        started = event_time(other, moving, "started", "booted", before[1], timeout=TTL + 15)
        assert fenced < started, (fenced, started)
        assert cut.logged("fencing: destroyed", domain=moving)
    finally:
        for proxy in three.proxies["h2"]:
            proxy.restore()
    wait_until(lambda: three.registered("h2") is not None, "h2 registered again", timeout=20,
               interval=0.2)
    three.wait_running(moving, "h3")
    cut.wait_for(lambda: cut.logged("fence lifted: the domains still placed here start again"),
                 "h2's fence lifted", moving)
    assert running_pid(cut, moving) is None  # placed elsewhere meanwhile: stays off here
    three.never_twice()


def test_the_fleet_works_on_with_the_etcd_leader_member_killed(three: Three) -> None:
    killed = three.etcd_leader()
    three.etcd.kill(killed)
    try:
        late = three.name("late")
        three.publish(vm(late))
        three.wait_running(late, timeout=40)
    finally:
        three.etcd.restart(killed)
    three.never_twice()


def test_the_scheduler_leader_s_controller_killed_another_host_leads_its_domains_stay(
        three: Three) -> None:
    leader = three.leader()
    assert leader is not None
    host = three.hosts[leader]
    others = tuple(sorted(set(three.hosts) - {leader}))
    running = {name: pid for name, pid in qemu_pidfiles(host.runtime).items()
               if running_pid(host, name)}
    assert running  # none with failover (the module docstring: the limit)
    assert not any(three.published[name].spec.placement.failover for name in running)
    try:
        host.kill(signal.SIGKILL)
        successor = wait_until(lambda: (now := three.leader()) not in (None, leader) and now,
                               "another scheduler leader", timeout=TTL + 5, interval=0.1)
        assert successor in others
    finally:
        if not host.running():
            host.start()
    newcomer = three.name("newcomer")
    three.publish(vm(newcomer, hosts=others))
    three.wait_running(newcomer)
    host.wait_for(lambda: host.logged("first full pass done; ready"), "the restarted passes")
    assert {name: running_pid(host, name) for name in running} == running  # adopted
    assert all(host.last_acted(name) == 0 for name in running)
    three.never_twice()


def test_drain_moves_a_host_s_domains_after_they_stopped_there_and_uncordon(
        three: Three) -> None:
    drained = three.hosts["h3"]
    placed = {name: three.placement(name) for name in drained.names}
    on_it = sorted(name for name, p in placed.items() if p is not None and p.host == "h3")
    assert on_it
    events = {(host, name): len(three.hosts[host].events(name))
              for host in three.hosts for name in on_it}
    done = three.admin("drain", "h3", "--timeout", "60", timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    moved = [name for name in on_it if f"{name}: moved to" in done.stdout]
    stays = [name for name in on_it if f"{name}: stays on h3" in done.stdout]
    assert sorted(moved + stays) == on_it, done.stdout
    assert moved and stays  # pinned ones (placement.hosts, a selector) stay
    for name in moved:  # each running one stopped on h3 before it started elsewhere
        if three.published[name].spec.state.value == "running":
            to, _pid = three.wait_running(name, timeout=40)
            stopped = event_time(drained, name, "stopped", "destroyed", events["h3", name])
            started = event_time(three.hosts[to], name, "started", "booted", events[to, name])
            assert stopped < started, name
    done = three.admin("uncordon", "h3")
    assert done.returncode == 0, done.stderr
    hosts = json.loads(three.admin("hosts", "-o", "json").stdout)
    assert {h["name"]: h["state"] for h in hosts}["h3"] == "Ready"
    three.never_twice()

