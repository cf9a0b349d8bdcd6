"""Fleet mode's host side with real processes: `domctl publish`, then `domctl run --etcd` hosts on
a real etcd member, each reconciling exactly the domains placed on it (the tests write
`placements/` themselves: the scheduler is tested on its own), a move that never runs a domain
on two hosts, a host whose controller restarts keeping its lease and its domains, a host cut off
from etcd while alive that fences its failover domain before its lease can expire, and a lone
host whose own scheduler places a published domain on it. Cheap diskless tcg VMs: their
firmware idles and ignores ACPI, so a graceful stop ends in the destroy after their 2 s
shutdownTimeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.fleet.keys import Keys, Placement
from controller.protocol import parse_rfc3339
from tests.daemon.conftest import Controller, alive, controller_on
from tests.support.etcd import EtcdCluster, TcpProxy
from tests.support.fleet import (
    Sampler,
    base,
    etcd_call,
    event_time,
    host_args,
    place,
    publish,
    published_status,
    running_pid,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.qemu]


@pytest.fixture
def hosts(tmp_path: Path, etcd: EtcdCluster, keys: Keys) -> Iterator[tuple[Controller,
                                                                            Controller]]:
    endpoint = etcd.endpoints[0]
    with controller_on(base(tmp_path, "a"), host_args(endpoint, "host-a", keys)) as a, \
            controller_on(base(tmp_path, "b"), host_args(endpoint, "host-b", keys)) as b:
        yield a, b


def test_each_host_runs_its_domains_and_a_move_never_runs_one_twice(
        tmp_path: Path, etcd: EtcdCluster, keys: Keys,
        hosts: tuple[Controller, Controller]) -> None:
    a, b = hosts
    web, db, idle = (a.name("web"), b.name("db"), a.name("idle"))
    b.names |= {web, idle}
    place(etcd.endpoints, keys, web, Placement("host-a", 1))
    place(etcd.endpoints, keys, db, Placement("host-b", 1))
    publish(tmp_path / "published", etcd.endpoints, keys, web, db, idle)  # idle: placed nowhere

    a.wait_state(web, "running")
    b.wait_state(db, "running")
    assert running_pid(a, web) and running_pid(b, db)
    assert a.status(db) is None and b.status(web) is None  # never known there: absent
    assert a.status(idle) is None and b.status(idle) is None
    on_a = a.wait_for(lambda: (s := published_status(etcd.endpoints, keys, web)) and
                      s["state"] == "running" and s, "web's status in etcd", web)
    assert (on_a["host"], on_a["epoch"]) == ("host-a", 1)

    sampler = Sampler([a, b], [web])
    try:
        place(etcd.endpoints, keys, web, Placement("host-b", 2, previous="host-a"))
        b.wait_state(web, "running", timeout=40)
        stopped = event_time(a, web, "stopped", "destroyed")  # after its 2 s shutdownTimeout
        started = event_time(b, web, "started", "booted")
        assert stopped < started
    finally:
        sampler.stop()
    assert sampler.samples > 20 and sampler.twice == []
    released = a.status(web)
    assert released is not None and released["state"] == "shutoff"  # defined, stopped
    assert released["desired"] == "shutoff"
    assert running_pid(a, web) is None and running_pid(a, db) is None
    on_b = b.wait_for(lambda: (s := published_status(etcd.endpoints, keys, web)) and
                      s["host"] == "host-b" and s["state"] == "running" and s,
                      "web's status from host-b in etcd", web)
    assert on_b["epoch"] == 2
    assert running_pid(b, db)  # untouched by the move

    # a controller restart is no lost host: the lease is taken over, the domains adopted
    pids = (running_pid(b, web), running_pid(b, db))
    b.restart()
    b.wait_for(lambda: b.logged("host registration taken over from the previous run"),
               "host-b's lease taken over", web)
    b.wait_for(lambda: b.logged("first full pass done; ready"), "host-b's first passes", web)
    assert b.last_acted(web) == 0 and b.last_acted(db) == 0  # adopted, left alone
    assert (running_pid(b, web), running_pid(b, db)) == pids


def test_a_host_cut_off_from_etcd_fences_its_failover_domain_before_its_lease_expires(
        tmp_path: Path, etcd: EtcdCluster, keys: Keys, proxy: TcpProxy) -> None:
    ttl = 6  # fenced at 4 s after the last confirmed renewal (margin 2 s)
    with controller_on(base(tmp_path, "c"), host_args(proxy.endpoint, "host-c", keys, ttl)) as c:
        moving, staying = c.name("moving"), c.name("staying")
        place(etcd.endpoints, keys, moving, Placement("host-c", 1))
        place(etcd.endpoints, keys, staying, Placement("host-c", 1))
        publish(tmp_path / "published", etcd.endpoints, keys, moving, staying, failover=(moving,))
        c.wait_state(moving, "running")
        kept = c.wait_state(staying, "running")["pid"]
        before = len(c.events(moving))

        proxy.cut()
        cut_at = time.time()
        host_key = keys.host("host-c")
        gone_at = wait_until(lambda: etcd_call(etcd.endpoints, "get", host_key) is None
                             and time.time(), "host-c's lease to expire", timeout=ttl + 5,
                             interval=0.05)
        destroyed = c.wait_event(moving, "stopped", "destroyed", after=before)
        assert parse_rfc3339(destroyed["time"]) < gone_at, (destroyed, gone_at - cut_at)
        assert c.logged("fencing: destroyed", domain=moving)
        assert running_pid(c, moving) is None
        assert running_pid(c, staying) == kept and alive(kept)  # no failover: kept running

        proxy.restore()
        wait_until(lambda: etcd_call(etcd.endpoints, "get", host_key) is not None,
                   "host-c registered again", timeout=15, interval=0.1)
        again = c.wait_status(moving, "running again (still placed here)",
                              lambda s: s["state"] == "running" and s["pid"] is not None,
                              timeout=30)
        assert c.logged("fence lifted: the domains still placed here start again")
        assert again["pid"] != kept and running_pid(c, staying) == kept


def test_a_host_with_its_scheduler_runs_what_the_fleet_places(tmp_path: Path,
                                                             etcd: EtcdCluster,
                                                             keys: Keys) -> None:
    """The wiring: `domctl run --etcd` stands in the scheduler's election by default, so a lone
    host leads and places a published domain on itself."""
    args = host_args(etcd.endpoints[0], "host-s", keys, scheduler=True)
    with controller_on(base(tmp_path, "s"), args) as host:
        solo = host.name("solo")
        publish(tmp_path / "published", etcd.endpoints, keys, solo)
        host.wait_state(solo, "running")
        placed = etcd_call(etcd.endpoints, "get", keys.placement(solo))
        assert placed is not None
        assert Placement.decode(placed.key, placed.value) == Placement("host-s", 1)
        assert host.logged("scheduler leader elected")
