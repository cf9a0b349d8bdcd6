"""Fixtures for the qemu driver tests: support/qemu.py's environment, boot sectors, golden inputs.

Every test that starts qemu gets `qemu_env` (see QemuEnv): private directories and a cgroup
parent, the events the driver reported, and a sweep of everything it started afterwards.
`make_guest(name, image, **spec_fields)` is support.domains.domain for the modules that still
take it as a fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from reconcilers.model import Domain
from tests.support.domains import domain, load
from tests.support.qemu import LOOP_CODE, POWEROFF_CODE, QemuEnv, boot_sector
from tests.support.qemu import qemu_env as env

__all__ = ["QemuEnv"]
GOLDEN_DIR = Path(__file__).parent.parent / "golden" / "qemu"


@pytest.fixture
async def qemu_env(tmp_path: Path) -> AsyncIterator[QemuEnv]:
    async with env(tmp_path) as running:
        yield running


def guest(name: str, image: Path | None = None, **spec_fields: Any) -> Domain:
    return domain(name, image=image, **spec_fields)


@pytest.fixture
def make_guest() -> Callable[..., Domain]:
    return guest


@pytest.fixture
def poweroff_image(tmp_path: Path) -> Path:
    return boot_sector(tmp_path / "poweroff.img", POWEROFF_CODE)


@pytest.fixture
def loop_image(tmp_path: Path) -> Path:
    return boot_sector(tmp_path / "loop.img", LOOP_CODE)


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
    """Writes byte 0x01 to COM1 at every boot, then resets the machine through the keyboard
    controller (mov dx,0x3f8; mov al,1; out dx,al; mov al,0xfe; out 0x64,al; hlt)."""
    return boot_sector(tmp_path / "reboot.img", bytes.fromhex("BAF803B001EEB0FEE664F4"))


@pytest.fixture
def watchdog_image(tmp_path: Path) -> Path:
    """Arms an ib700 watchdog with its shortest timeout and never feeds it
    (mov dx,0x443; mov al,0x0f; out dx,al; jmp $)."""
    return boot_sector(tmp_path / "watchdog.img", bytes.fromhex("BA4304B00FEEEBFE"))


@pytest.fixture
def argv_cases() -> dict[str, Domain]:
    """Every golden input manifest, by file stem."""
    return {path.stem: load(path) for path in sorted(GOLDEN_DIR.glob("*.yaml"))}


@pytest.fixture
def golden_dir() -> Path:
    return GOLDEN_DIR
