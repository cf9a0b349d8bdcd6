"""controller/manifests/render.py: the manifest spelling of a Domain, and where a diff path sits
in it (the round trip over every golden manifest is tests/test_support.py's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema

from controller.manifests import render, schema
from controller.manifests.errors import ManifestError
from controller.manifests.loader import load_file, load_text
from reconcilers.diff import field_diff
from reconcilers.model import Disk, Domain, LxcSpec, Vnc
from tests.support.domains import TCG_PC, domain

GiB = 1024 * 1024 * 1024
ROOT = Path(__file__).parent.parent.parent


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


@pytest.mark.parametrize(("seconds", "text"), [
    (30.0, "30s"), (0.5, "500ms"), (0.007, "7ms"), (0.0001, 0.0001),
    (2.2250738585e-313, 2.2250738585e-313),  # rounds to 0ms
    (26250.6, 26250.6)])  # "26250600ms" would load as 26250.600000000002
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


MANIFESTS = sorted([*ROOT.glob("tests/golden/*/*.yaml"), *ROOT.glob("manifests/examples/*.yaml")])


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_effective_form_with_every_default_loads_back_as_the_same_domain(path: Path) -> None:
    for loaded in load_file(path):
        if not isinstance(loaded, Domain):
            continue
        full = render.document(loaded, defaults=True)
        [again] = load_text(yaml.safe_dump(full, sort_keys=False), "m.yaml")
        assert (again.metadata, again.spec) == (loaded.metadata, loaded.spec)


def test_the_effective_form_writes_defaults_only_where_their_form_allows_them() -> None:
    qemu = dataclasses.replace(TCG_PC, disks=(Disk("base", image="/srv/b.img"),
                                              Disk("data", source="/srv/d.img")))
    spec = render.document(domain("vm", qemu=qemu), defaults=True)["spec"]
    assert (spec["vcpus"], spec["restartPolicy"], spec["stopMode"]) == (1, "Always", "shutdown")
    image, source = spec["qemu"]["disks"]
    assert (image.get("deletePolicy"), "format" not in image) == ("Retain", True)
    assert (source.get("format"), "deletePolicy" not in source) == ("raw", True)
    assert "dependsOn" not in spec  # an empty list says nothing
    lxc = render.document(domain("ct", "lxc"), defaults=True)["spec"]
    assert "cpu" not in lxc and "deletePolicy" not in lxc["lxc"]


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(from_schema(schema.schema()))
def test_any_loadable_manifest_survives_the_effective_form(document: Any) -> None:
    try:
        [loaded] = load_text(yaml.safe_dump(document, sort_keys=False), "m.yaml")
    except ManifestError:
        return  # a cross-field rule refused it: tests/test_manifest_properties.py's concern
    full = render.document(loaded, defaults=True)
    [again] = load_text(yaml.safe_dump(full, sort_keys=False), "m.yaml")
    assert (again.metadata, again.spec) == (loaded.metadata, loaded.spec)
