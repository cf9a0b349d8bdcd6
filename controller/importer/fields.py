"""Whether a value may go into a manifest field, by the manifest's own JSON Schema.

The importer writes a value only where the schema (schemas/domain.schema.json) takes it, so an
odd input value (a path with a line break, a bridge name too long, a model qemu has no name
for) becomes a comment instead of a manifest that fails to load. The rules are read from the
schema itself, never copied: pattern, enum, const, bounds and lengths of one field, which is
all the schema says about a single value. jsonschema is not needed for that, and stays out of
the importer.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

Node = dict[str, Any]


@functools.cache
def _definitions() -> dict[str, Node]:
    text = resources.files("schemas").joinpath("domain.schema.json").read_text()
    definitions: dict[str, Node] = json.loads(text)["definitions"]
    return definitions


def _resolve(node: Node) -> Node:
    """The node a `$ref`, or an `allOf` of one `$ref`, stands for."""
    while True:
        if "$ref" in node:
            node = _definitions()[node["$ref"].rsplit("/", 1)[1]]
        elif len(node.get("allOf", ())) == 1 and "$ref" in node["allOf"][0]:
            node = node["allOf"][0]
        else:
            return node


@functools.cache
def field(path: str) -> Node:
    """The schema of a field: a definition, then property names (`items` for a list's
    entries), dotted: `qemu.machine`, `spec.cputune.vcpupin.items.vcpu`, `absolutePath`."""
    first, *rest = path.split(".")
    node = _resolve(_definitions()[first])
    for name in rest:
        node = _resolve(node["items"] if name == "items" else node["properties"][name])
    return node


def fits(path: str, value: str | int) -> bool:
    """Whether `value` is valid for field `path` on its own."""
    return _fits(field(path), value)


def _fits(node: Node, value: str | int) -> bool:
    branches = node.get("oneOf") or node.get("anyOf")
    if branches:
        return any(_fits(_resolve(branch), value) for branch in branches)
    if "const" in node and value != node["const"]:
        return False
    if "enum" in node and value not in node["enum"]:
        return False
    kinds = node.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if isinstance(value, str):
        return ((not kinds or "string" in kinds)
                and re.fullmatch(node.get("pattern", ".*"), value, re.DOTALL) is not None
                and node.get("minLength", 0) <= len(value) <= node.get("maxLength", len(value)))
    return ((not kinds or "integer" in kinds or "number" in kinds)
            and node.get("minimum", value) <= value <= node.get("maximum", value))
