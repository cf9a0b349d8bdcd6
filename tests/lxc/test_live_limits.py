"""Real containers: memory and cpu limits applied to a running container's cgroup."""

from __future__ import annotations

import dataclasses

import pytest

from reconcilers.lxc.config import CgroupVersion
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.host import cgroup_version
from reconcilers.lxc.tools import LxcTools
from reconcilers.model import CpuTune
from tests.support.domains import MiB, domain
from tests.support.lxc import LxcHost

pytestmark = pytest.mark.lxc

V1 = cgroup_version() is CgroupVersion.V1
MEMORY_KEY = "memory.limit_in_bytes" if V1 else "memory.max"


async def test_memory_and_cpu_change_live(driver: LxcDriver, lxc_host: LxcHost,
                                          tools: LxcTools) -> None:
    name = lxc_host.name("limits")
    container = domain(name, "lxc", cputune=CpuTune(shares=512))
    await driver.start(container, paused=False, token="test")
    assert int(await tools.get_cgroup(name, MEMORY_KEY)) == 64 * MiB
    new = dataclasses.replace(container.spec, memory=96 * MiB,
                              cputune=CpuTune(shares=2048, quota=50000, period=100000))
    await driver.apply_live(name, container.spec, new)
    assert int(await tools.get_cgroup(name, MEMORY_KEY)) == 96 * MiB
    # what the container itself sees in its cgroup file
    inside = await tools.attach(name, ["/bin/cat", f"/sys/fs/cgroup/memory/{MEMORY_KEY}"]
                                if V1 else ["/bin/cat", f"/sys/fs/cgroup/{MEMORY_KEY}"])
    assert int(inside.stdout) == 96 * MiB
    if V1:
        assert await tools.get_cgroup(name, "cpu.shares") == "2048"
        assert await tools.get_cgroup(name, "cpu.cfs_quota_us") == "50000"
    else:
        assert await tools.get_cgroup(name, "cpu.max") == "50000 100000"
