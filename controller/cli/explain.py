"""`domctl explain FIELD.PATH`: a manifest field's documentation (kubectl explain's job).

A thin shell over controller/manifests/explain.py, registered lazily in cli/main.py: offline,
it reads the installed schemas and needs no controller. An unknown path exits 1 naming the
fields that exist there.
"""

from __future__ import annotations

import argparse

from controller.cli.parser import Failed, Parser
from controller.manifests.explain import UnknownField, explain


def configure(parser: Parser) -> None:
    """`explain`'s arguments (a lazy command: its help is in cli/main.py's LAZY)."""
    parser.add_argument("path", metavar="FIELD.PATH", nargs="?", default="",
                        help="spec.qemu.disks, network.spec.ipv4, ... [default: a Domain]")
    parser.add_argument("--recursive", action="store_true",
                        help="List every field below it, as a tree.")
    parser.set_defaults(handler=show)


def show(args: argparse.Namespace) -> None:
    try:
        print(explain(args.path, recursive=args.recursive), end="")
    except UnknownField as err:
        raise Failed(str(err)) from None
