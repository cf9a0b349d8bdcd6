"""Strict YAML: parse a file once into located nodes, then into plain data.

Called by controller/manifests/loader.py. PyYAML accepts duplicate keys silently (the last wins), so
a manifest with `memory:` twice would run with a value the author may not have meant; here every
duplicate is an error at the second key. Each document keeps its node tree so that any error found
later (schema, semantics) can be pointed at a line and column.

Never builds objects from YAML tags (safe loader only), never reads the file itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import yaml

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~3x faster

MERGE_TAG = "tag:yaml.org,2002:merge"
# tags YAML 1.1 resolves plain scalars to; `off`, `yes`, `0755` and `1e3` all land here
_IMPLICIT_NON_STRING = {
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:null": "null (no value)",
    "tag:yaml.org,2002:timestamp": "a date",
}

PathElem = str | int


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True)
class YamlProblem:
    path: tuple[PathElem, ...]
    position: Position
    message: str


@dataclass(frozen=True)
class Document:
    index: int  # 0-based position in the file
    node: yaml.Node
    data: object


class YamlSyntaxError(Exception):
    """The file is not well-formed YAML (or has duplicate keys); carries every problem found."""

    def __init__(self, problems: Sequence[YamlProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in self.problems))


def _mark_position(mark: yaml.Mark | None) -> Position:
    if mark is None:
        return Position(1, 1)
    return Position(mark.line + 1, mark.column + 1)


def parse(text: str) -> list[Document]:
    """All non-empty documents of `text`; raises YamlSyntaxError with located problems."""
    loader = _BaseLoader(text)
    documents: list[Document] = []
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                index += 1
                continue
            duplicates = list(_duplicate_keys(node, ()))
            if duplicates:
                raise YamlSyntaxError(duplicates)
            documents.append(Document(index, node, loader.construct_document(node)))
            index += 1
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "invalid YAML"
        if err.context and err.problem:
            problem = f"{err.problem} ({err.context})"
        raise YamlSyntaxError([YamlProblem((), _mark_position(mark), problem)]) from None
    except yaml.YAMLError as err:
        raise YamlSyntaxError([YamlProblem((), Position(1, 1), str(err))]) from None
    finally:
        loader.dispose()
    return documents


def _duplicate_keys(node: yaml.Node, path: tuple[PathElem, ...]) -> Iterator[YamlProblem]:
    """Walk the raw node tree (before merge keys are expanded, so `<<:` overrides stay legal)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = str(key_node.value)
            if key in seen:
                yield YamlProblem(path + (key,), _mark_position(key_node.start_mark),
                                  f"duplicate key '{key}' (YAML would silently keep only the last)")
            seen.add(key)
            yield from _duplicate_keys(value_node, path + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, path + (i,))


@dataclass(frozen=True)
class Located:
    """Where a path points in a document: the deepest node reached, and the key node if any."""

    node: yaml.Node
    key_node: yaml.Node | None
    complete: bool  # False when the path leaves the document (e.g. a missing field)

    @property
    def position(self) -> Position:
        anchor = self.key_node if self.key_node is not None else self.node
        return _mark_position(anchor.start_mark)


def locate(root: yaml.Node, path: Sequence[PathElem]) -> Located:
    """Follow `path` (keys and list indexes) through a node tree, merge keys included."""
    node, key_node = root, None
    for elem in path:
        found = _child(node, elem)
        if found is None:
            return Located(node, key_node, complete=False)
        key_node, node = found
    return Located(node, key_node, complete=True)


def _child(node: yaml.Node, elem: PathElem) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.SequenceNode) and isinstance(elem, int):
        return (None, node.value[elem]) if 0 <= elem < len(node.value) else None
    if not isinstance(node, yaml.MappingNode):
        return None
    merged: list[yaml.Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            merged.append(value_node)
        elif str(key_node.value) == str(elem):
            return key_node, value_node
    for source in merged:  # `<<: *base` or `<<: [*a, *b]`
        for candidate in (source.value if isinstance(source, yaml.SequenceNode) else [source]):
            found = _child(candidate, elem)
            if found is not None:
                return found
    return None


def implicit_type_hint(node: yaml.Node) -> str | None:
    """A hint when an unquoted scalar was read as something other than a string.

    YAML 1.1 turns `off`, `yes`, `no`, `on` into booleans and `0755` into an octal number;
    the usual fix is to quote the value.
    """
    if not isinstance(node, yaml.ScalarNode) or node.style not in (None, ""):
        return None
    kind = _IMPLICIT_NON_STRING.get(node.tag)
    if kind is None:
        return None
    return f"unquoted {node.value!r} is read as {kind} in YAML; quote it ('{node.value}') " \
           "if you mean the string"
