"""Strict YAML: parse a file once into located nodes, then into plain data.

Called by controller/manifests/loader.py. PyYAML accepts duplicate keys silently (the last wins), so
a manifest with `memory:` twice would run with a value the author may not have meant; here every
duplicate is an error at the second key. Each document keeps its node tree so that any error found
later (schema, semantics) can be pointed at a line and column.

Hostile input is bounded before any node tree is built: a first pass over the parser's events
(a flat loop, no recursion) refuses a document nested deeper than MAX_DEPTH, one with more than
MAX_ALIASES aliases, an alias inside its own anchor (a cycle), and one whose size with every alias
expanded would exceed MAX_NODES; the expanded size is counted from each anchor's size, never by
expanding. Only then are nodes composed and constructed, and the duplicate-key walk visits each
node once, whatever the number of aliases pointing at it. The byte size of a file is bounded by
the caller (loader.py). Values are quoted in messages by errors.quote(): a short prefix only.

Never builds objects from YAML tags (safe loader only), never reads the file itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import yaml

from controller.manifests.errors import quote

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

MAX_DEPTH = 50
"""Nesting of mappings and sequences a document may have: a manifest needs under 10, and every
level costs a few frames of Python's recursion limit (1000) in the constructor and the checks."""
MAX_ALIASES = 100
"""Aliases (`*name`, merge keys included) a document may use."""
MAX_NODES = 20_000
"""Nodes a document may have with every alias expanded (a domain has about a hundred): an
alias bomb of a few lines would expand to billions."""


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
    _check_bounds(text)
    loader = _BaseLoader(text)
    documents: list[Document] = []
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                index += 1
                continue
            duplicates = list(_duplicate_keys(node, (), set()))
            if duplicates:
                raise YamlSyntaxError(duplicates)
            documents.append(Document(index, node, _construct(loader, node)))
            index += 1
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "invalid YAML"
        if err.context and err.problem:
            problem = f"{err.problem} ({err.context})"
        raise YamlSyntaxError([YamlProblem((), _mark_position(mark), _short(problem))]) from None
    except yaml.YAMLError as err:
        raise YamlSyntaxError([YamlProblem((), Position(1, 1), _short(str(err)))]) from None
    finally:
        loader.dispose()
    return documents


def _short(message: str) -> str:
    """PyYAML's own messages may quote a token (an alias name, a tag) whole."""
    return message if len(message) <= 200 else message[:200] + "…"


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    """The document's data; a scalar Python cannot convert (an integer of more than 4300
    digits, the 31st of February) is a located problem, not a ValueError out of the loader."""
    try:
        return loader.construct_document(node)
    except (ValueError, OverflowError) as err:
        message = f"a value cannot be read: {_short(str(err))}"
        raise YamlSyntaxError([YamlProblem((), _mark_position(node.start_mark),
                                           message)]) from None


def _check_bounds(text: str) -> None:
    """Refuse deep nesting, many aliases, cycles and alias bombs from the event stream alone."""
    loader = _BaseLoader(text)
    try:
        depth = aliases = expanded = 0
        open_anchors: set[str] = set()
        sizes: dict[str, int] = {}  # anchor → its expanded size, once its node is complete
        starts: list[tuple[str | None, int]] = []  # open collections: anchor, expanded at start
        while loader.check_event():
            event = loader.get_event()
            problem = None
            if isinstance(event, yaml.DocumentStartEvent):
                aliases = expanded = 0
                sizes.clear()
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                expanded += 1
                starts.append((event.anchor, expanded - 1))
                if event.anchor is not None:
                    open_anchors.add(event.anchor)
                if depth > MAX_DEPTH:
                    problem = f"nested more than {MAX_DEPTH} levels deep"
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
                anchor, before = starts.pop()
                if anchor is not None:
                    open_anchors.discard(anchor)
                    sizes[anchor] = expanded - before
            elif isinstance(event, yaml.ScalarEvent):
                expanded += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if event.anchor in open_anchors:
                    problem = f"alias {quote(event.anchor)} refers to a node that contains it " \
                              "(a recursive structure)"
                elif aliases > MAX_ALIASES:
                    problem = f"more than {MAX_ALIASES} aliases in one document"
                elif event.anchor is not None:  # an unknown anchor: composing reports it
                    expanded += sizes.get(event.anchor, 1)
            if problem is None and expanded > MAX_NODES:
                problem = f"more than {MAX_NODES} values with every alias expanded " \
                          "(too large, or an alias bomb)"
            if problem is not None:
                raise YamlSyntaxError([YamlProblem((), _mark_position(event.start_mark),
                                                   problem)])
    except yaml.MarkedYAMLError:
        return  # a syntax error: parse() reports it with its position
    except yaml.YAMLError:
        return
    finally:
        loader.dispose()


def _duplicate_keys(node: yaml.Node, path: tuple[PathElem, ...],
                    visited: set[int]) -> Iterator[YamlProblem]:
    """Walk the raw node tree (before merge keys are expanded, so `<<:` overrides stay legal).

    A node reached again through an alias is not walked again: its keys were checked once.
    """
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = str(key_node.value)
            if key in seen:
                yield YamlProblem(path + (key,), _mark_position(key_node.start_mark),
                                  f"duplicate key {quote(key)} (YAML would silently keep only "
                                  "the last)")
            seen.add(key)
            yield from _duplicate_keys(value_node, path + (key,), visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, path + (i,), visited)


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


def position_inside(node: yaml.Node, line: int, column: int, lines: Sequence[str]) -> Position:
    """Where `line`:`column` (1-based) of a scalar's value stands in the file of `lines`.

    Exact for a literal block scalar (`|`), whose lines are the file's lines after the one of
    the indicator, each less its indentation; any other style (folded, quoted, plain) does not
    keep the value's lines, so the scalar's own position stands for all of them.
    """
    value_lines = node.value.split("\n") if isinstance(node, yaml.ScalarNode) else []
    if getattr(node, "style", None) != "|" or not 1 <= line <= len(value_lines):
        return _mark_position(node.start_mark)
    file_line = node.start_mark.line + line  # 0-based: the indicator's line, then the value's
    text = lines[file_line] if file_line < len(lines) else ""
    content = value_lines[line - 1]
    indent = len(text) - len(content) if content and text.endswith(content) else 0
    return Position(file_line + 1, indent + column)


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
    shown = quote(node.value)
    return f"unquoted {shown} is read as {kind} in YAML; quote it ({shown}) if you mean the string"
