"""controller/service/fleet_admin.py: `domctl hosts`, `cordon`, `uncordon`, `drain` through the
CLI's parser against real etcd and a running scheduler, the fleet view of the domains, and the
hosts table as a pure function."""

from __future__ import annotations

import asyncio
import json
import sys
from types import MappingProxyType

import pytest

from controller.fleet.keys import Cordon, HostRecord, Placement
from controller.fleet.scheduler import FleetState
from controller.service.fleet_admin import hosts_table
from tests.fleet.conftest import Fleet
from tests.support.domains import domain

# the CLI's parser with these commands as controller/service/entry.py registers them
DOMCTL = """import sys
from controller.cli.main import LAZY, Lazy, main
sys.exit(main(sys.argv[1:], tuple(Lazy(name, name, "controller.service.fleet_admin:configure_"
                                       + name) for name in ("hosts", "cordon", "uncordon",
                                                            "drain")) + LAZY))"""


async def domctl(fleet: Fleet, *argv: str) -> tuple[int, str, str]:
    """`domctl ARGV --etcd ... --prefix ...` as a process of its own (the scheduler of this
    test logs on this one's stdout)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DOMCTL, *argv, "--etcd", ",".join(fleet.store.endpoints),
        "--prefix", fleet.keys.prefix, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return int(process.returncode or 0), out.decode(), err.decode()


@pytest.mark.etcd
async def test_cordon_keeps_new_domains_off_and_drain_moves_everything(
        fleet: Fleet) -> None:
    await fleet.host("h1", memory_mib=8192, rack="r1")
    await fleet.host("h2", memory_mib=4096)
    await fleet.publish(domain("a", memory="1Gi", uuid=None), domain("b", memory="1Gi", uuid=None))
    await fleet.scheduler("h1")
    await fleet.until(lambda s: {p.host for p in s.placements.values()} == {"h1"} and
                      len(s.placements) == 2, "a and b on h1 (the most free memory)")

    assert (await domctl(fleet, "cordon", "h1"))[:2] == (0, "host h1 cordoned\n")
    await fleet.publish(*(domain(n, memory="1Gi", uuid=None) for n in "abc"))
    await fleet.until(lambda s: "c" in s.placements, "c placed")
    code, out, _ = await domctl(fleet, "hosts", "-o", "json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert (rows["h1"]["state"], rows["h1"]["freeMiB"], rows["h1"]["domains"]) == (
        "Ready,Cordoned", 6144, ["a", "b"])
    assert (rows["h2"]["state"], rows["h2"]["freeMiB"], rows["h2"]["domains"]) == (
        "Ready", 3072, ["c"])

    code, out, _ = await domctl(fleet, "drain", "h1", "--timeout", "10")
    assert code == 0, out
    assert out.splitlines() == ["host h1 cordoned, draining", "a: moved to h2 (epoch 2)",
                                "b: moved to h2 (epoch 2)", "host h1 drained"]
    state = await FleetState.read(fleet.store, fleet.keys)
    assert state.placements["a"] == Placement("h2", 2, previous="h1")
    code, out, _ = await domctl(fleet, "hosts")
    assert out.splitlines() == [
        "NAME   STATE            CPUS   MEMORY   FREE     DOMAINS   LABELS",
        "h1     Ready,Draining   4      8192Mi   8192Mi   0         rack=r1",
        "h2     Ready            4      4096Mi   1024Mi   3         -"]

    assert (await domctl(fleet, "uncordon", "h1"))[:2] == (0, "host h1 uncordoned\n")
    code, _, err = await domctl(fleet, "cordon", "h9")
    assert (code, err) == (1, "error: no host 'h9' in the fleet (no lease, cordon or "
                              "placement names it)\n")


def test_hosts_table_joins_leases_cordons_and_placements() -> None:
    state = FleetState(
        hosts={"h1": HostRecord("h1", 8, 4096, ("qemu",), MappingProxyType({"zone": "a"}))},
        cordons={"h1": Cordon(False, "t"), "gone": Cordon(True, "t")},
        placements={"x": Placement("h1", 1), "y": Placement("h1", 3), "z": Placement("lost", 2)},
        schedulings={}, revisions={})
    assert hosts_table(state, {"x": 1024, "y": 512, "z": 64}) == [
        {"name": "gone", "state": "NotReady,Draining", "cpus": None, "memoryMiB": None,
         "freeMiB": None, "domains": [], "labels": {}},
        {"name": "h1", "state": "Ready,Cordoned", "cpus": 8, "memoryMiB": 4096,
         "freeMiB": 2560, "domains": ["x", "y"], "labels": {"zone": "a"}},
        {"name": "lost", "state": "NotReady", "cpus": None, "memoryMiB": None,
         "freeMiB": None, "domains": ["z"], "labels": {}}]
