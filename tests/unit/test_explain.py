"""controller/manifests/explain.py: `domctl explain` prints each field's own documentation from
the schemas, and every field of both kinds has one."""

from __future__ import annotations

import collections
import re

import pytest

from controller.manifests import schema
from controller.manifests.explain import UnknownField, every_field, explain
from tests.support.cli import invoke


def test_a_field_over_a_shared_definition_shows_its_own_text_first() -> None:
    text = explain("spec.memory")
    assert "FIELD:    memory <integer | string>" in text
    own, shared = text.index("Memory of the domain"), text.index("A size: an integer")
    assert own < shared


def test_a_list_of_objects_lists_its_items_fields_with_types_and_required_marks() -> None:
    text = explain("domain.spec.qemu.disks")
    assert "FIELD:    disks <[]object>" in text
    assert "  name\t<string> -required-" in text
    assert "  bus\t<string: virtio | sata | ide | scsi>" in text


def test_network_fields_are_reached_through_their_kind() -> None:
    text = explain("network.spec.ipv4")
    assert text.startswith("KIND:     Network\nVERSION:  domctl/v1\n")
    assert "FIELD:    ipv4 <object>" in text


def test_recursive_shows_the_tree_below_a_field() -> None:
    text = explain("spec.qemu", recursive=True)
    assert "   disks\t<[]object>\n      name\t<string>\n" in text


@pytest.mark.parametrize(("path", "words"), [
    ("spec.memroy", "spec has no field 'memroy' (did you mean memory?)"),
    ("spec.vcpus.count", "spec.vcpus has no fields"),
])
def test_an_unknown_path_names_the_fields_that_exist(path: str, words: str) -> None:
    with pytest.raises(UnknownField, match=re.escape(words)):
        explain(path)


@pytest.mark.parametrize("kind", sorted(schema.KINDS))
def test_every_field_has_its_own_description_for_editors_and_explain(kind: str) -> None:
    """A field whose node is a bare `$ref` shows its definition's text in editors: allowed only
    where that definition serves this one field; a shared one (a size, a duration) needs the
    field's own description beside it (`allOf: [$ref]`)."""
    fields = list(every_field(kind))
    assert len(fields) > 20
    uses = collections.Counter(field["$ref"] for _, field in fields if "$ref" in field)
    lacking = [path for path, field in fields
               if "description" not in field and uses.get(field.get("$ref", ""), 2) > 1]
    assert not lacking
    for path, _ in fields:
        assert "(no description)" not in explain(f"{kind}.{path}")


def test_the_command_prints_it_and_an_unknown_path_exits_1(
        capsys: pytest.CaptureFixture[str]) -> None:
    shown = invoke(capsys, ["explain", "network.spec.dns"])
    assert (shown.exit_code, shown.stdout) == (0, explain("network.spec.dns"))
    tree = invoke(capsys, ["explain", "spec.lifecycle", "--recursive"])
    assert "   onCrash\t<string:" in tree.stdout
    unknown = invoke(capsys, ["explain", "spec.memroy"])
    assert unknown.exit_code == 1
    assert "error: spec has no field 'memroy' (did you mean memory?)" in unknown.stderr
