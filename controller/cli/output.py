"""What `domctl get` prints: its `-o` formats and the domains' table, shared by a plain `get`
and `get -w` (cli/watch.py); and what it shows, from its words (`split_kind`, kubectl's way:
`get` and `get NAME` are domains, `get networks` (or `network`) lists networks, `get network
NAME` shows one; `get domain NAME` reaches a domain whose name is a kind's).

Formats, as kubectl's: `table` (the default), `wide` (adds MODE, the addresses of
status.interfaces, the VNC display and LABELS), `name` (`domain/NAME` lines: the document's
kind, lowercased, then its name), `json`, `yaml` (loaded only for it), `jsonpath=TEMPLATE`
(cli/jsonpath.py, loaded only for it; the template is parsed with the arguments, so a bad one is
a usage error before any request). `--show-labels` adds LABELS to a table. Documents of a fleet
(a host in fleet mode answers for every domain of the fleet, each with its `host`) get a HOST
column.

Public surface:
    split_kind(words) -> (kind, name), Output, output_format(text), FORMATS,
    columns(wide, labels, fleet=False) -> list[Column], headers(columns), row(columns, doc, now),
    render(output, chosen) -> str
"""

from __future__ import annotations

import argparse
import json

from controller.cli.render import age, cell, size
from controller.protocol import headline

TYPE_CHECKING = False  # typing's constant without typing's import (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from controller.cli.jsonpath import Template

    Document = dict[str, Any]
    Column = tuple[str, Callable[[Document, float], str]]  # header, the cell of a document

FORMATS = ("table", "wide", "name", "json", "yaml")
KINDS = {"domain": "domain", "domains": "domain", "network": "network",
         "networks": "network"}


def split_kind(words: tuple[str, ...]) -> tuple[str, str | None]:
    """(kind, name) of `get`'s words; ValueError saying what is accepted."""
    if len(words) == 0:
        return "domain", None
    if len(words) == 1:
        return (KINDS[words[0]], None) if words[0] in ("networks", "network") \
            else ("domain", words[0])
    if len(words) == 2 and words[0] in KINDS:
        return KINDS[words[0]], words[1]
    raise ValueError("expected [NAME], networks [NAME], or domain|network NAME")


class Output:
    """A parsed `-o`: the format, and jsonpath's template."""

    __slots__ = ("kind", "template")

    def __init__(self, kind: str, template: Template | None = None) -> None:
        self.kind, self.template = kind, template

    @property
    def table(self) -> bool:
        return self.kind in ("table", "wide")


def output_format(text: str) -> Output:
    """-o's type: one of FORMATS or jsonpath=TEMPLATE (the template parsed now)."""
    if text in FORMATS:
        return Output(text)
    kind, equals, template = text.partition("=")
    if kind != "jsonpath" or not equals:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected one of {', '.join(FORMATS)} or jsonpath=TEMPLATE "
            "(such as jsonpath='{.items[*].name}')")
    from controller.cli.jsonpath import Template  # jsonpath-ng: only for this output

    try:
        return Output(kind, Template(template))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"jsonpath template {template!r}: {err}") from None


def _field(key: str) -> Callable[[Document, float], str]:
    return lambda doc, _now: cell(doc.get(key))


def message(doc: Document, now: float) -> str:
    """get's MESSAGE: a saved domain's image (size, age), then the most telling condition."""
    image = doc.get("saved")
    note = (f"saved image {size(image.get('size'))}, {age(image.get('savedAt'), now)} old"
            if isinstance(image, dict) else "")
    return "; ".join(m for m in (note, headline(doc)) if m) or "-"


def addresses(doc: Document) -> str:
    """Every address of a domain's NICs, for `get -o wide`."""
    found = [str(a) for nic in doc.get("interfaces") or () for a in nic.get("addresses") or ()]
    return ",".join(found) or "-"


def labels(doc: Document, _now: float = 0.0) -> str:
    """LABELS: key=value,... sorted by key; "-" without any."""
    found = doc.get("labels") or {}
    return ",".join(f"{key}={found[key]}" for key in sorted(found)) or "-"


_COLUMNS: tuple[Column, ...] = (
    ("NAME", _field("name")), ("DRIVER", _field("driver")), ("DESIRED", _field("desired")),
    ("STATE", _field("state")), ("REASON", _field("reason")), ("ID", _field("id")),
    ("PID", _field("pid")), ("AGE", lambda doc, now: age(doc.get("since"), now)),
    ("MESSAGE", message))
_MODE: Column = ("MODE", _field("management"))
_ADDRESSES: Column = ("ADDRESSES", lambda doc, _now: addresses(doc))
_VNC: Column = ("VNC", _field("display"))
_LABELS: Column = ("LABELS", labels)
_HOST: Column = ("HOST", _field("host"))


def columns(wide: bool, show_labels: bool, fleet: bool = False) -> list[Column]:
    """The table's columns: HOST after NAME for a fleet's documents; wide adds MODE after
    DESIRED, ADDRESSES and VNC before MESSAGE; LABELS come last (wide or --show-labels), as in
    kubectl."""
    chosen = list(_COLUMNS)
    if wide:
        chosen[3:3] = [_MODE]
        chosen[-1:-1] = [_ADDRESSES, _VNC]
    if fleet:
        chosen[1:1] = [_HOST]
    return [*chosen, _LABELS] if wide or show_labels else chosen


def headers(chosen: list[Column]) -> list[str]:
    return [header for header, _ in chosen]


def row(chosen: list[Column], doc: Document, now: float) -> list[str]:
    return [value(doc, now) for _, value in chosen]


def render(output: Output, chosen: Document | list[Document]) -> str:
    """The text of a document or a list of them in a format other than the tables."""
    if output.kind == "json":
        return json.dumps(chosen, indent=2) + "\n"
    if output.kind == "yaml":
        import yaml  # only for -o yaml: every command pays for what it imports at start

        return str(yaml.safe_dump(chosen, sort_keys=False))
    if output.template is not None:  # kubectl's: the object, or a List of them
        return output.template.render(
            chosen if isinstance(chosen, dict) else {"kind": "List", "items": chosen})
    return "".join(f"{str(doc.get('kind') or 'Domain').lower()}/{doc.get('name')}\n"
                   for doc in ([chosen] if isinstance(chosen, dict) else chosen))
