"""The manifest loader against good and bad manifests: every error names file, line and field."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from controller.manifests.errors import ManifestError
from controller.manifests.loader import is_manifest_name, load_paths, load_text
from reconcilers.model import DesiredState, DiskFormat, DriverName, Placement
from tests.support.cli import invoke

EXAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "examples"

GOOD = """\
apiVersion: domctl/v1
kind: Domain
metadata:
  name: web-1
spec:
  driver: qemu
  memory: 1Gi
  qemu:
    disks:
      - name: root
        source: /var/lib/images/web-1.qcow2
        format: qcow2
"""


def problems_of(text: str, filename: str = "m.yaml") -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_text(textwrap.dedent(text), filename)
    return [str(p) for p in caught.value.problems]


def one_problem(text: str) -> str:
    found = problems_of(text)
    assert len(found) == 1, found
    return found[0]


def test_good_manifest_is_normalised() -> None:
    [domain] = load_text(GOOD, "good.yaml")
    assert domain.name == "web-1"
    assert domain.spec.driver is DriverName.QEMU
    assert domain.spec.state is DesiredState.RUNNING
    assert domain.spec.memory == 1024 ** 3
    assert domain.spec.shutdown_timeout == 60.0
    assert domain.spec.qemu is not None
    assert domain.spec.qemu.disks[0].format is DiskFormat.QCOW2
    assert domain.source.file == "good.yaml" and domain.source.line == 1


def test_reformatting_is_not_a_new_generation() -> None:
    [a] = load_text(GOOD, "a.yaml")
    reformatted = GOOD.replace("memory: 1Gi", "memory: 1024  # MiB") + "\n# trailing comment\n"
    [b] = load_text(reformatted, "b.yaml")
    assert a.generation == b.generation
    [c] = load_text(GOOD.replace("1Gi", "2Gi"), "c.yaml")
    assert c.generation != a.generation


def test_a_placement_is_read_in_a_canonical_order_and_checked() -> None:
    placed = GOOD.replace("  memory: 1Gi\n", "  memory: 1Gi\n  placement:\n"
                          "    hosts: [h2, h1]\n    selector: {zone: a}\n"
                          "    spreadGroup: web\n    failover: true\n")
    [domain] = load_text(placed, "p.yaml")
    assert domain.spec.placement == Placement(hosts=("h1", "h2"), selector=(("zone", "a"),),
                                              spread_group="web", failover=True)
    [again] = load_text(placed.replace("[h2, h1]", "[h1, h2]"), "p.yaml")
    assert again.generation == domain.generation
    assert "spec.placement.failover" in one_problem(placed.replace("failover: true",
                                                                  "failover: sometimes"))


def test_typo_gets_did_you_mean_at_its_line() -> None:
    message = one_problem(GOOD.replace("  memory: 1Gi", "  memroy: 1Gi"))
    assert message == "m.yaml:7:3: spec.memroy: unknown field 'memroy'; did you mean 'memory'?"


def test_bad_enum_value_is_located() -> None:
    message = one_problem(GOOD.replace("format: qcow2", "format: vmdk"))
    assert message.startswith("m.yaml:12:9: spec.qemu.disks[0].format: must be one of raw, qcow2")


def test_duplicate_key_is_refused_at_the_second_key() -> None:
    message = one_problem(GOOD.replace("  memory: 1Gi", "  memory: 1Gi\n  memory: 2Gi"))
    assert message.startswith("m.yaml:8:3: spec.memory: duplicate key 'memory'")


def test_merge_key_overrides_are_not_duplicates() -> None:
    text = GOOD.replace("spec:\n", "spec:\n  <<: {memory: 2Gi, vcpus: 2}\n")
    [domain] = load_text(text, "m.yaml")
    assert domain.spec.memory == 1024 ** 3 and domain.spec.vcpus == 2


def test_path_as_name_is_refused() -> None:
    message = one_problem(GOOD.replace("name: web-1", "name: ../../etc/passwd"))
    assert message.startswith(
        "m.yaml:4:3: metadata.name: \"../../etc/passwd\" is not a domain name")


def test_yaml_syntax_error_is_located() -> None:
    message = one_problem(GOOD.replace("  memory: 1Gi", "  memory: [1Gi"))
    assert message.startswith("m.yaml:8:")
    assert "(yaml)" in message


def test_bad_unit_is_explained() -> None:
    message = one_problem(GOOD.replace("1Gi", "1GB"))
    assert message.startswith('m.yaml:7:3: spec.memory: "1GB" is not a size')
    assert "Mi" in message


def test_yaml11_boolean_gets_a_quoting_hint() -> None:
    message = one_problem(GOOD.replace("  memory: 1Gi", "  state: off"))
    assert message.startswith("m.yaml:7:3: spec.state: must be one of running, paused, shutoff")
    assert "quote it ('off')" in message


def test_missing_field_points_at_its_parent() -> None:
    message = one_problem(GOOD.replace("- name: root\n        source:", "- source:"))
    assert message == "m.yaml:10:9: spec.qemu.disks[0].name: required field is missing"


def test_section_of_the_other_driver_is_refused() -> None:
    text = GOOD.replace("driver: qemu", "driver: lxc")
    message = one_problem(text)
    assert message.startswith("m.yaml:8:3: spec.qemu: a qemu section is only allowed when")


def test_relative_path_is_refused() -> None:
    message = one_problem(GOOD.replace("/var/lib/images/web-1.qcow2", "images/web-1.qcow2"))
    assert message.startswith('m.yaml:11:9: spec.qemu.disks[0].source: "images/web-1.qcow2" '
                              "is not an absolute path")


@pytest.mark.parametrize(("edit", "field", "words"), [
    (("  memory: 1Gi", "  memory: 1Gi\n  currentMemory: 2Gi"), "spec.currentMemory",
     "must not exceed memory"),
    (("  memory: 1Gi", "  memory: 1Gi\n  cputune: {vcpupin: [{vcpu: 1, cpuset: '0'}]}"),
     "spec.cputune.vcpupin[0].vcpu", "vCPU 1 does not exist"),
    (("  memory: 1Gi", "  memory: 1Gi\n  lifecycle: {onPoweroff: restart, onReboot: destroy}"),
     "spec.lifecycle.onPoweroff", "cannot combine"),
    (("    disks:", "    initrd: /boot/initrd.img\n    disks:"), "spec.qemu.initrd",
     "needs a kernel"),
    (("  memory: 1Gi", "  memory: 1Gi\n  maxVcpus: 2\n  vcpus: 3"), "spec.maxVcpus",
     "must be at least vcpus"),
], ids=["currentMemory", "vcpupin", "lifecycle", "initrd-without-kernel", "maxVcpus"])
def test_semantic_checks_are_located(edit: tuple[str, str], field: str, words: str) -> None:
    message = one_problem(GOOD.replace(*edit))
    assert f": {field}: " in message and words in message
    assert message.startswith("m.yaml:")


def test_lxc_refuses_qemu_only_fields() -> None:
    text = """\
    apiVersion: domctl/v1
    kind: Domain
    metadata: {name: ct}
    spec:
      driver: lxc
      maxVcpus: 2
      lxc: {rootfs: busybox}
    """
    assert one_problem(text).startswith("m.yaml:6:3: spec.maxVcpus: maxVcpus applies to qemu")


def test_every_document_of_a_file_is_checked() -> None:
    second = GOOD.replace("web-1", "web-2").replace("1Gi", "1TB")
    found = problems_of(GOOD + "---\n" + second)
    assert len(found) == 1 and found[0].startswith("m.yaml:20:3: spec.memory:")


def test_non_mapping_document() -> None:
    assert one_problem("- a\n- b\n").startswith("m.yaml:1:1: (document): a manifest document")


def test_name_conflict_across_files_refuses_both(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    result = load_paths([tmp_path])
    assert result.domains == []
    assert len(result.problems) == 2
    assert f"also declared at {tmp_path / 'b.yaml'}:1" in result.problems[0].message


@pytest.mark.parametrize(("name", "accepted"), [
    ("web.yaml", True), ("web.yml", True), (".web.yaml", False),
    (".ansible_tmpab12web.yaml", False), ("web.yaml~", False), (".web.yaml.swp", False),
    ("web.yaml.tmp", False), ("#web.yaml#", False), ("web.json", False), ("4913", False),
])
def test_manifest_file_names(name: str, accepted: bool) -> None:
    assert is_manifest_name(name) is accepted


def test_examples_validate() -> None:
    result = load_paths([EXAMPLES])
    assert result.problems == []
    assert len(result.domains) >= 5
    assert {d.spec.driver for d in result.domains} == {DriverName.QEMU, DriverName.LXC}


def test_cli_validate_exit_codes_and_json(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ok = invoke(capsys, ["validate", str(EXAMPLES)])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("format: qcow2", "format: vmdk"))
    text = invoke(capsys, ["validate", str(bad)])
    assert text.exit_code == 1
    assert f"{bad}:12:9: spec.qemu.disks[0].format: must be one of" in text.output
    as_json = invoke(capsys, ["validate", "-o", "json", str(bad)])
    assert as_json.exit_code == 1
    report = json.loads(as_json.output)
    assert report["valid"] is False
    assert report["problems"][0]["line"] == 12
    assert report["problems"][0]["field"] == "spec.qemu.disks[0].format"
