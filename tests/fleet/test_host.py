"""Fleet mode's host side with real processes: `domctl publish`, then `domctl run --etcd` hosts on
a real etcd member, each reconciling exactly the domains placed on it (the tests write
`placements/` themselves: the scheduler is tested on its own), a move that never runs a domain
on two hosts, a host whose controller restarts keeping its lease and its domains, a host cut off
from etcd while alive that fences its failover domain before its lease can expire, and a lone
host whose own scheduler places a published domain on it. Cheap diskless tcg VMs: their
firmware idles and ignores ACPI, so a graceful stop ends in the destroy after their 2 s
shutdownTimeout."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.fleet.keys import Keys, Placement
from controller.fleet.store import EtcdStore
from controller.protocol import parse_rfc3339
from reconcilers.model import Placement as Spec
from tests.daemon.conftest import DOMCTL, Controller, alive, controller_on
from tests.support import domains
from tests.support.cleanup import qemu_pidfiles
from tests.support.etcd import EtcdCluster, TcpProxy
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.qemu]


def etcd_call(endpoints: list[str], call: str, *args: Any) -> Any:
    """One EtcdStore call from a synchronous test."""
    async def once() -> Any:
        store = EtcdStore(endpoints)
        try:
            return await getattr(store, call)(*args)
        finally:
            await store.close()
    return asyncio.run(once())


def place(etcd: EtcdCluster, keys: Keys, name: str, placement: Placement) -> None:
    etcd_call(etcd.endpoints, "put", keys.placement(name), placement.encode())


def published_status(etcd: EtcdCluster, keys: Keys, name: str) -> dict[str, Any] | None:
    kv = etcd_call(etcd.endpoints, "get", keys.status(name))
    return json.loads(kv.value) if kv is not None else None


def publish(directory: Path, etcd: EtcdCluster, keys: Keys, *names: str,
            failover: tuple[str, ...] = ()) -> None:
    directory.mkdir(exist_ok=True)
    for name in names:
        spec = Spec(failover=name in failover)
        (directory / f"{name}.yaml").write_text(domains.manifest(domains.domain(
            name, uuid=None, placement=spec)))
    done = subprocess.run([str(DOMCTL), "publish", "--manifests", str(directory), "--etcd",
                           ",".join(etcd.endpoints), "--prefix", keys.prefix],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "published at revision" in done.stdout, done.stdout


def host_args(endpoint: str, host: str, keys: Keys, ttl: int = 10,
              scheduler: bool = False) -> tuple[str, ...]:
    """Without a scheduler unless asked: the tests place the domains themselves."""
    return ("--etcd", endpoint, "--host", host, "--prefix", keys.prefix,
            "--host-ttl", str(ttl), *(() if scheduler else ("--no-scheduler",)))


def base(tmp_path: Path, host: str) -> Path:
    """A host's own directory (its state, runtime and log dirs go under or beside it)."""
    (tmp_path / host).mkdir()
    return tmp_path / host


@pytest.fixture
def hosts(tmp_path: Path, etcd: EtcdCluster, keys: Keys) -> Iterator[tuple[Controller,
                                                                            Controller]]:
    endpoint = etcd.endpoints[0]
    with controller_on(base(tmp_path, "a"), host_args(endpoint, "host-a", keys)) as a, \
            controller_on(base(tmp_path, "b"), host_args(endpoint, "host-b", keys)) as b:
        yield a, b


def running_pid(host: Controller, name: str) -> int | None:
    """The pid of `name`'s qemu on `host`, when one runs."""
    pid = qemu_pidfiles(host.runtime).get(name)
    return pid if alive(pid) else None


class Sampler:
    """Every 50 ms: does a domain run on both hosts at once (by their qemu pidfiles and their
    status files)? Runs on a thread of its own until stopped."""

    def __init__(self, name: str, *hosts: Controller) -> None:
        self.name, self.hosts = name, hosts
        self.samples, self.twice = 0, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            pids = [running_pid(host, self.name) for host in self.hosts]
            states = [(host.status(self.name) or {}).get("state") for host in self.hosts]
            if sum(pid is not None for pid in pids) > 1 or states.count("running") > 1:
                self.twice.append((time.time(), pids, states))
            self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def event_time(host: Controller, name: str, event: str, detail: str) -> float:
    record = host.wait_event(name, event, detail)
    return parse_rfc3339(record["time"])


def test_each_host_runs_its_domains_and_a_move_never_runs_one_twice(
        tmp_path: Path, etcd: EtcdCluster, keys: Keys,
        hosts: tuple[Controller, Controller]) -> None:
    a, b = hosts
    web, db, idle = (a.name("web"), b.name("db"), a.name("idle"))
    b.names |= {web, idle}
    place(etcd, keys, web, Placement("host-a", 1))
    place(etcd, keys, db, Placement("host-b", 1))
    publish(tmp_path / "published", etcd, keys, web, db, idle)  # idle: placed nowhere

    a.wait_state(web, "running")
    b.wait_state(db, "running")
    assert running_pid(a, web) and running_pid(b, db)
    assert a.status(db) is None and b.status(web) is None  # never known there: absent
    assert a.status(idle) is None and b.status(idle) is None
    on_a = a.wait_for(lambda: (s := published_status(etcd, keys, web)) and
                      s["state"] == "running" and s, "web's status in etcd", web)
    assert (on_a["host"], on_a["epoch"]) == ("host-a", 1)

    sampler = Sampler(web, a, b)
    try:
        place(etcd, keys, web, Placement("host-b", 2, previous="host-a"))
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
    on_b = b.wait_for(lambda: (s := published_status(etcd, keys, web)) and
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


@pytest.fixture
def proxy(etcd: EtcdCluster) -> Iterator[TcpProxy]:
    between = TcpProxy(etcd.endpoints[0])
    try:
        yield between
    finally:
        between.close()


def test_a_host_cut_off_from_etcd_fences_its_failover_domain_before_its_lease_expires(
        tmp_path: Path, etcd: EtcdCluster, keys: Keys, proxy: TcpProxy) -> None:
    ttl = 6  # fenced at 4 s after the last confirmed renewal (margin 2 s)
    with controller_on(base(tmp_path, "c"), host_args(proxy.endpoint, "host-c", keys, ttl)) as c:
        moving, staying = c.name("moving"), c.name("staying")
        place(etcd, keys, moving, Placement("host-c", 1))
        place(etcd, keys, staying, Placement("host-c", 1))
        publish(tmp_path / "published", etcd, keys, moving, staying, failover=(moving,))
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
        publish(tmp_path / "published", etcd, keys, solo)
        host.wait_state(solo, "running")
        placed = etcd_call(etcd.endpoints, "get", keys.placement(solo))
        assert placed is not None
        assert Placement.decode(placed.key, placed.value) == Placement("host-s", 1)
        assert host.logged("scheduler leader elected")
