"""reconcilers/model.py's generations: a content hash of the sparse spec, stable across domctl
releases that add fields with defaults (a new generation is a new epoch, and a new epoch lifts
the API requests in force)."""

from __future__ import annotations

import dataclasses

from reconcilers.model import (
    Accel,
    Disk,
    DomainSpec,
    DriverName,
    QemuSpec,
    sparse_plain,
    spec_generation,
)


def test_a_spec_at_every_default_is_just_its_driver() -> None:
    assert sparse_plain(DomainSpec(driver=DriverName.LXC)) == {"driver": "lxc"}


def test_nested_and_listed_values_keep_only_what_differs_from_their_defaults() -> None:
    spec = DomainSpec(driver=DriverName.QEMU, vcpus=2,
                      qemu=QemuSpec(disks=(Disk("root", source="/srv/r.img"),)))
    assert sparse_plain(spec) == {"driver": "qemu", "vcpus": 2, "qemu": {
        "disks": [{"name": "root", "source": "/srv/r.img"}]}}


def test_a_release_adding_a_field_at_its_default_keeps_every_generation() -> None:
    later = dataclasses.make_dataclass(
        "LaterDomainSpec", [("zone", str, dataclasses.field(default="anywhere"))],
        bases=(DomainSpec,), frozen=True)
    today = DomainSpec(driver=DriverName.QEMU, memory=256 * 1024 * 1024,
                       qemu=QemuSpec(accel=Accel.TCG))
    upgraded = later(**{f.name: getattr(today, f.name) for f in dataclasses.fields(today)})
    assert spec_generation(upgraded, "u-1") == spec_generation(today, "u-1")
    moved = later(**{**{f.name: getattr(today, f.name) for f in dataclasses.fields(today)},
                     "zone": "rack-2"})
    assert spec_generation(moved, "u-1") != spec_generation(today, "u-1")
