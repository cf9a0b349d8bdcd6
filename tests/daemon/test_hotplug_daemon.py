"""Live hotplug under the real daemon: a vCPU added by a manifest edit, with the device named
in the `defined/updated` event's message, and no restart."""

from __future__ import annotations

import pytest
import yaml

from .conftest import Controller

pytestmark = pytest.mark.qemu


def vm(name: str, vcpus: int) -> str:
    return yaml.safe_dump({
        "apiVersion": "domctl/v1", "kind": "Domain", "metadata": {"name": name},
        "spec": {"driver": "qemu", "memory": "64Mi", "vcpus": vcpus, "maxVcpus": 2,
                 "shutdownTimeout": "1s", "qemu": {"machine": "pc", "accel": "tcg"}}})


def test_a_vcpu_added_by_an_edit_is_hot_plugged_and_named_in_the_event(
        controller: Controller) -> None:
    name = controller.name("hot")
    controller.write_manifest(f"{name}.yaml", vm(name, 1))
    before = controller.wait_state(name, "running")
    events = len(controller.events(name))
    controller.write_manifest(f"{name}.yaml", vm(name, 2))
    applied = controller.wait_for(lambda: next(
        (e for e in controller.events(name)[events:] if e["event"] == "defined"
         and e["message"].startswith("applied live: device-added:")), None),
        "the hot-plug's event", name)
    assert "vcpu" in applied["message"], applied
    after = controller.wait_status(name, "converged", lambda s: s["pending"] == [] and
                                   s["observedGeneration"] == s["generation"])
    assert after["pid"] == before["pid"] and after["restarts"] == 0
