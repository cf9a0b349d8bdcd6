"""Volumes under the real daemon: made in the pool at the first start, shown by `describe`
and `get -o json`, kept across a controller restart, and on removal deleted or kept as each
disk's deletePolicy says — the `undefined` event naming what was kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .conftest import Controller

pytestmark = pytest.mark.qemu


def vm(name: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "domctl/v1", "kind": "Domain", "metadata": {"name": name},
        "spec": {"driver": "qemu", "memory": "64Mi", "shutdownTimeout": "1s",
                 "qemu": {"machine": "pc", "accel": "tcg", "disks": [
                     {"name": "data", "size": "8Mi"},
                     {"name": "scratch", "size": "4Mi", "deletePolicy": "Delete"}]}}})


def test_volumes_are_made_kept_and_released_by_their_policy(controller: Controller) -> None:
    name = controller.name("vol")
    controller.write_manifest(f"{name}.yaml", vm(name))
    running = controller.wait_state(name, "running")
    pool = controller.state / "pool" / name
    data, scratch = pool / "data.qcow2", pool / "scratch.qcow2"
    assert data.is_file() and scratch.is_file()

    shown = controller.domctl("get", name, "-o", "json")
    disks = {disk["name"]: disk for disk in json.loads(shown.stdout)["disks"]}
    assert disks["data"]["virtualSize"] == 8 * 2**20 and disks["data"]["format"] == "qcow2"
    assert Path(disks["scratch"]["source"]) == scratch
    described = controller.domctl("describe", name).stdout
    assert "Disks:" in described and str(data) in described

    inode = data.stat().st_ino
    controller.restart()
    again = controller.wait_state(name, "running")
    assert again["pid"] == running["pid"] and data.stat().st_ino == inode  # adopted, kept

    controller.remove_manifest(f"{name}.yaml")
    undefined = controller.wait_event(name, "undefined", "removed")
    assert undefined["message"] == f"kept: {data}", undefined
    assert data.is_file() and not scratch.exists()
