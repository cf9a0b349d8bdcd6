"""LxcDriver.stats: real containers, and the cgroup v2 files this v1 host does not have.

The real tests start busybox containers through the driver: one idle (CPU time and memory
from its cgroup), one on a bridge inside the test's network namespace (the lan of
tests/net/test_lxc_nics.py) that pings the bridge, so its veth shows the traffic both ways, as
the container sees it. The parsers of both cgroup versions and of /proc/net/dev run on files
written by the test, in the kernel's formats.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from reconcilers.errors import DriverError
from reconcilers.lxc import stats
from reconcilers.lxc.config import CgroupVersion
from reconcilers.lxc.driver import LxcDriver
from reconcilers.model import Nic, NicMode
from reconcilers.net.names import veth_name
from reconcilers.stats import DiskStats, DomainStats, NicStats, host_nics
from tests.net import test_lxc_nics
from tests.net.conftest import in_netns, netns, place, sh  # noqa: F401 (fixtures)
from tests.net.test_lxc_nics import BRIDGE, GW, Lan, nic_host  # noqa: F401 (fixtures)
from tests.support.domains import domain
from tests.support.lxc import LxcHost

lan = test_lxc_nics.lan  # the namespace, its bridge and a driver running there

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop ...
    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0
dv-1234abcd-0:  5000 40 0 0 0 0 0 0 7000 60 0 0 0 0 0 0
"""


async def _sampled(driver: LxcDriver, name: str, enough: str,
                   ready: Callable[[DomainStats], bool]) -> DomainStats:
    """driver.stats(name) until `ready(stats)` holds (20 s at most)."""
    figures = await driver.stats(name)
    for _ in range(200):
        if ready(figures):
            return figures
        await asyncio.sleep(0.1)
        figures = await driver.stats(name)
    pytest.fail(f"{enough} not seen in 20 s: {figures}")


@pytest.mark.lxc
async def test_a_running_container_reports_its_cgroup_cpu_and_memory(
        driver: LxcDriver, lxc_host: LxcHost) -> None:
    container = domain(lxc_host.name("stats"), "lxc")
    await driver.start(container, paused=False, token="test")
    figures = await _sampled(driver, container.name, "CPU time",
                             lambda f: f.cpu_seconds > 0)
    assert figures.rss_bytes > 0
    assert figures.balloon_bytes is None and figures.interfaces == ()
    await driver.destroy(container.name)
    with pytest.raises(DriverError, match="not running"):
        await driver.stats(container.name)


@pytest.mark.net
@pytest.mark.lxc
async def test_a_container_s_veth_counts_its_traffic_as_the_container_sees_it(lan: Lan) -> None:
    ping = ("ip", "address", "add", "10.77.0.9/24", "dev", "eth0", "&&",
            "ping", "-c", "3", "-W", "2", str(GW.ip))
    container = lan.container("ping", Nic(NicMode.BRIDGE, bridge=BRIDGE), init=ping)
    await lan.driver.start(container, paused=False, token="test")
    echoes = 3 * 98  # bytes of three echo requests or replies on the wire (no FCS)
    before = await _sampled(lan.driver, container.name, "three pings and their replies",
                            lambda f: bool(f.interfaces) and f.interfaces[0].tx_bytes >= echoes
                            and f.interfaces[0].rx_bytes >= echoes)
    host = json.loads(sh("ip", "-n", lan.netns, "-s", "-json", "link", "show", "dev",
                         veth_name(container.name, 0)).stdout)[0]["stats64"]
    after = await lan.driver.stats(container.name)
    [nic], [nic_after] = before.interfaces, after.interfaces
    assert nic.name == veth_name(container.name, 0)
    # the container's view: what it sent is what the host end received, and the other way
    assert nic.tx_bytes <= host["rx"]["bytes"] <= nic_after.tx_bytes
    assert nic.rx_packets <= host["tx"]["packets"] <= nic_after.rx_packets
    assert before.cpu_seconds > 0 and before.rss_bytes > 0


def test_proc_net_dev_turned_into_the_guest_s_view(tmp_path: Path) -> None:
    (tmp_path / "dev").write_text(NET_DEV)
    nics = host_nics(tmp_path / "dev")
    assert nics["dv-1234abcd-0"] == NicStats("dv-1234abcd-0", rx_bytes=7000, tx_bytes=5000,
                                             rx_packets=60, tx_packets=40)
    assert set(nics) == {"lo", "dv-1234abcd-0"}


def _tree(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_cgroup_v2_files(tmp_path: Path) -> None:
    group = "cgroup/lxc.payload.web"
    _tree(tmp_path, {
        "proc/42/cgroup": "0::/lxc.payload.web/init.scope\n",  # a systemd init: cut back
        f"{group}/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        f"{group}/memory.current": "7340032\n",
        f"{group}/io.stat": "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        "dev": NET_DEV.replace("1234abcd", "00000000"),
    })
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "254:0").symlink_to(tmp_path / "devices" / "vda")
    figures = stats.read("web", 42, CgroupVersion.V2, root=tmp_path / "cgroup",
                         proc=tmp_path / "proc", net_dev=tmp_path / "dev",
                         sys_block=tmp_path / "block")
    assert (figures.cpu_seconds, figures.rss_bytes) == (2.5, 7340032)
    assert figures.disks == (DiskStats("vda", 4096, 8192, 1, 2),)
    assert figures.interfaces == ()  # no veth of "web" in that table


def test_cgroup_v1_files(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "proc/42/cgroup": "4:memory:/lxc.payload.db\n3:cpu,cpuacct:/lxc.payload.db\n"
                          "7:blkio:/lxc.payload.db\n0::/\n",
        "cgroup/cpuacct/lxc.payload.db/cpuacct.usage": "1500000000\n",
        "cgroup/memory/lxc.payload.db/memory.usage_in_bytes": "1048576\n",
        "cgroup/blkio/lxc.payload.db/blkio.throttle.io_service_bytes":
            "8:0 Read 512\n8:0 Write 1024\n8:0 Sync 0\n8:0 Total 1536\nTotal 1536\n",
        "cgroup/blkio/lxc.payload.db/blkio.throttle.io_serviced":
            "8:0 Read 1\n8:0 Write 3\n8:0 Total 4\nTotal 4\n",
        "dev": NET_DEV.replace("dv-1234abcd-0", veth_name("db", 0)),
    })
    figures = stats.read("db", 42, CgroupVersion.V1, root=tmp_path / "cgroup",
                         proc=tmp_path / "proc", net_dev=tmp_path / "dev",
                         sys_block=tmp_path / "block")
    assert (figures.cpu_seconds, figures.rss_bytes) == (1.5, 1048576)
    assert figures.disks == (DiskStats("8:0", 512, 1024, 1, 3),)  # no /sys/dev/block entry
    assert [nic.name for nic in figures.interfaces] == [veth_name("db", 0)]
