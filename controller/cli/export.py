"""`domctl export NAME`: the manifest of a domain's live configuration (`virsh dumpxml`'s job).

A thin shell over the API's `export` op (controller/api/backend.py), registered lazily in
cli/main.py. It prints the manifest the daemon rendered from the spec the domain runs with (the
manifest's own when it is not running), as YAML a controller loads back: a header comment says
where it came from, and above each field where the manifest on disk says otherwise a comment
gives that value (`# manifest: memory: 1Gi`; `(not set)` for a field the manifest leaves at
its default). A field the live spec leaves out has its comment above the nearest key it does
have, spelled from there; one inside a list item, above the list's key (`disks[0].cache`).
`-o json` prints the reply as it is, without comments. `domctl show NAME` is the same with every
field written, at its default too (the effective configuration, `incus config show --expanded`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from controller.cli.commands import _client
from controller.cli.parser import Parser

Path = tuple[str | int, ...]


def configure(parser: Parser) -> None:
    """`export`'s arguments (a lazy command: its help is in cli/main.py's LAZY)."""
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml",
                        help="json: the manifest and its differences, no comments "
                             "[default: %(default)s].")
    parser.set_defaults(handler=export)


def configure_show(parser: Parser) -> None:
    """`show`'s arguments: export's (a lazy command: its help is in cli/main.py's LAZY)."""
    configure(parser)
    parser.set_defaults(handler=show)


def show(args: argparse.Namespace) -> None:
    """export, every default written."""
    export(args, defaults=True)


def export(args: argparse.Namespace, defaults: bool = False) -> None:
    """The manifest, commented, or the reply as JSON."""
    reply = _client(args).call("export", name=args.name, defaults=defaults or None)
    if args.output == "json":
        print(json.dumps(reply, indent=2))
    else:
        print(commented(reply), end="")


def commented(reply: dict[str, Any]) -> str:
    """The YAML text of an export reply, with its header and difference comments."""
    text = yaml.safe_dump(reply["manifest"], sort_keys=False)
    lines = text.splitlines(keepends=True)
    root = yaml.compose(text)
    notes: dict[int, list[str]] = {}
    for difference in reply.get("differences") or ():
        path = tuple(difference["path"])
        lines_of = _lines(root, path)
        start = len(lines_of) - 1  # the deepest key present: a list item's own key, if any
        while start > 0 and isinstance(path[start], int):
            start -= 1
        line = lines_of[start]
        spelled = "".join(f"[{k}]" if isinstance(k, int) else f".{k}"
                          for k in path[start:]).lstrip(".")
        indent = len(lines[line]) - len(lines[line].lstrip(" -"))
        notes.setdefault(line, []).append(
            f"{' ' * indent}# manifest: {spelled}: {_inline(difference.get('manifest'))}\n")
    out = [_header(reply)]
    for number, line_text in enumerate(lines):
        out += [*notes.get(number, ()), line_text]
    return "".join(out)


def _header(reply: dict[str, Any]) -> str:
    name, source = reply["name"], reply.get("source") or "no manifest"
    count = len(reply.get("differences") or ())
    if not reply.get("running"):
        return f"# domctl export {name}: not running; its manifest's configuration ({source})\n"
    differs = (f"{count} field(s) differ from its manifest ({source}): see `# manifest:`"
               if count else f"as its manifest ({source}) says")
    return f"# domctl export {name}: the live configuration of the running domain, {differs}\n"


def _lines(root: yaml.Node | None, path: Path) -> list[int]:
    """The line of each key of `path` the composed document has, from the top down to the
    deepest one present (at least the first line)."""
    node, lines = root, []
    for key in path:
        found = _child(node, key)
        if found is None:
            break
        line, node = found
        lines.append(line)
    return lines or [0]


def _child(node: yaml.Node | None, key: str | int) -> tuple[int, yaml.Node] | None:
    """The line where `key` of a mapping (an index of a sequence) starts, and its value node."""
    if isinstance(node, yaml.MappingNode) and isinstance(key, str):
        for key_node, value in node.value:
            if key_node.value == key:
                return key_node.start_mark.line, value
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        item = node.value[key]
        return item.start_mark.line, item
    return None


def _inline(value: Any) -> str:
    if value is None:
        return "(not set)"
    return value if isinstance(value, str) else json.dumps(value)
