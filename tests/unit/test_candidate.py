"""controller/engine/candidate.py: `domctl diff -f FILE` against an engine with the in-memory
driver (the daemon's route is tested in tests/daemon)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from controller.engine.candidate import preview
from controller.manifests.errors import ManifestError
from reconcilers.model import CpuTune
from tests.support.domains import domain, manifest
from tests.support.memory import MemoryDriver
from tests.unit.test_controller import started


async def test_a_running_domain_is_compared_with_its_live_spec(tmp_path: Path) -> None:
    controller = await started(tmp_path, MemoryDriver(), domain(memory="64Mi"))
    edited = domain(memory="128Mi", shutdown_timeout="90s", cputune=CpuTune(shares=512))
    candidate = dataclasses.replace(edited, metadata=dataclasses.replace(
        edited.metadata, labels=(("tier", "web"),)))
    [result] = preview(controller, manifest(candidate), "vm.yaml")
    assert (result["name"], result["action"]) == ("vm", "update")
    changes = {change["field"]: (change["old"], change["new"], change["apply"])
               for change in result["changes"]}
    assert changes == {"memory": ("64Mi", "128Mi", "restart"),
                       "shutdown_timeout": ("2s", "90s", "controller"),
                       "cputune.shares": (None, 512, "live"),
                       "labels": ({}, {"tier": "web"}, "controller")}
    assert "vm" in controller.statuses.names()  # a preview changes nothing


async def test_an_identical_file_is_unchanged_and_a_new_name_is_a_create(tmp_path: Path) -> None:
    vm = domain(memory="64Mi")
    controller = await started(tmp_path, MemoryDriver(), vm)
    text = manifest(vm) + "---\n" + manifest(domain("other"))
    assert [(r["name"], r["action"], r["changes"]) for r in preview(controller, text, "vm.yaml")
            ] == [("other", "create", []), ("vm", "unchanged", [])]


async def test_a_domain_the_same_file_no_longer_declares_is_a_delete(tmp_path: Path) -> None:
    controller = await started(tmp_path, MemoryDriver(), domain())
    results = preview(controller, manifest(domain("renamed")), "manifests/vm.yaml")
    assert [(r["name"], r["action"]) for r in results] == [("renamed", "create"),
                                                            ("vm", "delete")]


async def test_an_invalid_candidate_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    controller = await started(tmp_path, MemoryDriver(), domain())
    text = manifest(domain()).replace("driver: qemu", "driver: qemu\n  memroy: 1Gi")
    with pytest.raises(ManifestError, match=r"candidate\.yaml:\d+:\d+: spec\.memroy"):
        preview(controller, text, "candidate.yaml")
