"""controller/manifests/render.py: the manifest spelling of a Domain, and where a diff path sits
in it (the round trip over every golden manifest is tests/test_support.py's)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from controller.manifests import render
from controller.manifests.loader import load_text
from reconcilers.diff import field_diff
from reconcilers.model import Disk, LxcSpec, Vnc
from tests.support.domains import TCG_PC, domain

GiB = 1024 * 1024 * 1024


def test_a_domain_renders_in_the_manifests_spelling_with_defaults_left_out() -> None:
    qemu = dataclasses.replace(TCG_PC, vnc=Vnc(port=5901),
                               disks=(Disk("data", image="/srv/d.img", size=10 * GiB),))
    built = domain("web", memory="1Gi", shutdown_timeout="1500ms", vcpus=2, qemu=qemu)
    doc = render.document(built)
    assert doc["spec"] == {
        "driver": "qemu", "shutdownTimeout": "1500ms", "memory": "1Gi", "vcpus": 2,
        "qemu": {"accel": "tcg", "disks": [
            {"name": "data", "image": "/srv/d.img", "size": "10Gi"}],
            "graphics": {"vnc": {"port": 5901}}}}
    assert doc["metadata"] == {"name": "web", "uuid": built.metadata.uuid}
    assert load_text(yaml.safe_dump(doc, sort_keys=False), "web.yaml") == [built]


@pytest.mark.parametrize(("seconds", "text"), [(30.0, "30s"), (0.5, "500ms"), (0.0001, 0.0001)])
def test_durations_are_written_in_the_largest_exact_form(seconds: float,
                                                         text: str | float) -> None:
    assert render.duration(seconds) == text


@pytest.mark.parametrize(("field", "path"), [
    ("memory", ("spec", "memory")),
    ("shutdown_timeout", ("spec", "shutdownTimeout")),
    ("qemu.vnc.port", ("spec", "qemu", "graphics", "vnc", "port")),
    ("qemu.disks[1].delete_policy", ("spec", "qemu", "disks", 1, "deletePolicy")),
    ("lxc.image", ("spec", "lxc", "rootfs", "image")),
])
def test_a_diff_path_names_its_place_in_the_document(field: str,
                                                     path: tuple[str | int, ...]) -> None:
    assert render.manifest_path(field) == path


def test_every_field_diff_path_finds_the_rendered_values() -> None:
    before = domain("ct", "lxc", memory="256Mi", lxc=LxcSpec(image="/img/a.tar"))
    after = domain("ct", "lxc", memory="1Gi", lxc=LxcSpec(image="/img/b.tar"))
    old, new = render.document(before), render.document(after)
    found = {change.path: (render.lookup(old, render.manifest_path(change.path)),
                           render.lookup(new, render.manifest_path(change.path)))
             for change in field_diff(before.spec, after.spec)}
    assert found == {"memory": ("256Mi", "1Gi"), "lxc.image": ("/img/a.tar", "/img/b.tar")}
    assert render.lookup(old, ("spec", "vcpus")) is None  # left out: the default
