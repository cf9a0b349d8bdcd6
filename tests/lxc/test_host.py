"""Host probing (CPUs, reachable directories), the busybox rootfs cache, validation: no
container needed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconcilers.driver import Driver, DriverContext
from reconcilers.errors import HostValidationError
from reconcilers.lxc import host, rootfs
from reconcilers.lxc.config import CgroupVersion
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.host import apparmor_enabled, cgroup_version
from reconcilers.model import CpuTune, Domain, DriverName, LxcSpec, Mount, VcpuPin
from tests.support.cleanup import scratch_dir, sweep
from tests.support.domains import domain


def test_cgroup_version(tmp_path: Path) -> None:
    assert cgroup_version(tmp_path) is CgroupVersion.V1
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert cgroup_version(tmp_path) is CgroupVersion.V2


@pytest.mark.parametrize("content, enabled", [("Y\n", True), ("N\n", False), (None, False)])
def test_apparmor(tmp_path: Path, content: str | None, enabled: bool) -> None:
    flag = tmp_path / "enabled"
    if content is not None:
        flag.write_text(content)
    assert apparmor_enabled(flag) is enabled


@pytest.mark.skipif(not rootfs.HOST_BUSYBOX.is_file(), reason="busybox-static not installed")
def test_rootfs_built_once_and_rebuilt_when_corrupt(tmp_path: Path) -> None:
    tree = rootfs.busybox_rootfs(tmp_path)
    assert (tree / "sbin" / "init").resolve() == (tree / "bin" / "busybox").resolve()
    assert os.readlink(tree / "bin" / "sh") == "busybox"
    inode = (tree / "bin" / "busybox").stat().st_ino
    assert rootfs.busybox_rootfs(tmp_path) == tree
    assert (tree / "bin" / "busybox").stat().st_ino == inode  # cached, not rebuilt
    (tree / "bin" / "busybox").write_bytes(b"truncated")
    rebuilt = rootfs.busybox_rootfs(tmp_path)
    assert rebuilt == tree
    assert (rebuilt / "bin" / "busybox").read_bytes() == rootfs.HOST_BUSYBOX.read_bytes()
    # the broken tree is set aside (a running container may have it mounted), no staging left
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[-1] == tree.name and len(names) == 2 and ".broken." in names[0]


def test_rootfs_without_busybox_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(rootfs.RootfsError, match="busybox-static"):
        rootfs.busybox_rootfs(tmp_path, busybox=tmp_path / "missing")


@pytest.fixture
def offline_driver(tmp_path: Path) -> LxcDriver:
    context = DriverContext(runtime_dir=tmp_path, state_dir=tmp_path, log_dir=tmp_path,
                            on_event=lambda event: None)
    return LxcDriver(context)


@pytest.mark.parametrize("domain, field", [
    (domain("v", "lxc", lxc=LxcSpec(rootfs="/no/such/rootfs")), "spec.lxc.rootfs"),
    (domain("v", "lxc", lxc=LxcSpec(rootfs="/", init=("/no/such/init",))), "spec.lxc.init"),
    (domain("v", "lxc", lxc=LxcSpec(mounts=(Mount("/no/such/source", "/mnt"),))),
     "spec.lxc.mounts[0].source"),
    (domain("v", "lxc", cputune=CpuTune(vcpupin=(VcpuPin(0, "0"),))), "spec.cputune"),
    (domain("v", "lxc", lxc=LxcSpec(env=(("BAD", "a\nb"),), privileged=True)),
     "spec.lxc.env.BAD"),
    (domain("v", "lxc", vcpus=4096, lxc=LxcSpec(privileged=True)), "spec.vcpus"),
    (domain("v", "lxc", lxc=LxcSpec(image="/no/such/rootfs.tar.xz")), "spec.lxc.image"),
    # unprivileged, on a state dir under pytest's 0700 directories: its root cannot reach it
    (domain("v", "lxc"), "spec.lxc.privileged"),
])
async def test_validate_names_the_field(offline_driver: LxcDriver, domain: Domain,
                                        field: str) -> None:
    with pytest.raises(HostValidationError) as refused:
        await offline_driver.validate(domain)
    assert refused.value.field == field


@pytest.mark.lxc
async def test_capabilities(offline_driver: LxcDriver) -> None:
    caps = await offline_driver.capabilities()
    assert (caps.driver, caps.available) == (DriverName.LXC, True)
    assert caps.version and caps.details["cgroup"] == cgroup_version().value
    assert await offline_driver.capabilities() is caps  # probed once


def test_implements_the_driver_protocol(offline_driver: LxcDriver) -> None:
    assert isinstance(offline_driver, Driver)
    assert offline_driver.name is DriverName.LXC


def test_online_cpus(tmp_path: Path) -> None:
    online = tmp_path / "online"
    online.write_text("0-3,6,8-9\n")
    assert host.online_cpus(online) == (0, 1, 2, 3, 6, 8, 9)
    assert host.online_cpus(tmp_path / "missing") == ()


@pytest.fixture
def searchable() -> Iterator[Path]:
    """A new directory every id may search (pytest's own are 0700)."""
    base = scratch_dir("search", 0o711)
    yield base
    sweep(remove=[base])


def test_unsearchable_directories(searchable: Path) -> None:
    """What an unprivileged container's root (a mapped id) may not search, by mode bits."""
    top = searchable / "top"
    (top / "mid").mkdir(parents=True)
    top.chmod(0o700)
    target = top / "mid" / "source"
    uid, gid = 100000, 100000
    assert host.unsearchable(target, uid, gid) == top
    top.chmod(0o711)
    assert host.unsearchable(target, uid, gid) is None
    top.chmod(0o750)
    os.chown(top, 0, gid)
    assert host.unsearchable(target, uid, gid) is None  # by its group
    os.chown(top, uid, 0)
    top.chmod(0o700)
    assert host.unsearchable(target, uid, gid) is None  # by its owner
    assert host.unsearchable(top / "missing" / "x", uid, gid) is None  # the driver makes it


def test_only_empty_leftover_cgroups_are_removed(tmp_path: Path) -> None:
    for hierarchy in ("memory", "cpu"):
        (tmp_path / hierarchy / "lxc.monitor.web").mkdir(parents=True)
        (tmp_path / hierarchy / "lxc.payload.web-1").mkdir(parents=True)
    busy = tmp_path / "memory" / "lxc.payload.web"
    (busy / "child").mkdir(parents=True)  # rmdir of a cgroup with children fails: kept
    (tmp_path / "memory" / "lxc.monitor.webber").mkdir()  # another container: untouched
    host.remove_empty_cgroups("web", tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*/lxc.*")) == ["lxc.monitor.webber",
                                                                 "lxc.payload.web"]
