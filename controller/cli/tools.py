"""`domctl stats`, `exec`, `vncdisplay`: the daily looks into a running domain (virsh domstats,
incus exec, virsh vncdisplay), lazy commands registered in cli/main.py.

Each is a thin shell over one API route (docs/api.md): the figures are the daemon's
(controller/engine/stats.py: CPU % since the previous ask), the exec command line is the
driver's (lxc-attach with a clean environment), which this process then becomes, so the
command's exit code and the terminal pass through untouched; the VNC address is qemu's own
answer, an automatic port included.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from controller.cli.commands import _client
from controller.cli.parser import Failed, Parser, UsageError
from controller.cli.render import cell, size, table
from controller.cli.selection import add_selector, exclusive

STATS_HEADERS = ["NAME", "CPU%", "CPU-TIME", "MEMORY", "BALLOON", "DISK-READ", "DISK-WRITE",
                 "NET-RX", "NET-TX"]


def configure_stats(parser: Parser) -> None:
    """`stats`'s arguments (its help is in cli/main.py's LAZY)."""
    parser.add_argument("name", metavar="NAME", nargs="?")
    add_selector(parser, "Only")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table",
                        help="json: every figure, per disk and NIC [default: %(default)s].")
    parser.set_defaults(handler=stats)


def stats(args: argparse.Namespace) -> None:
    exclusive(args.name, args.selector)
    figures = _client(args).call("stats", name=args.name, labelSelector=args.selector)
    if args.output == "json":
        print(json.dumps(figures, indent=2))
        return
    for text in table(STATS_HEADERS, [_row(item) for item in figures]):
        print(text)


def _row(figures: dict[str, Any]) -> list[str]:
    """One domain's line: totals over its disks and NICs, as virsh domstats sums them."""
    if "error" in figures:
        return [str(figures["name"]), *(["?"] * (len(STATS_HEADERS) - 2)), str(figures["error"])]
    cpu, memory = figures.get("cpu") or {}, figures.get("memory") or {}
    disks, nics = figures.get("disks") or [], figures.get("interfaces") or []
    percent = cpu.get("percent")
    return [str(figures["name"]), f"{percent:.1f}" if percent is not None else "-",
            f"{cpu['seconds']:.2f}s" if "seconds" in cpu else "-",
            size(memory.get("rssBytes")), size(memory.get("balloonBytes")),
            size(sum(d.get("readBytes", 0) for d in disks)) if disks else "-",
            size(sum(d.get("writeBytes", 0) for d in disks)) if disks else "-",
            size(sum(n.get("rxBytes", 0) for n in nics)) if nics else "-",
            size(sum(n.get("txBytes", 0) for n in nics)) if nics else "-"]


def configure_exec(parser: Parser) -> None:
    """`exec`'s arguments (its help is in cli/main.py's LAZY)."""
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("command", metavar="COMMAND", nargs=argparse.REMAINDER,
                        help="The command and its arguments, after `--`.")
    parser.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> None:
    from controller.cli import console  # os.execvp: this process becomes the command

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("give the command to run after `--`: domctl exec NAME -- COMMAND...")
    argv = _client(args).call("exec", name=args.name, command=command)["argv"]
    console.run([str(arg) for arg in argv])


def configure_vncdisplay(parser: Parser) -> None:
    """`vncdisplay`'s arguments (its help is in cli/main.py's LAZY)."""
    parser.add_argument("name", metavar="NAME")
    parser.set_defaults(handler=vncdisplay)


def vncdisplay(args: argparse.Namespace) -> None:
    display = _client(args).call("display", name=args.name)
    if display.get("vnc") is None:
        raise Failed(f"{args.name} has no VNC display (spec.qemu.graphics.vnc)")
    print(cell(display["vnc"]))
