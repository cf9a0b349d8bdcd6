"""`domctl export` (controller/cli/export.py) through the console script's `main` and a real
ApiServer over tests/support/api.py's DocsBackend: the YAML loads back, and each difference from the
manifest on disk is a comment above its field (or the nearest key the live spec has)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from controller.cli.export import commented
from controller.manifests import render
from controller.manifests.loader import load_text
from controller.settings import ApiSettings
from reconcilers.model import Disk
from tests.support.api import DocsBackend, ThreadedServer
from tests.support.cli import Result, invoke
from tests.support.domains import TCG_PC, domain

pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/unit/conftest.py

Export = Callable[..., Result]
RUNNING = {"name": "vm", "driver": "qemu", "state": "running"}


class Backend(DocsBackend):
    DIFFERENCES: ClassVar[list[dict[str, Any]]] = [
        {"field": "memory", "path": ["spec", "memory"], "manifest": "1Gi", "live": "64Mi"},
        {"field": "vcpus", "path": ["spec", "vcpus"], "manifest": 2, "live": None}]


@pytest.fixture
def server(sockdir: Path, tmp_path: Path) -> Iterator[ThreadedServer]:
    backend = Backend(tmp_path, {"vm": RUNNING, "off": {**RUNNING, "name": "off",
                                                         "state": "shutoff"}})
    with ThreadedServer(backend, sockdir, ApiSettings()) as running:
        yield running


@pytest.fixture
def export(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> Export:
    return lambda *args: invoke(capsys, ["--socket", str(server.ro), "export", *args])


def test_export_prints_the_live_manifest_with_a_comment_above_each_difference(
        export: Export) -> None:
    result = export("vm")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("# domctl export vm: the live configuration of the running domain, "
                        "2 field(s) differ from its manifest (/manifests/vm.yaml:1): see "
                        "`# manifest:`")
    assert lines[lines.index("  memory: 64Mi") - 1] == "  # manifest: memory: 1Gi"
    assert lines[lines.index("spec:") - 1] == "# manifest: spec.vcpus: 2"  # not in the live one
    [loaded], built = load_text(result.stdout, "vm.yaml"), domain("vm")
    assert (loaded.metadata, loaded.spec) == (built.metadata, built.spec)


def test_export_of_a_domain_not_running_says_so_and_json_has_no_comments(
        export: Export) -> None:
    result = export("off")
    assert result.stdout.startswith("# domctl export off: not running; its manifest's "
                                    "configuration (/manifests/off.yaml:1)\n")
    reply = json.loads(export("vm", "-o", "json").stdout)
    assert reply["manifest"]["metadata"]["name"] == "vm"
    assert reply["differences"] == Backend.DIFFERENCES


def test_export_of_an_unknown_domain_fails(export: Export) -> None:
    result = export("nope")
    assert result.exit_code == 1
    assert "nope" in result.stderr


def test_a_difference_inside_a_list_item_is_spelled_from_the_lists_key() -> None:
    qemu = dataclasses.replace(TCG_PC, disks=(Disk("a", "/x.img"),))
    reply = {"name": "vm", "running": True, "source": "vm.yaml:1",
             "manifest": render.document(domain("vm", qemu=qemu)), "differences": [
                 {"path": ["spec", "qemu", "disks", 0, "cache"], "manifest": "writeback"},
                 {"path": ["spec", "qemu", "disks", 0, "source"], "manifest": "/y.img"},
                 {"path": ["spec", "qemu", "disks", 1], "manifest": {"name": "b"}}]}
    lines = commented(reply).splitlines()
    at = lines.index("    disks:")
    assert lines[at - 2:at + 4] == [
        "    # manifest: disks[0].cache: writeback", '    # manifest: disks[1]: {"name": "b"}',
        "    disks:", "    - name: a", "      # manifest: source: /y.img", "      source: /x.img"]
