"""`domctl get -w`: the domains as `get` prints them, then one more row (or document) each time
one changes, as it happens, until ^C (exit 130, cli/main.py) or the controller ends the stream.

The changes come from the API's watch stream (a domain's status document now and at every
change, pushed by the status store; `{"name", "deleted": true}` when one goes), never from
polling. The stream starts by sending every domain's document as it is: one equal to what the
first listing printed is no change and is not printed again. A table keeps the first listing's
column widths, so the rows stay under their headers; a deleted domain is a row with only its
name and "deleted" as MESSAGE. Other formats print each changed document on its own (kubectl's
`get -w -o json|yaml|name|jsonpath`).

Public surface:
    follow(client, name, selector, output, chosen, first)
"""

from __future__ import annotations

import sys
import time

from controller.cli.output import headers, render, row
from controller.cli.render import line, widths

TYPE_CHECKING = False  # typing's constant without typing's import (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from controller.cli.client import Client
    from controller.cli.output import Column, Output

    Document = dict[str, Any]

DELETED = "deleted"


def follow(client: Client, name: str | None, selector: str | None, output: Output,
           chosen: list[Column], first: list[Document]) -> None:
    """Print `first` (the listing), then every change of NAME (None: of every domain
    `selector` picks) from the watch stream."""
    if output.table:
        top = headers(chosen)
        sizes = widths(top, [row(chosen, doc, time.time()) for doc in first])
        print(line(top, sizes), flush=True)

        def show(doc: Document) -> None:
            if doc.get("deleted"):
                cells = [doc["name"] if header == "NAME" else DELETED if header == "MESSAGE"
                         else "-" for header in top]
            else:
                cells = row(chosen, doc, time.time())
            print(line(cells, sizes), flush=True)
    else:
        def show(doc: Document) -> None:
            text = render(output, doc)
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()

    shown: dict[str, Document] = {}
    for doc in first:
        shown[str(doc.get("name"))] = doc
        show(doc)
    for doc in client.stream("watch", name=name, labelSelector=selector):
        subject = str(doc.get("name"))
        if doc.get("deleted"):
            if shown.pop(subject, None) is not None:
                show(doc)
        elif shown.get(subject) != doc:
            shown[subject] = doc
            show(doc)
