"""What the fleet tests with real `domctl run --etcd` hosts share (tests/fleet/test_host.py,
test_three_hosts.py): etcd calls from synchronous tests, `domctl publish` of test domains, a
host's `run` flags and directory, and the sampler behind the fleet's one invariant: no domain
ever runs on two hosts at once.

A host runs a domain when the process table says so: its qemu pidfile names a live process,
or its status file says running with a live pid. A dead host's files (its controller and qemu
killed) stay behind saying running; they count for nothing, as they should.
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from controller.fleet.keys import Keys, Placement
from controller.fleet.store import EtcdStore
from controller.protocol import parse_rfc3339
from reconcilers.model import Domain
from reconcilers.model import Placement as Spec
from tests.daemon.conftest import DOMCTL, Controller, alive
from tests.support import domains
from tests.support.cleanup import qemu_pidfiles

SAMPLE = 0.05  # seconds between two looks of the sampler


def etcd_call(endpoints: Sequence[str], call: str, *args: Any) -> Any:
    """One EtcdStore call from a synchronous test."""
    async def once() -> Any:
        store = EtcdStore(list(endpoints))
        try:
            return await getattr(store, call)(*args)
        finally:
            await store.close()
    return asyncio.run(once())


def place(endpoints: Sequence[str], keys: Keys, name: str, placement: Placement) -> None:
    etcd_call(endpoints, "put", keys.placement(name), placement.encode())


def placement_of(endpoints: Sequence[str], keys: Keys, name: str) -> Placement | None:
    kv = etcd_call(endpoints, "get", keys.placement(name))
    return Placement.decode(kv.key, kv.value) if kv is not None else None


def published_status(endpoints: Sequence[str], keys: Keys, name: str) -> dict[str, Any] | None:
    kv = etcd_call(endpoints, "get", keys.status(name))
    return json.loads(kv.value) if kv is not None else None


def publish_domains(directory: Path, endpoints: Sequence[str], keys: Keys,
                    *published: Domain) -> None:
    """`domctl publish` of `directory` with a file for each of `published` added (the files
    already there stay published)."""
    directory.mkdir(exist_ok=True)
    for domain in published:
        (directory / f"{domain.name}.yaml").write_text(domains.manifest(domain))
    done = subprocess.run([str(DOMCTL), "publish", "--manifests", str(directory), "--etcd",
                           ",".join(endpoints), "--prefix", keys.prefix],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "published at revision" in done.stdout, done.stdout


def publish(directory: Path, endpoints: Sequence[str], keys: Keys, *names: str,
            failover: tuple[str, ...] = ()) -> None:
    """A cheap diskless tcg VM for each name (`failover`: those with placement.failover)."""
    publish_domains(directory, endpoints, keys, *(domains.domain(
        name, uuid=None, placement=Spec(failover=name in failover)) for name in names))


def host_args(endpoint: str, host: str, keys: Keys, ttl: int = 10,
              scheduler: bool = False) -> tuple[str, ...]:
    """`run`'s fleet flags; without a scheduler unless asked (test_host.py places the domains
    itself)."""
    return ("--etcd", endpoint, "--host", host, "--prefix", keys.prefix,
            "--host-ttl", str(ttl), *(() if scheduler else ("--no-scheduler",)))


def base(directory: Path, host: str) -> Path:
    """A host's own directory (its state, runtime and log dirs go under or beside it)."""
    (directory / host).mkdir()
    return directory / host


def running_pid(host: Controller, name: str) -> int | None:
    """The pid of `name`'s qemu on `host`, when one runs."""
    pid = qemu_pidfiles(host.runtime).get(name)
    return pid if alive(pid) else None


def running_here(host: Controller, names: Collection[str] | None = None) -> set[str]:
    """The domains (of `names`; None: any) that run on `host` now (the module docstring)."""
    found = {name for name, pid in qemu_pidfiles(host.runtime).items() if alive(pid)}
    files = ([host.state / "status" / f"{name}.json" for name in names] if names is not None
             else list((host.state / "status").glob("*.json")))
    for path in files:
        status = host.status(path.stem) if path.exists() else None
        if status is not None and status.get("state") == "running" and alive(status.get("pid")):
            found.add(path.stem)
    return found if names is None else found & set(names)


class Sampler:
    """Every 50 ms, on a thread of its own until stopped: which domains (of `names`; None:
    every one) run on more than one of `hosts` at once. `twice` lists each such look."""

    def __init__(self, hosts: Sequence[Controller], names: Collection[str] | None = None) -> None:
        self.hosts, self.names = hosts, names
        self.samples = 0
        self.twice: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE):
            counts = collections.Counter(name for host in self.hosts
                                         for name in running_here(host, self.names))
            doubles = {name: count for name, count in counts.items() if count > 1}
            if doubles:
                self.twice.append((time.time(), doubles))
            self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def event_time(host: Controller, name: str, event: str, detail: str, after: int = 0,
               timeout: float = 30.0) -> float:
    """The wall time of `name`'s first `event/detail` on `host` from index `after` on."""
    record = host.wait_event(name, event, detail, after=after, timeout=timeout)
    return parse_rfc3339(record["time"])
