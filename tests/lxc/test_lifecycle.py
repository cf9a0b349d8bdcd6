"""Real containers: every operation of LxcDriver, and what it refuses to touch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reconcilers.driver import DriverContext, RuntimeEvent
from reconcilers.errors import DriverError
from reconcilers.lxc import driver as lxc_driver
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcState, LxcTools
from reconcilers.model import EventDetail, EventType, LxcSpec, Mount, Reason, State
from tests.support.domains import domain
from tests.support.lxc import LxcHost

pytestmark = pytest.mark.lxc


async def test_start_observe_destroy(driver: LxcDriver, lxc_host: LxcHost, tools: LxcTools,
                                     events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("start")
    live = await driver.start(domain(name, "lxc"), paused=False, token="test")
    assert (live.state, live.reason) == (State.RUNNING, Reason.BOOTED)
    assert live.pid and live.record and live.record.pid == live.pid
    await driver.destroy(name)
    assert (await tools.info(name)).state is LxcState.STOPPED
    live = await driver.observe(name)
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.DESTROYED)
    assert [e.events for e in events] == [((EventType.STOPPED, EventDetail.DESTROYED),)]


async def test_start_paused_suspend_resume(driver: LxcDriver, lxc_host: LxcHost, tools: LxcTools
                                           ) -> None:
    name = lxc_host.name("pause")
    live = await driver.start(domain(name, "lxc"), paused=True, token="test")
    assert (live.state, live.reason) == (State.PAUSED, Reason.USER)
    assert (await tools.info(name)).state is LxcState.FROZEN
    await driver.resume(name)
    live = await driver.observe(name)
    assert (live.state, live.reason) == (State.RUNNING, Reason.UNPAUSED)
    await driver.suspend(name)
    assert (await driver.observe(name)).state is State.PAUSED
    await tools.unfreeze(name)  # thawed behind our back: running, for a reason we don't know
    live = await driver.observe(name)
    assert (live.state, live.reason) == (State.RUNNING, Reason.UNKNOWN)


async def test_shutdown_clean_halt(driver: LxcDriver, lxc_host: LxcHost,
                                   events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("halt")
    await driver.start(domain(name, "lxc"), paused=False, token="test")
    assert await driver.shutdown(name, timeout=10) is True
    live = await driver.observe(name)
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.SHUTDOWN)
    assert events[-1].events == ((EventType.SHUTDOWN, EventDetail.FINISHED),
                                 (EventType.STOPPED, EventDetail.SHUTDOWN))
    console = (lxc_host.log_dir / f"{name}.log").read_text()
    assert "domctl busybox: up" in console and "domctl busybox: halting" in console


async def test_shutdown_of_a_paused_container(driver: LxcDriver, lxc_host: LxcHost) -> None:
    name = lxc_host.name("halt-paused")
    await driver.start(domain(name, "lxc"), paused=True, token="test")
    assert await driver.shutdown(name, timeout=10) is True
    assert (await driver.observe(name)).reason is Reason.SHUTDOWN


async def test_shutdown_ignored_returns_false(driver: LxcDriver, lxc_host: LxcHost, tools: LxcTools,
                                              events: list[RuntimeEvent]) -> None:
    name = lxc_host.name("deaf")
    # a shell as init has no SIGPWR handler, so the kernel drops the halt signal
    deaf = LxcSpec(init=("/bin/sh", "-c", "while :; do sleep 1; done"))
    await driver.start(domain(name, "lxc", lxc=deaf), paused=False, token="test")
    assert await driver.shutdown(name, timeout=1) is False
    assert (await tools.info(name)).state is LxcState.RUNNING
    assert (await driver.observe(name)).state is State.RUNNING
    await driver.destroy(name)
    assert events[-1].reason is Reason.DESTROYED


async def test_destroy_a_paused_container(driver: LxcDriver, lxc_host: LxcHost) -> None:
    name = lxc_host.name("kill-paused")
    await driver.start(domain(name, "lxc"), paused=True, token="test")
    await driver.destroy(name)
    assert (await driver.observe(name)).reason is Reason.DESTROYED


async def test_failed_start_quotes_lxc(driver: LxcDriver, lxc_host: LxcHost) -> None:
    name = lxc_host.name("noinit")
    with pytest.raises(DriverError) as failure:
        await driver.start(domain(name, "lxc", lxc=LxcSpec(init=("/no/such/init",))),
                           paused=False, token="test")
    assert "LXC log:" in str(failure.value)
    assert (await driver.observe(name)).state is State.SHUTOFF


async def test_unknown_container_is_never_touched(driver: LxcDriver, lxc_host: LxcHost,
                                                  tools: LxcTools, context: DriverContext
                                                  ) -> None:
    name = lxc_host.name("foreign")
    await driver.start(domain(name, "lxc"), paused=False, token="test")
    stranger = LxcDriver(context)  # a second controller that never adopted it
    assert (await stranger.observe(name)).state is State.NOSTATE
    with pytest.raises(DriverError, match="refusing"):
        await stranger.destroy(name)
    assert (await tools.info(name)).state is LxcState.RUNNING


async def test_lxc_reads_env_mounts_and_argv_exactly(driver: LxcDriver, lxc_host: LxcHost,
                                                     tools: LxcTools, tmp_path: Path) -> None:
    name = lxc_host.name("exact")
    shared = tmp_path / "my files"
    shared.mkdir()
    (shared / "hello").write_text("from the host\n")
    env = (("EQ", "a=b = c"), ("PAD", " padded "), ("QUOTE", '"kept"'))
    init = ("/bin/sh", "-c", "trap 'exit 0' PWR; while :; do sleep 1; done")
    mounts = (Mount(str(shared), "/mnt/my files", readonly=True),)
    # privileged: its mount's source is under pytest's 0700 directories (test_images.py has
    # an unprivileged container's mounts)
    await driver.start(domain(name, "lxc", lxc=LxcSpec(init=init, env=env, mounts=mounts,
                                                       privileged=True)),
                       paused=False, token="test")
    environ = (await tools.attach(name, ["/bin/cat", "/proc/1/environ"])).stdout.split("\0")
    for key, value in env:
        assert f"{key}={value}" in environ
    cmdline = (await tools.attach(name, ["/bin/cat", "/proc/1/cmdline"])).stdout.split("\0")
    assert tuple(cmdline[:3]) == init
    assert (await tools.attach(name, ["/bin/cat", "/mnt/my files/hello"])).stdout == \
        "from the host\n"
    with pytest.raises(DriverError, match="Read-only"):
        await tools.attach(name, ["/bin/touch", "/mnt/my files/new"])
    await tools.attach(name, ["/bin/touch", "/bin/new"])  # lands in the container's overlay
    assert not list((lxc_host.state_dir / "lxc-rootfs").glob("*/bin/new"))
    assert await driver.shutdown(name, timeout=5) is True  # init's own SIGPWR trap exits 0


async def test_freeze_that_hangs_is_undone(driver: LxcDriver, lxc_host: LxcHost, tools: LxcTools,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    name = lxc_host.name("stuck")
    await driver.start(domain(name, "lxc"), paused=False, token="test")
    # an lxc-freeze that freezes for real and then never returns, like a cgroup stuck FREEZING
    real = shutil.which("lxc-freeze")
    fake = tmp_path / "bin" / "lxc-freeze"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\n"{real}" "$@"\nexec sleep 60\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(lxc_driver, "FREEZE_TIMEOUT", 0.5)
    with pytest.raises(DriverError, match="thawed again"):
        await driver.suspend(name)
    assert (await tools.info(name)).state is LxcState.RUNNING
    assert (await driver.observe(name)).state is State.RUNNING


async def test_user_rootfs_directory(driver: LxcDriver, lxc_host: LxcHost, tools: LxcTools,
                                     tmp_path: Path) -> None:
    name = lxc_host.name("userfs")
    (cached,) = (lxc_host.state_dir / "lxc-rootfs").glob("busybox-" + "?" * 16)  # host-owned
    tree = tmp_path / "rootfs"
    shutil.copytree(cached, tree, symlinks=True)
    # privileged: a user's tree is used as it is, and this one is owned by the host's root
    await driver.start(domain(name, "lxc", lxc=LxcSpec(rootfs=str(tree), privileged=True)),
                       paused=False, token="test")
    await tools.attach(name, ["/bin/touch", "/written-inside"])
    assert (tree / "written-inside").exists()  # a user rootfs is used in place, no overlay
    assert await driver.shutdown(name, timeout=10) is True
