"""`domctl export` against the real daemon and tiny tcg VMs (the console script, as a user runs it).

Converged, the export is the manifest; after a restart-only edit (memory, under updatePolicy
Live) it shows the value the domain still runs with, and the manifest's above it as a comment.
The import round trip of issue 16: real `virsh dumpxml` output → `domctl import-libvirt` →
started by the controller → `domctl export` → a manifest the loader reads as the imported one.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from controller.manifests.loader import load_text
from reconcilers.diff import field_diff
from reconcilers.model import Domain
from tests.support.domains import domain, load

from .conftest import Controller, condition

pytestmark = pytest.mark.qemu
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "libvirt"


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


def test_a_libvirt_domain_round_trips_through_import_start_and_export(
        controller: Controller, tmp_path: Path) -> None:
    name = controller.name("imported")
    xml = (GOLDEN / "virsh-diskless.xml").read_text()
    xml = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", xml, count=1)
    xml = re.sub(r"<uuid>[^<]*</uuid>", f"<uuid>{uuid.uuid4()}</uuid>", xml, count=1)
    (tmp_path / "in.xml").write_text(xml)
    done = controller.domctl("import-libvirt", "--state", "running", "-o",
                             str(controller.manifests), str(tmp_path / "in.xml"))
    assert done.returncode == 0, done.stderr
    imported = load(controller.manifests / f"{name}.yaml")
    controller.wait_state(name, "running", "booted", timeout=60)
    _, live = exported(controller, name)
    assert live.metadata == imported.metadata  # the uuid is the XML's
    assert field_diff(imported.spec, live.spec) == ()  # field by field: none differs
