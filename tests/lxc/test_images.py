"""Real containers from a rootfs tarball, unprivileged: the image's init and files, root
inside mapped on the host, the pids limit and the cpuset (live too), bind mounts and their
owners, adoption by the next controller, the rootfs kept across restarts, Delete on release."""

from __future__ import annotations

import dataclasses
import os
import tarfile
from pathlib import Path

import pytest

from reconcilers.driver import DriverContext
from reconcilers.lxc import host
from reconcilers.lxc.config import cpuset
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.files import ContainerFiles
from reconcilers.lxc.tools import LxcTools
from reconcilers.model import DeletePolicy, LxcSpec, Mount, State
from tests.support.domains import domain
from tests.support.lxc import LxcHost
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.lxc

MARKER = "domctl image: booted from the tarball"
INITTAB = f"::sysinit:/bin/echo '{MARKER}'\n"


def busybox_image(lxc_host: LxcHost, path: Path) -> Path:
    """A rootfs tarball (tar.xz) of the session's busybox tree, with a marker file and an init
    that prints MARKER."""
    (tree,) = (lxc_host.state_dir / "lxc-rootfs").glob("busybox-" + "?" * 16)  # host-owned

    def own_inittab(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if info.name in ("./etc/inittab", "./marker") else info

    extra = path.parent / "extra"
    (extra / "etc").mkdir(parents=True)
    (extra / "etc" / "inittab").write_text(INITTAB)
    (extra / "marker").write_text("from the image\n")
    with tarfile.open(path, "w:xz", preset=0) as archive:
        archive.add(tree, arcname=".", filter=own_inittab)
        archive.add(extra / "etc" / "inittab", arcname="./etc/inittab")
        archive.add(extra / "marker", arcname="./marker")
    return path


def host_uid(pid: int) -> int:
    """The real uid of `pid` as the host sees it (/proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


async def test_a_container_from_an_image(driver: LxcDriver, lxc_host: LxcHost, tools: LxcTools,
                                         context: DriverContext, tmp_path: Path) -> None:
    name = lxc_host.name("image")
    facts = host.probe_facts()
    assert facts.idmap is not None, facts.idmap_problem
    vcpus = min(2, len(facts.cpus))
    # a bind mount's source where the container's root can reach it: one file of the host's
    # root (nobody inside), one directory of the container's root (writable inside)
    shared = lxc_host.state_dir.parent / f"share-{name}"
    (shared / "ours").mkdir(parents=True)
    (shared / "readme").write_text("host root's\n")
    shared.chmod(0o755)
    os.chown(shared / "ours", facts.idmap.uid, facts.idmap.gid)
    tarball = busybox_image(lxc_host, tmp_path / "rootfs.tar.xz")
    spec = LxcSpec(image=str(tarball), delete_policy=DeletePolicy.DELETE, pids_limit=40,
                   mounts=(Mount(str(shared), "/mnt/shared"),))
    container = domain(name, "lxc", vcpus=vcpus, lxc=spec)
    live = await driver.start(container, paused=False, token="test")
    assert live.pid is not None and live.record is not None and not live.message
    console = lxc_host.log_dir / f"{name}.log"
    await async_wait_until(lambda: MARKER in console.read_text().splitlines(), "the marker",
                           explain=console.read_text)

    async def inside(*argv: str) -> str:
        return (await tools.attach(name, list(argv))).stdout

    assert await inside("/bin/cat", "/marker") == "from the image\n"
    assert (await inside("/bin/id", "-u")).strip() == "0"
    assert host_uid(live.pid) == facts.idmap.uid >= 100000

    assert await tools.get_cgroup(name, "pids.max") == "40"
    assert await tools.get_cgroup(name, "cpuset.cpus") == cpuset(vcpus, facts.cpus)
    unlimited = dataclasses.replace(container.spec, vcpus=1,
                                    lxc=dataclasses.replace(spec, pids_limit=None))
    await driver.apply_live(name, container.spec, unlimited)
    assert await tools.get_cgroup(name, "pids.max") == "max"
    assert await tools.get_cgroup(name, "cpuset.cpus") == cpuset(1, facts.cpus)

    owner, group = (await inside("/bin/ls", "-ln", "/mnt/shared/readme")).split()[2:4]
    assert (owner, group) == ("65534", "65534")  # the host's root is nobody inside
    assert await inside("/bin/cat", "/mnt/shared/readme") == "host root's\n"
    await inside("/bin/touch", "/mnt/shared/ours/made-inside", "/written")
    assert (shared / "ours" / "made-inside").stat().st_uid == facts.idmap.uid

    # the next controller adopts it and stops it gracefully; its rootfs is kept
    await driver.close()
    successor = LxcDriver(context)
    try:
        adopted = await successor.reattach(live.record)
        assert adopted is not None and adopted.state is State.RUNNING
        assert await successor.shutdown(name, timeout=10) is True
        tarball.unlink()  # not unpacked again: the rootfs is there
        again = await successor.start(container, paused=False, token="test")
        assert again.state is State.RUNNING
        assert await tools.attach(name, ["/bin/ls", "/written"])
        await successor.destroy(name)
        files = ContainerFiles(lxc_host.state_dir, lxc_host.log_dir)
        assert files.rootfs(name).is_dir()
        assert await successor.release_storage(name, container.spec) == []
        assert not files.storage(name).exists()
    finally:
        await successor.close()
