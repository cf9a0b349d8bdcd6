"""spec.management, spec.dependsOn and spec.startPriority in manifests (#16), through the real
loader: read and defaulted (a default written out is the same generation), controller-only
(an edit never waits for a restart), and a dependsOn cycle across files refused with every
file of the cycle named."""

from __future__ import annotations

from pathlib import Path

from controller.manifests.loader import load_paths, load_text
from reconcilers.diff import Apply, classify_changes
from reconcilers.model import Management

VM = """\
apiVersion: domctl/v1
kind: Domain
metadata: {{name: {name}}}
spec:
  driver: qemu
"""


def vm(name: str, extra: str = "") -> str:
    return VM.format(name=name) + extra


def test_read_and_defaulted() -> None:
    [plain] = load_text(vm("a"), "a.yaml")
    spec = plain.spec
    assert (spec.management, spec.depends_on, spec.start_priority) == (Management.ENFORCE, (), 0)
    [written] = load_text(vm("a", "  management: Enforce\n  startPriority: 0\n"), "a.yaml")
    assert written.generation == plain.generation
    [set_] = load_text(vm("a", "  management: Observe\n  dependsOn: [db, cache]\n"
                               "  startPriority: 10\n"), "a.yaml")
    assert (set_.spec.management, set_.spec.depends_on, set_.spec.start_priority) == (
        Management.OBSERVE, ("cache", "db"), 10)


def test_the_fields_are_controller_only() -> None:
    [old] = load_text(vm("a"), "a.yaml")
    [new] = load_text(vm("a", "  management: Observe\n  dependsOn: [db]\n  startPriority: 5\n"),
                      "a.yaml")
    changes = classify_changes(old.spec, new.spec, {})
    assert {c.path for c in changes} == {"management", "depends_on", "start_priority"}
    assert {c.apply for c in changes} == {Apply.CONTROLLER}


def test_a_cycle_is_refused_naming_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(vm("a", "  dependsOn: [b]\n"))
    (tmp_path / "b.yaml").write_text(vm("b", "  dependsOn: [c]\n"))
    (tmp_path / "c.yaml").write_text(vm("c", "  dependsOn: [a]\n"))
    (tmp_path / "d.yaml").write_text(vm("d", "  dependsOn: [a, missing]\n"))
    (tmp_path / "e.yaml").write_text(vm("e", "  dependsOn: [e]\n"))
    result = load_paths([tmp_path])
    assert [d.name for d in result.domains] == ["d"]  # a missing dependency is no error
    by_file = {Path(p.file).name: str(p) for p in result.problems}
    assert sorted(by_file) == ["a.yaml", "b.yaml", "c.yaml", "e.yaml"]
    for name in "abc":
        message = by_file[f"{name}.yaml"]
        assert f"{name}.yaml:1:1: spec.dependsOn: a dependsOn cycle: " in message
        assert all(f"{m} ({tmp_path}/{m}.yaml:1)" in message for m in "abc"), message
    assert "a dependsOn cycle: e (" in by_file["e.yaml"]
