"""The tiny real Linux guest of ../shared/guest (its README.md): a Debian kernel and a busybox
initramfs that print `GUEST-READY` on ttyS0 and power off cleanly on the ACPI power button.

`build()` runs the kit's own `build-guest.sh` into a cache directory (DOMCTL_TEST_GUEST_DIR,
default /var/tmp/domctl-test-guest), at most once per session; the script returns at once when
its outputs are up to date, and a complete earlier build (its manifest.txt names both files with
their sizes) is reused if a rebuild fails. Without the kit the test is skipped. The session
fixture `guest_build` (imported by tests/conftest.py) is the same thing.

`guest_domain()` is `domain()` booting that kernel and initramfs with `accel: tcg`, serial to
the domain log and the guest idling until powered off: the one qemu guest here that answers a
shutdown request. Wait for `ready(log)` before asking: the power button is only heard once
the guest's acpid runs, which it says by printing GUEST-READY.
"""

from __future__ import annotations

import fcntl
import functools
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconcilers.model import Accel, Domain, QemuSpec, SerialMode
from tests.support.domains import MiB, domain
from tests.support.waiting import async_wait_until, wait_until

KIT = Path(__file__).resolve().parents[2].parent / "shared" / "guest"  # ../shared/guest
DEFAULT_CACHE = Path("/var/tmp/domctl-test-guest")
KERNEL, INITRD = "vmlinuz", "initramfs.cpio.gz"
IDLE_CMDLINE = "console=ttyS0 panic=0 guest.mode=idle"  # README: waits; power button: poweroff
READY = "GUEST-READY"
BOOT_TIMEOUT = 90.0  # README: median 6.3 s to GUEST-READY under tcg, 15.5 s seen under load


@dataclass(frozen=True)
class GuestBuild:
    kernel: Path
    initrd: Path
    manifest: dict[str, str]  # manifest.txt's `key=value` lines (package versions, ...)


def cache_dir() -> Path:
    return Path(os.environ.get("DOMCTL_TEST_GUEST_DIR") or DEFAULT_CACHE)


def complete(out: Path) -> GuestBuild | None:
    """The build in `out` when manifest.txt is there and both files have its sizes."""
    try:
        lines = (out / "manifest.txt").read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split("=", 1) for line in lines if "=" in line and " " not in
                  line.split("=", 1)[0])
    for filename in (KERNEL, INITRD):
        listed = next((line.split() for line in lines if line.startswith(f"{filename} ")), [])
        size = next((word.removeprefix("size=") for word in listed
                     if word.startswith("size=")), None)
        path = out / filename
        if size is None or not path.is_file() or str(path.stat().st_size) != size:
            return None
    return GuestBuild(out / KERNEL, out / INITRD, fields)


@functools.cache
def _build(out: Path) -> GuestBuild:
    script = KIT / "build-guest.sh"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".domctl-test.lock", "w") as lock:  # another session building it
        fcntl.flock(lock, fcntl.LOCK_EX)
        run = subprocess.run([str(script), str(out)], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=900, check=False)
    built = complete(out)
    if run.returncode != 0:
        said = "\n".join(run.stderr.splitlines()[-20:])
        if built is None:
            pytest.fail(f"{script} {out} exited with {run.returncode}:\n{said}", pytrace=False)
        warnings.warn(f"{script} {out} exited with {run.returncode}; reusing the complete "
                      f"build there:\n{said}", stacklevel=1)
    elif built is None:
        pytest.fail(f"{script} {out} succeeded but left no complete build (manifest.txt, "
                    f"{KERNEL}, {INITRD})", pytrace=False)
    return built


def build() -> GuestBuild:
    """The guest, built into `cache_dir()` once per session; skips the test without the kit."""
    if not (KIT / "build-guest.sh").is_file():
        pytest.skip(f"no test guest kit: {KIT}/build-guest.sh is missing")
    return _build(cache_dir())


@pytest.fixture(scope="session")
def guest_build() -> GuestBuild:
    """The built guest (kernel and initramfs paths), once per session; see `build()`."""
    return build()


def guest_domain(name: str, guest: GuestBuild, *, memory: int | str = 128 * MiB,
                 cmdline: str = IDLE_CMDLINE, **fields: Any) -> Domain:
    """`domain(name, **fields)` booting the real guest, idle until powered off (128 MiB, as
    the kit was measured with)."""
    qemu = QemuSpec(machine="pc", accel=Accel.TCG, kernel=str(guest.kernel),
                    initrd=str(guest.initrd), cmdline=cmdline, serial=SerialMode.LOG)
    return domain(name, memory=memory, qemu=qemu, **fields)


def ready(log: Path) -> bool:
    """Whether the serial output in `log` has the GUEST-READY line (kernel messages may fall
    between markers, so whole lines are matched)."""
    try:
        text = log.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return False
    return any(line.strip() == READY for line in text.splitlines())


def _tail(log: Path) -> str:
    try:
        lines = log.read_bytes().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return f"{log} does not exist"
    return f"{log} (tail):\n" + "\n".join(lines[-15:])


def wait_ready(log: Path, timeout: float = BOOT_TIMEOUT) -> None:
    wait_until(lambda: ready(log), f"{READY} in {log}", timeout=timeout, interval=0.1,
               explain=lambda: _tail(log))


async def async_wait_ready(log: Path, timeout: float = BOOT_TIMEOUT) -> None:
    await async_wait_until(lambda: ready(log), f"{READY} in {log}", timeout=timeout,
                           interval=0.1, explain=lambda: _tail(log))
