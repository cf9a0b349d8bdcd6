"""QemuDriver.stats against a real qemu: a boot-sector guest (SeaBIOS reads its one sector,
then the guest spins in `jmp $` under tcg), so CPU time, RSS, the balloon and the boot disk's
reads are all there within a second of the start, without booting an OS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reconcilers.errors import DriverError
from tests.support.domains import MiB, domain
from tests.support.qemu import QemuEnv

pytestmark = pytest.mark.qemu


async def test_a_running_vm_reports_cpu_memory_balloon_and_its_disk_reads(
        qemu_env: QemuEnv, loop_image: Path) -> None:
    driver = qemu_env.driver()
    vm = domain("stats-vm", image=loop_image)
    await driver.start(vm, paused=False, token="test")

    stats = await driver.stats(vm.name)
    for _ in range(200):  # 20 s
        if stats.cpu_seconds > 0 and stats.disks[0].read_bytes > 0:
            break
        await asyncio.sleep(0.1)
        stats = await driver.stats(vm.name)
    else:
        pytest.fail(f"no CPU time or no boot sector read 20 s after the start: {stats}")
    assert 0 < stats.rss_bytes < 4096 * MiB
    assert stats.balloon_bytes == 64 * MiB  # no balloon driver in the guest: all of it
    [disk] = stats.disks
    assert disk.device == "boot"  # the manifest's name, not qemu's node
    assert disk.read_bytes >= 512 and disk.read_ops >= 1 and disk.write_bytes == 0
    assert stats.interfaces == ()

    later = await driver.stats(vm.name)
    assert later.cpu_seconds >= stats.cpu_seconds  # a counter

    await driver.destroy(vm.name)
    with pytest.raises(DriverError, match="not running"):
        await driver.stats(vm.name)
