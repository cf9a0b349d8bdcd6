"""`domctl explain FIELD.PATH`: a manifest field's documentation, read from the JSON Schemas.

kubectl explain's role: the schemas in schemas/ are the one place each field is described (the
same text editors show through yaml-language-server), so the CLI prints it from there rather
than from a second copy. A path starts with an optional kind (`domain`, the default, or
`network`), then field names: `spec.qemu.disks`, `network.spec.dhcp.range`; a list's items
are walked through (`spec.qemu.disks.size` is a field of each disk). A `$ref` is followed, and
a field that wraps a shared definition (`memory` is a `size`) shows its own description first,
then the definition's.

Public surface:
    explain(path, recursive=False) -> str;  UnknownField (ValueError): names the known fields
    every_field(kind) -> (dotted path, schema node)...
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any

from controller.manifests import schema

_INDENT = "    "
_WIDTH = 80


class UnknownField(ValueError):
    """The path names no field of the schema; the message lists the fields that exist there."""


def explain(path: str, recursive: bool = False) -> str:
    """The documentation of the field at `path` (a kind, or dotted field names after it): its
    type, description, and its own fields (with `recursive`, every field below it, as a tree)."""
    kind, parts = _split(path)
    root = schema.schema(kind)
    node: Mapping[str, Any] = root
    walked: list[str] = []
    for part in parts:
        fields = _fields(root, node)
        if part not in fields:
            raise UnknownField(_unknown(kind, walked, part, fields))
        node = fields[part]
        walked.append(part)
    lines = [f"KIND:     {kind}", f"VERSION:  {root['properties']['apiVersion']['const']}", ""]
    if walked:
        required = walked[-1] in _required(root, _parent(root, walked))
        lines += [f"FIELD:    {walked[-1]} <{_type(root, node)}>"
                  + (" -required-" if required else ""), ""]
    lines += ["DESCRIPTION:", *_wrapped(_descriptions(root, node), _INDENT)]
    fields = _fields(root, node)
    if fields:
        lines += ["", "FIELDS:"]
        lines += (_tree(root, node, 1) if recursive else _listing(root, node))
    return "\n".join(lines) + "\n"


def _split(path: str) -> tuple[str, list[str]]:
    parts = [part for part in path.strip().split(".") if part]
    kinds = {kind.lower(): kind for kind in schema.KINDS}
    if parts and parts[0].lower() in kinds:
        return kinds[parts.pop(0).lower()], parts
    return schema.DOMAIN, parts


def _unknown(kind: str, walked: list[str], part: str, fields: Mapping[str, Any]) -> str:
    where = ".".join(walked) or kind
    if not fields:
        return f"{where} has no fields ({kind}.{'.'.join([*walked, part])} does not exist)"
    close = difflib.get_close_matches(part, list(fields), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{where} has no field {part!r}{hint}; its fields: {', '.join(fields)}"


def _resolve(root: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    """`node` with its `$ref` (or its one-element allOf of a `$ref`) followed."""
    target = node.get("$ref") or next(
        (item["$ref"] for item in node.get("allOf", ()) if "$ref" in item), None)
    if target is None:
        return node
    resolved = root
    for key in target.removeprefix("#/").split("/"):
        resolved = resolved[key]
    return _resolve(root, resolved)


def _shapes(root: Mapping[str, Any], node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The schema nodes a value of `node` may be: itself (resolved), its list items, and the
    alternatives of a oneOf/anyOf (a disk is one of three forms)."""
    node = _resolve(root, node)
    yield node
    if isinstance(node.get("items"), Mapping):
        yield from _shapes(root, node["items"])
    for key in ("oneOf", "anyOf"):
        for alternative in node.get(key, ()):
            yield from _shapes(root, alternative)


def _fields(root: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for shape in _shapes(root, node):
        for name, field in shape.get("properties", {}).items():
            fields.setdefault(name, field)
    return fields


def _required(root: Mapping[str, Any], node: Mapping[str, Any]) -> set[str]:
    return {name for shape in _shapes(root, node) for name in shape.get("required", ())}


def _parent(root: Mapping[str, Any], walked: list[str]) -> Mapping[str, Any]:
    node: Mapping[str, Any] = root
    for part in walked[:-1]:
        node = _fields(root, node)[part]
    return node


def _descriptions(root: Mapping[str, Any], node: Mapping[str, Any]) -> list[str]:
    texts = [node["description"]] if "description" in node else []
    resolved = _resolve(root, node)
    if resolved is not node and "description" in resolved:
        texts.append(resolved["description"])
    items = resolved.get("items")
    if isinstance(items, Mapping) and not texts:
        texts += _descriptions(root, items)
    return list(dict.fromkeys(texts)) or ["(no description)"]


def _type(root: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    resolved = _resolve(root, node)
    if "const" in resolved:
        return f"string: {resolved['const']}"
    if "enum" in resolved:
        return f"{_json_type(resolved['enum'][0])}: {' | '.join(map(str, resolved['enum']))}"
    kinds = resolved.get("type")
    if kinds == "array" and isinstance(resolved.get("items"), Mapping):
        return f"[]{_type(root, resolved['items'])}"
    if kinds is None:
        return " | ".join(dict.fromkeys(
            _type(root, alternative) for key in ("oneOf", "anyOf")
            for alternative in resolved.get(key, ()))) or "any"
    if kinds == "object" and "additionalProperties" in resolved and not resolved.get(
            "properties"):
        return "map[string]string"
    return " | ".join(kinds) if isinstance(kinds, list) else str(kinds)


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number"}.get(type(value), "string")


def _listing(root: Mapping[str, Any], node: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    required = _required(root, node)
    for name, field in _fields(root, node).items():
        lines.append(f"  {name}\t<{_type(root, field)}>"
                     + (" -required-" if name in required else ""))
        lines += _wrapped(_descriptions(root, field)[:1], _INDENT)
        lines.append("")
    return lines[:-1]


def _wrapped(texts: list[str], indent: str) -> list[str]:
    return [line for text in texts
            for line in textwrap.wrap(text, _WIDTH, initial_indent=indent,
                                       subsequent_indent=indent, break_on_hyphens=False)]


def _tree(root: Mapping[str, Any], node: Mapping[str, Any], depth: int) -> list[str]:
    return [f"{'   ' * (depth + len(path) - 1)}{path[-1]}\t<{_type(root, field)}>"
            for path, field in _walk(root, node, ())]


def every_field(kind: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every field of `kind`'s manifests, depth first: its dotted path and its own schema node
    (before any `$ref` is followed: what an editor shows for it)."""
    root = schema.schema(kind)
    for path, field in _walk(root, root, ()):
        yield ".".join(path), field


def _walk(root: Mapping[str, Any], node: Mapping[str, Any],
          path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    for name, field in _fields(root, node).items():
        yield (*path, name), field
        yield from _walk(root, field, (*path, name))
