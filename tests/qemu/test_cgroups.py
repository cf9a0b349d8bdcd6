"""cgroup limits for v1 and v2, and the v2 layout on a stand-in tree (this host runs v1).

The real v1 hierarchy is exercised by the lifecycle and live tests (created before `cont`,
limits visible, removed on destroy). The kernel's v2 cannot be mounted with controllers here
(they are bound to v1), so v2 is checked on a directory tree that mimics cgroupfs.
"""

from __future__ import annotations

from pathlib import Path

from reconcilers.model import CpuTune
from reconcilers.qemu.cgroups import (
    MEMORY_OVERHEAD,
    PIDS_MAX,
    CgroupVersion,
    DomainCgroup,
    limits,
    live_writes,
    shares_to_weight,
)
from tests.support.domains import domain

SPEC = domain(memory="128Mi", cputune=CpuTune(shares=2048, quota=50000, period=100000)).spec


def test_v1_limits() -> None:
    assert limits(SPEC, CgroupVersion.V1) == {
        "memory/memory.limit_in_bytes": str((128 << 20) + MEMORY_OVERHEAD),
        "pids/pids.max": str(PIDS_MAX), "cpu/cpu.shares": "2048",
        "cpu/cpu.cfs_period_us": "100000", "cpu/cpu.cfs_quota_us": "50000"}


def test_v2_limits() -> None:
    assert limits(SPEC, CgroupVersion.V2) == {
        "/memory.max": str((128 << 20) + MEMORY_OVERHEAD), "/pids.max": str(PIDS_MAX),
        "/cpu.weight": "79", "/cpu.max": "50000 100000"}
    unlimited = domain(cputune=CpuTune(quota=-1)).spec
    assert limits(unlimited, CgroupVersion.V2)["/cpu.max"] == "max 100000"
    assert (shares_to_weight(2), shares_to_weight(1024), shares_to_weight(262144)) == (1, 39,
                                                                                       10000)


def test_v2_layout_on_a_stand_in_tree(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids")
    cgroup = DomainCgroup("vm", "domctl.qemu", root=tmp_path)
    assert cgroup.version is CgroupVersion.V2
    cgroup.create()
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (tmp_path / "domctl.qemu" / "cgroup.subtree_control").read_text() == \
        "+cpu +memory +pids"
    cgroup.attach(4242)
    cgroup.write(limits(SPEC, cgroup.version))
    directory = tmp_path / "domctl.qemu" / "vm"
    assert (directory / "cgroup.procs").read_text() == "4242"
    assert (directory / "cpu.max").read_text() == "50000 100000"
    assert cgroup.path("/memory.max") == directory / "memory.max"


def test_v1_layout(tmp_path: Path) -> None:
    cgroup = DomainCgroup("vm", "domctl.qemu", root=tmp_path)
    assert cgroup.version is CgroupVersion.V1
    assert cgroup.directories == {c: tmp_path / c / "domctl.qemu" / "vm"
                                  for c in ("cpu", "memory", "pids")}
    assert not any(d.exists() for d in cgroup.directories.values())
    assert cgroup.remove()  # nothing to remove is success


def test_live_writes_change_and_unset_shares_on_v1_and_v2(tmp_path: Path) -> None:
    plain = domain(memory="128Mi").spec
    shared = domain(memory="128Mi", cputune=CpuTune(shares=512)).spec
    assert live_writes(plain, shared, CgroupVersion.V1) == {"cpu/cpu.shares": "512"}
    assert live_writes(shared, plain, CgroupVersion.V1) == {"cpu/cpu.shares": "1024"}
    assert live_writes(plain, shared, CgroupVersion.V2) == {"/cpu.weight": "20"}
    assert live_writes(shared, plain, CgroupVersion.V2) == {"/cpu.weight": "100"}
    assert live_writes(SPEC, plain, CgroupVersion.V2) == {"/cpu.weight": "100",
                                                          "/cpu.max": "max 100000"}
    assert live_writes(SPEC, plain, CgroupVersion.V1) == {
        "cpu/cpu.shares": "1024", "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    assert live_writes(shared, shared, CgroupVersion.V1) == {}
    # written through the v2 layout of a stand-in tree, as QemuDriver.apply_live does
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids")
    cgroup = DomainCgroup("vm", "domctl.qemu", root=tmp_path)
    cgroup.create()
    cgroup.write(limits(shared, cgroup.version))
    weight = tmp_path / "domctl.qemu" / "vm" / "cpu.weight"
    assert weight.read_text() == "20"
    cgroup.write(live_writes(shared, plain, cgroup.version))
    assert weight.read_text() == "100"
