"""stopMode and maxMemory in manifests (#15), through the real loader.

Both are read and defaulted (a default written out is the same generation), every refusal
names FILE:LINE:COLUMN: FIELD, and tests/support/domains.py writes them back as the loader
reads them.
"""

from __future__ import annotations

import textwrap

import pytest

from controller.manifests.errors import ManifestError
from controller.manifests.loader import load_text
from reconcilers.model import DriverName, StopMode
from tests.support.domains import domain, manifest

MiB = 1024 ** 2

VM = """\
apiVersion: domctl/v1
kind: Domain
metadata: {name: vm}
spec:
  driver: qemu
  memory: 1Gi
"""
CT = """\
apiVersion: domctl/v1
kind: Domain
metadata: {name: ct}
spec:
  driver: lxc
"""


def problem(text: str) -> str:
    with pytest.raises(ManifestError) as caught:
        load_text(textwrap.dedent(text), "m.yaml")
    [found] = caught.value.problems
    return str(found)


def test_stop_mode_and_max_memory_are_read_and_defaulted() -> None:
    [plain] = load_text(VM, "m.yaml")
    assert (plain.spec.stop_mode, plain.spec.max_memory) == (StopMode.SHUTDOWN, None)
    [written] = load_text(VM + "  stopMode: shutdown\n", "m.yaml")
    assert written.generation == plain.generation
    [saving] = load_text(VM + "  stopMode: save\n  maxMemory: 4Gi\n", "m.yaml")
    assert (saving.spec.stop_mode, saving.spec.max_memory) == (StopMode.SAVE, 4096 * MiB)


@pytest.mark.parametrize(("text", "where", "words"), [
    (VM + "  stopMode: hibernate\n", "m.yaml:7:3: spec.stopMode:", "must be one of shutdown, save"),
    (VM + "  maxMemory: 512Mi\n", "m.yaml:7:3: spec.maxMemory:",
     "maxMemory (512Mi) must be at least memory (1Gi)"),
    (VM + "  maxMemory: 2097153Ki\n", "m.yaml:7:3: spec.maxMemory:", "a whole number of MiB"),
    (CT + "  stopMode: save\n", "m.yaml:6:3: spec.stopMode:",
     "stopMode save needs the guest's memory saved to an image"),
    (CT + "  maxMemory: 1Gi\n", "m.yaml:6:3: spec.maxMemory:", "applies to qemu domains only"),
], ids=["unknown-mode", "below-memory", "not-whole-mib", "lxc-save", "lxc-max-memory"])
def test_refusals_are_located(text: str, where: str, words: str) -> None:
    found = problem(text)
    assert found.startswith(where) and words in found, found


@pytest.mark.parametrize("fields", [{"stop_mode": StopMode.SAVE},
                                    {"max_memory": 2048 * MiB, "memory": 1024 * MiB}])
def test_the_test_manifests_write_them_back(fields: dict[str, object]) -> None:
    written = domain("vm", DriverName.QEMU, **fields)  # type: ignore[arg-type]
    [read] = load_text(manifest(written), "vm.yaml")
    assert read.spec == written.spec
