"""Real qemu for the driver tier and the contract tests: private directories, boot sectors.

`qemu_env(base)` gives a QemuEnv: its own runtime dir (a short scratch dir, for the 108-byte
socket path limit), state and log dirs under `base`, its own cgroup parent, and the events its
drivers report. On the way out, also after a failure, it closes every driver it made and
sweeps: every qemu it started is killed (by pid, checked against the argv), its cgroups and
its runtime dir removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from reconcilers.driver import DriverContext, RuntimeEvent
from reconcilers.qemu.driver import QemuDriver
from reconcilers.qemu.layout import QemuSettings
from tests.support.cleanup import scratch_dir, sweep
from tests.support.waiting import async_wait_until

POWEROFF_CODE = bytes.fromhex("BA0406B80020EFF4")  # mov dx,0x604; mov ax,0x2000; out dx,ax; hlt
LOOP_CODE = bytes.fromhex("EBFE")  # jmp $ : ignores ACPI entirely


def boot_sector(path: Path, code: bytes) -> Path:
    """A 512-byte raw disk image: `code`, zero padding, the 0x55AA signature."""
    path.write_bytes(code + bytes(510 - len(code)) + b"\x55\xaa")
    return path


@dataclass
class QemuEnv:
    context: DriverContext
    settings: QemuSettings
    events: list[RuntimeEvent] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    drivers: list[QemuDriver] = field(default_factory=list)

    def driver(self) -> QemuDriver:
        """A fresh driver (no in-memory state) on the same directories."""
        driver = QemuDriver(self.context, self.settings)
        self.drivers.append(driver)
        return driver

    async def wait_event(self, predicate: Callable[[RuntimeEvent], bool],
                         timeout: float = 10.0) -> RuntimeEvent:
        """The first reported event that satisfies `predicate`."""
        return await async_wait_until(
            lambda: next((e for e in self.events if predicate(e)), None),
            "a matching runtime event", timeout=timeout,
            explain=lambda: f"events so far: {self.events}")


@contextlib.asynccontextmanager
async def qemu_env(base: Path) -> AsyncIterator[QemuEnv]:
    runtime = scratch_dir("q")
    parent = f"domctl-test-{uuid.uuid4().hex[:8]}"
    events: list[RuntimeEvent] = []
    env = QemuEnv(context=DriverContext(runtime_dir=runtime, state_dir=base / "state",
                                        log_dir=base / "log", on_event=events.append),
                  settings=QemuSettings(cgroup_parent=parent), events=events)
    try:
        yield env
    finally:
        for driver in env.drivers:
            for tracked in driver._tracked.values():
                env.pids.add(tracked.record.pid)
            await driver.close()
        await asyncio.to_thread(sweep, runtime_dir=runtime, pids=env.pids, cgroups=[parent],
                                remove=[runtime])
