"""The `domctl` command line: its one parser (argparse, cli/parser.py), `validate`, and the call
of the command chosen, with its exit code.

Each command is a thin shell over a module. `validate` works offline: it needs no daemon and
touches nothing running. `export` and `import-libvirt` are lazy commands (their modules load
when they are used), and so is `run`, the controller itself, which the console script's entry
point (controller/service/entry.py) adds: the CLI imports no daemon code (checked by
import-linter), so `domctl get` loads neither the engine, the drivers nor the settings tree.

The global options (--socket, --log-level, --version) go before or after the command; after
parsing, `args.socket` is the --socket given or None, `args.log_level` the level or "info".
Exit codes: 0; 1 when the command failed (`error: MESSAGE` on stderr: an API error, the
controller not running, a command's own failure); 2 for a usage error; 3 when `wait` timed out
(cli/waiting.py); 130 after ^C (how a followed stream, `get -w` too, ends).

Public surface:
    main(argv=None, lazy=LAZY) -> int, build(lazy=LAZY) -> Parser, LAZY, Lazy
"""

from __future__ import annotations

import argparse
import json
import sys

from controller.cli import commands
from controller.cli.client import ApiError
from controller.cli.parser import Commands, Failed, Parser, UsageError, existing_path
from controller.protocol import installed_version

TYPE_CHECKING = False  # typing's constant without typing's import (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Sequence

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL = "info"


class Lazy:
    """A command whose module loads only when it is used: its name, its help (the first
    paragraph is its line in `domctl --help`), and "module:function" adding its arguments."""

    __slots__ = ("doc", "name", "target")

    def __init__(self, name: str, doc: str, target: str) -> None:
        self.name, self.doc, self.target = name, doc, target


LAZY = (
    Lazy("export", """Print NAME's live configuration as a manifest.

With a comment where the manifest on disk differs (a change not in effect yet, such as a
restart-only edit).""",
         "controller.cli.export:configure"),
    Lazy("import-libvirt", """Convert libvirt domain XML to domctl manifests.

Of `virsh dumpxml --security-info NAME`: offline, touching nothing running.

FILES are XML files, `-` (or none) for standard input; one input may hold several domains
one after the other. Whatever has no domctl equivalent becomes a `# not imported:` comment
in the manifest. Exit 1 if any input could not be converted.""",
         "controller.cli.importer:configure"),
    Lazy("explain", """Show what a manifest field means, from the schemas.

FIELD.PATH is dotted field names, after an optional kind (domain, the default, or network):
`domctl explain spec.qemu.disks`, `domctl explain network.spec.ipv4`. Offline.""",
         "controller.cli.explain:configure"),
    Lazy("show", """Print NAME's effective configuration: every field, defaults filled in.

The manifest of the configuration NAME runs with (its manifest's when it is not running), every
field written, at its default too, with a comment where the manifest on disk differs.""",
         "controller.cli.export:configure_show"),
    Lazy("stats", """Show running domains' CPU, memory, disk and network figures.

Of every running domain, NAME or -l: CPU % (since the previous ask), CPU time, memory (RSS;
the balloon of a VM), disk and NIC traffic (as the guest sees it). -o json: per disk and NIC.""",
         "controller.cli.tools:configure_stats"),
    Lazy("exec", """Run a command inside a running container: domctl exec NAME -- CMD...

lxc-attach with a clean environment (TERM kept; PATH and HOME set); the command's exit code
is domctl's, and it gets a terminal of its own when stdin is one. A VM has no way in from the
host (use ssh, or `domctl console`).""",
         "controller.cli.tools:configure_exec"),
    Lazy("vncdisplay", """Print the VNC display of a running VM (HOST:DISPLAY).

qemu's own answer, so an automatic port (`vnc: {}`) is the one it took; as `virsh vncdisplay`.""",
         "controller.cli.tools:configure_vncdisplay"),
)


class _Version(argparse.Action):
    """--version: the installed package's version (importlib.metadata loads only for it)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"domctl {installed_version()}")
        parser.exit()


def _global_options(parser: Parser) -> None:
    """Add the global options: to the main parser, and to each command's when it is built (a
    function, not a parent parser: argparse would build and copy one more parser)."""
    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--socket", metavar="PATH", default=argparse.SUPPRESS,
        help="The controller's API socket [default: $DOMCTL_SOCKET, else domctl.sock in the "
             "runtime dir if writable, else domctl-ro.sock].")
    group.add_argument(
        "--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
        help="How much `domctl run` (the controller) logs on stderr: the messages of this "
             f"level and above [default: {LOG_LEVEL}]. The other commands log nothing.")
    group.add_argument("--version", action=_Version, help="Print domctl's version and exit.")


def build(lazy: Sequence[Lazy] = LAZY) -> Parser:
    """The parser of every command; those of `lazy` load their arguments when used."""
    parser = Parser(prog="domctl",
                    description="domctl keeps qemu VMs and LXC containers in the state their "
                                "YAML manifests declare.")
    _global_options(parser)
    # prog given: argparse would format the main parser's usage to find it
    found = parser.add_subparsers(action=Commands, title="commands", dest="command",
                                  metavar="COMMAND", prog=parser.prog)
    assert isinstance(found, Commands)
    found.common = _global_options
    found.add("validate", validate, _validate_arguments)
    commands.register(found)
    for command in lazy:
        found.add_lazy(command.name, command.doc, command.target)
    return parser


def main(argv: Sequence[str] | None = None, lazy: Sequence[Lazy] = LAZY) -> int:
    """Run the command `argv` names (default: sys.argv[1:]); its exit code."""
    parser = build(lazy)
    try:
        args = parser.parse_args(argv)
        if args.command is None:  # `domctl` alone: what there is to run
            parser.print_help(sys.stderr)
            return 2
        args.socket = getattr(args, "socket", None)
        args.log_level = getattr(args, "log_level", LOG_LEVEL)
        return _call(args)
    except SystemExit as done:  # argparse's --help, --version and usage errors
        return done.code if isinstance(done.code, int) else int(done.code is not None)


def _call(args: argparse.Namespace) -> int:
    try:
        code = args.handler(args)
    except UsageError as err:
        args.command_parser.error(str(err))
    except (ApiError, Failed) as err:
        print(f"error: {err.message if isinstance(err, ApiError) else err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # ^C is how a followed stream ends: no traceback
        return 130
    return int(code or 0)


def _validate_arguments(parser: Parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", type=existing_path)
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help="json: one document with every problem, for tools "
                             "[default: %(default)s].")


def validate(args: argparse.Namespace) -> int:
    """Check manifests offline; exit 1 if any is invalid.

    Files and directories of domains and networks. Directories are scanned like the controller
    scans its manifests directory (*.yaml, *.yml; dot files and editor temp files skipped).
    Each problem is printed as FILE:LINE:COLUMN: FIELD: MESSAGE.
    """
    from controller.manifests.loader import load_paths  # jsonschema: only for `validate`

    result = load_paths(args.paths)
    if args.output == "json":
        print(json.dumps({
            "valid": not result.problems,
            "files": result.files,
            "domains": sorted(d.name for d in result.domains),
            "networks": sorted(n.name for n in result.networks),
            "problems": [p.to_dict() for p in result.problems],
        }, indent=2))
    else:
        for problem in result.problems:
            print(str(problem))
        print(f"{result.files} file(s), {len(result.domains)} valid domain(s), "
              f"{len(result.networks)} valid network(s), {len(result.problems)} problem(s)",
              file=sys.stderr)
    return 1 if result.problems else 0
