"""`domctl export` against the real daemon and tiny tcg VMs (the console script, as a user runs it).

Converged, the export is the manifest; after a restart-only edit (memory, under updatePolicy
Live) it shows the value the domain still runs with, and the manifest's above it as a comment.
The import round trip of issue 16: real `virsh dumpxml` output (the diskless VM and the one
booting the test guest's kernel, as in test_import_start.py) → `domctl import-libvirt` →
started by the controller → `domctl export` → a manifest the loader reads as the imported one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.manifests.loader import load_text
from reconcilers.diff import field_diff
from reconcilers.model import Domain
from tests.support.domains import domain, load
from tests.support.guest import GuestBuild

from .conftest import Controller, condition
from .test_import_start import on_this_host

pytestmark = pytest.mark.qemu


def exported(controller: Controller, name: str) -> tuple[str, Domain]:
    """`domctl export NAME`'s text, and the domain the loader reads from it."""
    done = controller.domctl("export", name)
    assert done.returncode == 0, done.stderr
    [loaded] = load_text(done.stdout, f"{name}.yaml")
    return done.stdout, loaded


def test_export_is_the_manifest_until_a_restart_only_edit_waits(controller: Controller) -> None:
    name = controller.name("exp")
    declared = domain(name)
    controller.apply(declared)
    first = controller.wait_state(name, "running")
    text, live = exported(controller, name)
    assert (live.metadata, live.spec) == (declared.metadata, declared.spec)
    assert "# manifest:" not in text and "as its manifest" in text.splitlines()[0]

    controller.apply(domain(name, memory="96Mi"))
    status = controller.wait_status(
        name, "PendingRestart", lambda s: condition(s, "PendingRestart").get("status") == "True")
    assert status["pid"] == first["pid"]
    text, live = exported(controller, name)
    assert live.spec == declared.spec  # still the 64 MiB it runs with
    lines = text.splitlines()
    assert lines[lines.index("  memory: 64Mi") - 1] == "  # manifest: memory: 96Mi", text
    assert "1 field(s) differ from its manifest" in lines[0]


@pytest.mark.guest
def test_libvirt_domains_round_trip_through_import_start_and_export(
        controller: Controller, guest_build: GuestBuild, tmp_path: Path) -> None:
    names = {stem: controller.name(f"imported-{stem}") for stem in ("diskless", "kernel")}
    for stem, name in names.items():
        (tmp_path / f"{stem}.xml").write_bytes(on_this_host(stem, name, guest_build))
    done = controller.domctl("import-libvirt", "--state", "running", "-o",
                             str(controller.manifests),
                             *(str(tmp_path / f"{stem}.xml") for stem in names))
    assert done.returncode == 0, done.stderr
    for name in names.values():
        imported = load(controller.manifests / f"{name}.yaml")
        controller.wait_state(name, "running", "booted", timeout=60)
        _, live = exported(controller, name)
        assert live.metadata == imported.metadata  # the uuid is the XML's
        assert field_diff(imported.spec, live.spec) == ()  # field by field: none differs


def test_export_of_a_domain_not_running_is_its_manifest(controller: Controller) -> None:
    name = controller.name("expoff")
    declared = domain(name, state="shutoff")
    controller.apply(declared)
    controller.wait_state(name, "shutoff")
    text, loaded = exported(controller, name)
    assert (loaded.metadata, loaded.spec) == (declared.metadata, declared.spec)
    assert text.startswith(f"# domctl export {name}: not running; its manifest's configuration")
