"""Domains imported from real libvirt XML start under the real daemon.

tests/golden/libvirt's `virsh dumpxml` output of a diskless VM and of a VM booting the test
guest's kernel (tests/support/guest.py), each given a fresh name and uuid and the guest's real
paths, goes through the real console script, `domctl import-libvirt --state running -o` the
watched directory, as an operator would move a domain over. The controller must start both
(tcg: their XML says `<domain type='qemu'>`), and the kernel VM's serial port, a file in
libvirt, must be the domain's log, where the guest says it booted.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import pytest

from reconcilers.qemu.layout import domain_files
from tests.support.guest import DEFAULT_CACHE, INITRD, KERNEL, GuestBuild, wait_ready

from .conftest import DOMCTL, Controller, alive

pytestmark = [pytest.mark.qemu, pytest.mark.guest]
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "libvirt"


def on_this_host(stem: str, name: str, guest: GuestBuild) -> bytes:
    """virsh-STEM.xml named `name`, with a new uuid and the test guest's kernel and initramfs."""
    text = (GOLDEN / f"virsh-{stem}.xml").read_text()
    text = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", text, count=1)
    text = re.sub(r"<uuid>[^<]*</uuid>", f"<uuid>{uuid.uuid4()}</uuid>", text, count=1)
    text = text.replace(str(DEFAULT_CACHE / KERNEL), str(guest.kernel))
    return text.replace(str(DEFAULT_CACHE / INITRD), str(guest.initrd)).encode()


def test_imported_diskless_and_kernel_vms_start(controller: Controller, guest_build: GuestBuild,
                                                tmp_path: Path) -> None:
    names = {stem: controller.name(f"imported-{stem}") for stem in ("diskless", "kernel")}
    inputs = []
    for stem, name in names.items():
        path = tmp_path / f"{stem}.xml"
        path.write_bytes(on_this_host(stem, name, guest_build))
        inputs.append(str(path))
    done = subprocess.run([str(DOMCTL), "import-libvirt", "--state", "running", "-o",
                           str(controller.manifests), *inputs],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in controller.manifests.iterdir()) == sorted(
        f"{name}.yaml" for name in names.values())
    for name in names.values():
        status = controller.wait_state(name, "running", "booted", timeout=60)
        assert alive(status["pid"]), status
        assert status["conditions"] and all(
            c["status"] == "True" for c in status["conditions"] if c["type"] == "ManifestValid")
    wait_ready(domain_files(controller.runtime, controller.logs, names["kernel"]).log)
