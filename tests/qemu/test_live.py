"""Live changes on a running qemu (cgroup cpu shares, pinning, balloon) and their classification."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from reconcilers.driver import ChangeKind
from reconcilers.errors import DriverError
from reconcilers.model import CpuTune, Lifecycle, LifecycleAction, QemuSpec, VcpuPin
from reconcilers.qemu.changes import classify
from reconcilers.qemu.pinning import vcpu_threads
from tests.support.domains import domain
from tests.support.qemu import QemuEnv


def test_classification() -> None:
    old = domain(qemu=QemuSpec()).spec
    new = dataclasses.replace(old, current_memory=256 << 20, vcpus=2,
                              cputune=CpuTune(shares=2048, vcpupin=(VcpuPin(0, "0"),)),
                              lifecycle=Lifecycle(on_reboot=LifecycleAction.DESTROY),
                              qemu=QemuSpec(machine="q35"), shutdown_timeout=5.0)
    assert classify(old, new) == {
        "current_memory": ChangeKind.LIVE, "cputune.shares": ChangeKind.LIVE,
        "cputune.vcpupin": ChangeKind.LIVE, "lifecycle.on_reboot": ChangeKind.LIVE,
        "qemu.machine": ChangeKind.RESTART, "shutdown_timeout": ChangeKind.LIVE,
        "vcpus": ChangeKind.RESTART}
    assert classify(old, old) == {}


@pytest.mark.qemu
async def test_cpu_shares_pinning_and_balloon_applied_live(qemu_env: QemuEnv,
                                                            loop_image: Path) -> None:
    driver = qemu_env.driver()
    vm = domain("t-live", image=loop_image, cputune=CpuTune(shares=512))
    await driver.start(vm, paused=False, token="test")
    tracked = driver._tracked["t-live"]
    shares_key = "cpu/cpu.shares" if tracked.cgroup.version.value == "v1" else "/cpu.weight"
    before = tracked.cgroup.path(shares_key).read_text().strip()
    memory_key = ("memory/memory.limit_in_bytes" if shares_key.startswith("cpu/")
                  else "/memory.max")
    memory_limit = tracked.cgroup.path(memory_key).read_text()
    new = dataclasses.replace(vm.spec, memory=256 << 20, current_memory=32 << 20,
                              cputune=CpuTune(
        shares=2048, vcpupin=(VcpuPin(vcpu=0, cpuset="0"),)),
        lifecycle=Lifecycle(on_reboot=LifecycleAction.DESTROY))
    await driver.apply_live("t-live", vm.spec, new)
    after = tracked.cgroup.path(shares_key).read_text().strip()
    assert (before, after) == (("512", "2048") if shares_key.startswith("cpu/") else
                               (before, str(1 + (2048 - 2) * 9999 // 262142)))
    vcpu0 = (await vcpu_threads(tracked.qmp))[0]
    assert os.sched_getaffinity(vcpu0) == {0}
    balloon = await tracked.monitor.execute("query-balloon")
    assert balloon["actual"] > 0  # the device answers; the guest has no driver to shrink it
    assert tracked.lifecycle.on_reboot is LifecycleAction.DESTROY
    assert tracked.cgroup.path(memory_key).read_text() == memory_limit  # memory: restart-only
    with pytest.raises(DriverError, match="already running"):
        await driver.start(vm, paused=False, token="test")
