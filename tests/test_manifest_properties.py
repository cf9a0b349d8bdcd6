"""Property tests: schema-generated manifests load, and mutated ones fail with a located message."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from controller.manifests import schema
from controller.manifests.errors import ManifestError
from controller.manifests.loader import load_text
from controller.manifests.semantic import check

LOCATED = re.compile(r"^m\.yaml:\d+:\d+: \S+: .+")
SETTINGS = settings(max_examples=6, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

manifests = from_schema(schema.schema())


def dump(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


@SETTINGS
@given(manifests)
def test_every_schema_instance_loads_unless_a_cross_field_rule_refuses_it(document: Any) -> None:
    cross_field = check(document)
    try:
        [domain] = load_text(dump(document), "m.yaml")
    except ManifestError as err:
        # only the rules JSON Schema cannot express may refuse a schema-valid document
        assert cross_field, [str(p) for p in err.problems]
        assert all(LOCATED.match(str(p)) for p in err.problems)
        return
    assert not cross_field
    assert domain.name == document["metadata"]["name"]
    assert load_text(dump(document), "m.yaml")[0].generation == domain.generation


MUTATIONS = st.sampled_from(["drop", "retype", "unknown"])


def _mutate(document: Any, data: st.DataObject) -> Any:
    """Break one field somewhere in the document: remove it, give it a wrong type, or add a typo."""
    document = copy.deepcopy(document)
    node = document
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        children = [k for k in keys if isinstance(node[k], (dict, list)) and node[k]]
        if not children or data.draw(st.booleans()):
            break
        node = node[data.draw(st.sampled_from(children))]
    mutation = data.draw(MUTATIONS)
    if isinstance(node, list) or mutation == "unknown":
        target = node[0] if isinstance(node, list) else node
        if isinstance(target, dict):
            target["zzUnknownField"] = 1
        else:
            node.append({"zzUnknownField": 1})
    elif mutation == "drop" and node:
        node.pop(data.draw(st.sampled_from(list(node))))
    else:
        key = data.draw(st.sampled_from(list(node)))
        node[key] = {"wrong": ["type"]} if not isinstance(node[key], dict) else "wrong-type"
    return document


@SETTINGS
@given(manifests, st.data())
def test_mutated_manifests_fail_with_a_located_message_never_a_traceback(
        document: Any, data: st.DataObject) -> None:
    mutated = _mutate(document, data)
    if not schema.findings(mutated):
        return  # the mutation happened to keep it valid (e.g. an optional field dropped)
    try:
        load_text(dump(mutated), "m.yaml")
    except ManifestError as err:
        assert err.problems
        assert all(LOCATED.match(str(p)) for p in err.problems), [str(p) for p in err.problems]
    else:
        raise AssertionError("a schema-invalid manifest loaded")


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises_anything_but_a_manifest_error(text: str) -> None:
    try:
        load_text(text, "m.yaml")
    except ManifestError as err:
        assert all(LOCATED.match(str(p)) for p in err.problems)
