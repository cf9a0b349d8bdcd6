"""Fixtures for the qemu driver tests: a driver on private directories that cleans up after itself.

Every test that starts qemu gets `qemu_env`: its own runtime/state/log directories (the runtime
dir is short, for the 108-byte socket path limit), its own cgroup parent, the events the driver
reported, and a finalizer that kills every qemu it started (by pid, checked against the argv)
and removes its cgroups, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconcilers.driver import DriverContext, RuntimeEvent
from reconcilers.identity import cmdline, is_alive
from reconcilers.model import (Accel, Disk, DiskBus, Domain, DomainSpec, DriverName, Metadata,
                               QemuSpec, SourceRef)
from reconcilers.qemu.cgroups import CGROUP_ROOT
from reconcilers.qemu.driver import QemuDriver
from reconcilers.qemu.layout import QemuSettings

MiB = 1024 * 1024
POWEROFF_CODE = bytes.fromhex("BA0406B80020EFF4")  # mov dx,0x604; mov ax,0x2000; out dx,ax; hlt
LOOP_CODE = bytes.fromhex("EBFE")  # jmp $ : ignores ACPI entirely


def boot_sector(path: Path, code: bytes) -> Path:
    """A 512-byte raw disk image: `code`, zero padding, the 0x55AA signature."""
    path.write_bytes(code + bytes(510 - len(code)) + b"\x55\xaa")
    return path


def guest(name: str, image: Path | None = None, memory_mib: int = 64,
          **spec_fields: Any) -> Domain:
    """A tcg `pc` domain booting `image` (no NIC), with any DomainSpec field overridden."""
    disks = ((Disk(name="boot", source=str(image), bus=DiskBus.IDE),) if image is not None
             else ())  # SeaBIOS does not boot a one-sector virtio disk
    qemu = QemuSpec(machine="pc", accel=Accel.TCG, disks=disks)
    spec = DomainSpec(driver=DriverName.QEMU, memory=memory_mib * MiB, qemu=qemu, **spec_fields)
    return Domain(metadata=Metadata(name=name, uuid=str(uuid.uuid4())), spec=spec,
                  source=SourceRef(file="test.yaml", line=1))


def kill_ours(runtime_dir: Path, pids: set[int]) -> None:
    """SIGKILL every recorded pid and every pidfile's pid whose argv names our runtime dir."""
    for pidfile in (runtime_dir / "qemu").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids.add(int(pidfile.read_text().strip()))
    for pid in pids:
        argv = cmdline(pid) or []
        if is_alive(pid) and any(str(runtime_dir) in arg for arg in argv):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def remove_cgroups(root: Path, parent: str) -> bool:
    """rmdir the test's cgroup directories (children first); True when none is left."""
    bases = [root / parent, *(root / c / parent for c in ("cpu", "memory", "pids"))]
    for base in bases:
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir(), reverse=True):
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()
    return not any(base.exists() for base in bases)


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if predicate(event):
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching event within {timeout} s; got {self.events}")


@pytest.fixture
async def qemu_env(tmp_path: Path) -> AsyncIterator[QemuEnv]:
    runtime = Path(tempfile.mkdtemp(prefix="dq-"))
    parent = f"domctl-test-{uuid.uuid4().hex[:8]}"
    events: list[RuntimeEvent] = []
    env = QemuEnv(context=DriverContext(runtime_dir=runtime, state_dir=tmp_path / "state",
                                        log_dir=tmp_path / "log", on_event=events.append),
                  settings=QemuSettings(cgroup_parent=parent), events=events)
    try:
        yield env
    finally:
        for driver in env.drivers:
            for tracked in driver._tracked.values():  # noqa: SLF001 - cleanup by recorded pid
                env.pids.add(tracked.record.pid)
            await driver.close()
        kill_ours(runtime, env.pids)
        for _ in range(50):  # a killed daemon stays a zombie until the slow PID 1 reaps it
            if remove_cgroups(CGROUP_ROOT, parent):
                break
            await asyncio.sleep(0.1)
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def poweroff_image(tmp_path: Path) -> Path:
    return boot_sector(tmp_path / "poweroff.img", POWEROFF_CODE)


@pytest.fixture
def loop_image(tmp_path: Path) -> Path:
    return boot_sector(tmp_path / "loop.img", LOOP_CODE)


@pytest.fixture
def make_guest() -> Callable[..., Domain]:
    return guest


GOLDEN_DIR = Path(__file__).parent.parent / "golden" / "qemu"


def load_manifest(path: Path) -> Domain:
    """A golden input through the controller's loader; while that is being written, through
    the same steps it takes (strict YAML, the JSON Schema, the normaliser)."""
    try:
        from controller.manifests.loader import load_text  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        import json

        import jsonschema  # type: ignore[import-untyped,unused-ignore]
        import yaml  # type: ignore[import-untyped,unused-ignore]

        normalise = pytest.importorskip("controller.manifests.normalise",
                                        reason="no manifest loader in this checkout yet")
        raw = yaml.safe_load(path.read_text())
        schema = Path(__file__).parents[2] / "schemas" / "domain.schema.json"
        jsonschema.validate(raw, json.loads(schema.read_text()))
        return Domain(metadata=normalise.metadata(raw["metadata"]),
                      spec=normalise.spec(raw["spec"]), source=SourceRef(path.name, 1))
    (domain,) = load_text(path.read_text(), path.name)
    assert isinstance(domain, Domain)
    return domain


@pytest.fixture
def argv_cases() -> dict[str, Domain]:
    """Every golden input manifest, by file stem."""
    return {path.stem: load_manifest(path) for path in sorted(GOLDEN_DIR.glob("*.yaml"))}


@pytest.fixture
def golden_dir() -> Path:
    return GOLDEN_DIR


@pytest.fixture
def hello_image(tmp_path: Path) -> Path:
    """Writes "DQ!" to COM1 (mov dx,0x3f8; mov al,c; out dx,al ×3), then powers off."""
    return boot_sector(tmp_path / "hello.img", bytes.fromhex("BAF803B044EEB051EEB021EE")
                       + POWEROFF_CODE)


@pytest.fixture
def panic_image(tmp_path: Path) -> Path:
    """Reports a panic to the ISA pvpanic device (mov dx,0x505; mov al,1; out dx,al; hlt)."""
    return boot_sector(tmp_path / "panic.img", bytes.fromhex("BA0505B001EEF4"))


@pytest.fixture
def reboot_image(tmp_path: Path) -> Path:
    """Resets the machine through the keyboard controller (mov al,0xfe; out 0x64,al; hlt)."""
    return boot_sector(tmp_path / "reboot.img", bytes.fromhex("B0FEE664F4"))


@pytest.fixture
def watchdog_image(tmp_path: Path) -> Path:
    """Arms an ib700 watchdog with its shortest timeout and never feeds it
    (mov dx,0x443; mov al,0x0f; out dx,al; jmp $)."""
    return boot_sector(tmp_path / "watchdog.img", bytes.fromhex("BA4304B00FEEEBFE"))
