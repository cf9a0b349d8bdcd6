"""`domctl wait` is exact, and a live change ends Synced (issue R point 6), against a real
`domctl run` and a real qemu.

The controller runs with a long `--resync`, so nothing a test waits for can come from a periodic
pass: `wait` right after an edit must see the edit itself (the controller re-reads the
manifests for the request), and a live change must reach Synced=True in the pass that applies
it. The cgroup is the real v1 hierarchy of this host (the v2 writes are checked on a stand-in
tree in tests/qemu/test_cgroups.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconcilers.model import CpuTune
from reconcilers.qemu.cgroups import CGROUP_ROOT, CgroupVersion, detect_version
from tests.support.domains import domain

from .conftest import CGROUP_PARENT, Controller, condition, controller_on

qemu = pytest.mark.qemu


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    with controller_on(tmp_path_factory.mktemp("wait"), ("--resync", "600")) as ctl:
        yield ctl


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.args, result.returncode, result.stdout, result.stderr)
    return result


def shares_file(name: str) -> Path:
    if detect_version() is CgroupVersion.V2:
        return CGROUP_ROOT / CGROUP_PARENT / name / "cpu.weight"
    return CGROUP_ROOT / "cpu" / CGROUP_PARENT / name / "cpu.shares"


@qemu
def test_wait_after_an_edit_waits_for_it_and_a_live_shares_change_syncs(ctl: Controller) -> None:
    name = ctl.name("wait")
    ctl.apply(domain(name))
    ok(ctl.domctl("wait", name, "--for", "condition=Ready", "--timeout", "60"))
    first = ctl.status(name)
    assert first is not None and first["observedGeneration"] == first["generation"], first
    v1 = detect_version() is CgroupVersion.V1

    for shares, shown in ((512, "512" if v1 else "20"), (None, "1024" if v1 else "100")):
        before = ctl.status(name)
        assert before is not None
        ctl.apply(domain(name, cputune=CpuTune(shares=shares)))
        # at once: the status still shows the old generation, Synced and Ready
        ok(ctl.domctl("wait", name, "--for", "condition=Synced", "--timeout", "30"))
        after = ctl.status(name)
        assert after is not None
        assert after["generation"] != before["generation"], (before, after)
        assert after["observedGeneration"] == after["generation"], after
        assert condition(after, "Synced")["status"] == "True", after["conditions"]
        assert after["pid"] == first["pid"], "a live change must not restart the domain"
        assert shares_file(name).read_text().strip() == shown, (shares, after)
        ok(ctl.domctl("wait", name, "--for", "condition=Ready", "--timeout", "5"))

    ctl.remove_manifest(f"{name}.yaml")


@qemu
def test_wait_on_an_invalid_manifest_fails_at_once(ctl: Controller) -> None:
    name = ctl.name("bad")
    ctl.write_manifest(f"{name}.yaml", f"apiVersion: domctl/v1\nkind: Domain\nmetadata:\n"
                       f"  name: {name}\nspec:\n  driver: qemu\n  memory: lots\n")
    started = time.monotonic()
    got = ctl.domctl("wait", name, "--for", "condition=Ready", "--timeout", "30")
    assert got.returncode == 1, got
    assert time.monotonic() - started < 15, "an invalid manifest must not wait for the timeout"
    assert f"{name}.yaml:7:" in got.stderr and "memory" in got.stderr, got.stderr
    ctl.remove_manifest(f"{name}.yaml")
