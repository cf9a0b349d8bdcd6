"""YAML text with comments where they belong: the writer of the importers' manifests.

PyYAML writes data but no comments, and a comment spliced into its output afterwards would have
to guess lines. So the importer builds a small tree (`Map`, lists of `Map`s, scalars) in which
comments are items of their own, and `render()` writes it in block style. Keys are the
importer's own words; every value goes through PyYAML's emitter (`scalar()`), which quotes
whatever YAML would read as something else. A comment can hold anything from the input: its
line breaks and characters YAML refuses or reads as line breaks are escaped, so a hostile value
can end no comment early and add no key.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import yaml

Scalar = str | int | bool
# YAML reads these as line breaks (YAML 1.1, as PyYAML does): no line of ours may hold them
_BREAKS = {"\n", "\r", "\x85", "\u2028", "\u2029"}
WIDTH = 100  # comments are wrapped to this many columns (a long word stays whole)


@dataclass(frozen=True)
class Comment:
    text: str


@dataclass
class Map:
    """A mapping, in insertion order, with comments between its entries."""

    items: list[tuple[str, Value] | Comment] = field(default_factory=list)

    def set(self, key: str, value: Value) -> Value:
        """Add `key: value` (keys are added once) and return the value."""
        self.items.append((key, value))
        return value

    def comment(self, *texts: str) -> None:
        self.items.extend(Comment(text) for text in texts)

    def nest(self, key: str, child: Map) -> None:
        """Add `key: child` when `child` has keys, else only its comments (no empty `{}`)."""
        if child.keys():
            self.set(key, child)
        else:
            self.items.extend(item for item in child.items if isinstance(item, Comment))

    def keys(self) -> list[str]:
        return [item[0] for item in self.items if isinstance(item, tuple)]

    def get(self, key: str) -> Value | None:
        return next((item[1] for item in self.items
                     if isinstance(item, tuple) and item[0] == key), None)


Value = Scalar | Map | list["Map | Scalar"]


def render(document: Map) -> str:
    """`document` as YAML text (a complete document, ending with a newline)."""
    return "".join(f"{line}\n" for line in _map(document, 0))


def _map(mapping: Map, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for item in mapping.items:
        if isinstance(item, Comment):
            lines += comment_lines(item.text, pad)
            continue
        key, value = item
        if isinstance(value, Map) and value.keys():
            lines += [f"{pad}{key}:", *_map(value, indent + 2)]
        elif isinstance(value, Map):  # only comments, if any: after the empty mapping
            lines += [f"{pad}{key}: {{}}", *_map(value, indent + 2)]
        elif isinstance(value, list) and value:
            lines += [f"{pad}{key}:", *_sequence(value, indent + 2)]
        else:
            lines.append(f"{pad}{key}: {_inline(value)}")
    return lines


def _sequence(items: list[Map | Scalar], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for item in items:
        if not isinstance(item, Map) or not item.keys():
            lines.append(f"{pad}- {_inline(item)}")
            lines += _map(item, indent + 2) if isinstance(item, Map) else []
            continue
        first = next(i for i, entry in enumerate(item.items) if isinstance(entry, tuple))
        lines += _map(Map(item.items[:first]), indent)  # its leading comments, before the dash
        body = _map(Map(item.items[first:]), indent + 2)
        lines += [f"{pad}- {body[0].lstrip()}", *body[1:]]
    return lines


def _inline(value: Value) -> str:
    if isinstance(value, Map):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return scalar(value)


def scalar(value: Scalar) -> str:
    """`value` as one line of YAML that reads back as exactly `value` (quoted when needed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = yaml.safe_dump(value, allow_unicode=True, width=2**31, default_flow_style=True)
    text = text.removesuffix("\n").removesuffix("\n...")  # PyYAML ends a bare scalar so
    if any(char in _BREAKS for char in text):  # folded or kept raw: one escaped line instead
        text = yaml.safe_dump(value, allow_unicode=False, width=2**31, default_style='"')
        text = text.removesuffix("\n")
    return text



def comment_lines(text: str, pad: str) -> list[str]:
    """`# text`, wrapped at WIDTH, continued lines indented; unprintable characters escaped."""
    safe = "".join(" " if char in _BREAKS or char == "\t" else
                   char if char.isprintable() else f"\\u{ord(char):04x}" for char in text)
    wrapped = textwrap.wrap(safe, width=max(WIDTH - len(pad) - 2, 40), break_long_words=False,
                            break_on_hyphens=False, subsequent_indent="  ") or [""]
    return [f"{pad}# {line}".rstrip() for line in wrapped]
