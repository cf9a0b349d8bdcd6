"""Label selectors on the command line: `-l key=value` wherever a command takes a NAME (`get`,
`wait`, `events`, the actions), and the domains a selector picks.

The selector is checked when the arguments are parsed (protocol.parse_selector, the parser the
daemon uses too), so a malformed one is a usage error before any request; it is then sent as is
to the server as `labelSelector`, which does the matching. A command takes a NAME or `-l`, not
both (kubectl's rule): `exclusive` says so as a usage error.

Public surface:
    add_selector(parser, what), selector(text) -> str, exclusive(name, selector, flag="-l"),
    matching(client, selector, domains_only) -> list[str]
"""

from __future__ import annotations

import argparse

from controller.cli.client import Client
from controller.cli.parser import Failed, Parser, UsageError
from controller.protocol import INVALID_KIND, SelectorError, parse_selector

SELECTOR_HELP = ("key=value, key!=value, key (has it), !key (has it not); joined by commas, "
                 "all must hold")


def selector(text: str) -> str:
    """An option type: a label selector, checked, as given."""
    try:
        parse_selector(text)
    except SelectorError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_selector(parser: Parser, what: str) -> None:
    """`-l/--selector SELECTOR` (args.selector, None when not given)."""
    parser.add_argument("-l", "--selector", type=selector, metavar="SELECTOR",
                        help=f"{what} the domains whose labels match: {SELECTOR_HELP}.")


def exclusive(name: str | None, chosen: str | None, flag: str = "-l") -> None:
    """A NAME and `flag` (a selector, --all) do not go together."""
    if name is not None and chosen:
        raise UsageError(f"a NAME and {flag} do not go together: give one or the other")


def matching(client: Client, chosen: str | None, domains_only: bool) -> list[str]:
    """The names `chosen` selects (None: every one), in the API's order; `domains_only` leaves
    out the invalid manifests that stand for no domain yet. None found is a failure."""
    documents = client.call("get", labelSelector=chosen)
    names = [str(doc["name"]) for doc in documents
             if not (domains_only and doc.get("kind") == INVALID_KIND)]
    if not names:
        raise Failed(f"no domain matches -l {chosen}" if chosen else "there are no domains")
    return names
