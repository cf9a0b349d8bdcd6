"""`domctl get -o jsonpath=TEMPLATE`: kubectl's JSONPath templates over jsonpath-ng.

A template is text with `{...}` parts, as kubectl's: `{.state}`, `{.items[*].name}`,
`{range .items[*]}{.name}{"\\t"}{.state}{"\\n"}{end}`, `{"text"}`; a path starts with `.`, `@`
or `$` and is relative to the document (in a range, to the current item). Each part prints its
values joined by single spaces: strings as they are, anything else as JSON; a path that finds
nothing prints nothing (kubectl's default, --allow-missing-template-keys). `get` applies the
template to one document (`get NAME`), else to `{"kind": "List", "items": [...]}` as kubectl does.

jsonpath-ng rather than python-jsonpath: both are typed and well kept, but jsonpath-ng reads the
filter form kubectl's documentation uses (`[?(@.state=="running")]`) and imports in about 30 ms
where python-jsonpath takes 60-100 ms. It is imported here only, and this module only for
`-o jsonpath` (the CLI's start-up is measured: tests/unit/test_cli_startup.py).

Public surface:
    Template(text) (ValueError for a template that does not parse): render(document) -> str
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse
from jsonpath_ng.jsonpath import JSONPath


@dataclass(frozen=True)
class _Path:
    source: str
    compiled: JSONPath

    def values(self, document: Any) -> list[Any]:
        return [match.value for match in self.compiled.find(document)]


@dataclass(frozen=True)
class _Range:
    over: _Path
    body: tuple[_Part, ...]


_Part = str | _Path | _Range


class Template:
    """A parsed template; `render` applies it to a document."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._parts = _parse(_tokens(text), nested=False)[0]

    def render(self, document: Any) -> str:
        return _render(self._parts, document)


def _tokens(text: str) -> list[tuple[bool, str]]:
    """(is an action, text) pieces: the literal text and each `{...}`'s inside."""
    tokens: list[tuple[bool, str]] = []
    start = 0
    while (opening := text.find("{", start)) >= 0:
        if opening > start:
            tokens.append((False, text[start:opening]))
        closing = _closing(text, opening + 1)
        tokens.append((True, text[opening + 1:closing].strip()))
        start = closing + 1
    if text[start:]:
        tokens.append((False, text[start:]))
    return tokens


def _closing(text: str, at: int) -> int:
    """The index of the `}` ending the action that starts at `at` (quoted text skipped)."""
    quote = ""
    escaped = False
    for index in range(at, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "}":
            return index
    raise ValueError(f"unclosed action at character {at}: a '{{' without its '}}'")


def _parse(tokens: list[tuple[bool, str]],
           nested: bool) -> tuple[tuple[_Part, ...], list[tuple[bool, str]]]:
    """The parts up to the end of the tokens, or (nested) up to their range's `{end}`; the
    tokens after it."""
    parts: list[_Part] = []
    while tokens:
        (action, text), tokens = tokens[0], tokens[1:]
        if not action:
            parts.append(text)
        elif text == "end":
            if not nested:
                raise ValueError("{end} without a {range ...}")
            return tuple(parts), tokens
        elif text.startswith("range ") or text == "range":
            body, tokens = _parse(tokens, nested=True)
            parts.append(_Range(_path(text[len("range"):].strip()), body))
        elif text.startswith(("\"", "'")):
            parts.append(_literal(text))
        else:
            parts.append(_path(text))
    if nested:
        raise ValueError("{range ...} without its {end}")
    return tuple(parts), tokens


def _literal(text: str) -> str:
    """`{"\\n"}`: a quoted string, with JSON's escapes."""
    body = text[1:-1] if len(text) >= 2 and text[-1] == text[0] else None
    if body is None:
        raise ValueError(f"unterminated string {text!r}")
    try:
        value = json.loads('"' + body.replace('"', '\\"') + '"' if text[0] == "'" else text,
                           strict=False)
    except ValueError:
        raise ValueError(f"not a string literal: {text!r}") from None
    return str(value)


def _path(text: str) -> _Path:
    if not text:
        raise ValueError("an empty path: expected {.field} or {range .items[*]}")
    if text[0] in ".[":
        expression = f"${text}"
    elif text[0] == "@":
        expression = f"${text[1:]}"
    elif text[0] == "$":
        expression = text
    else:
        raise ValueError(f"{{{text}}}: a path starts with '.', '@' or '$' (such as {{.state}})")
    try:
        return _Path(text, parse(expression))
    except (JSONPathError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{{{text}}}: {err}") from None


def _render(parts: tuple[_Part, ...], document: Any) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, _Path):
            out.append(" ".join(_text(value) for value in part.values(document)))
        else:
            items = part.over.values(document)
            if len(items) == 1 and isinstance(items[0], list):  # `range .items`: its items
                items = items[0]
            out.extend(_render(part.body, item) for item in items)
    return "".join(out)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
