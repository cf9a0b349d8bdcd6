"""The `domctl` command group (click): `validate`, and the commands that talk to the controller.

Each command is a thin shell over a module. `validate` works offline: it needs no daemon and
touches nothing running. `run`, the controller itself, is named to this group by the console
script's entry point (controller/service/entry.py) and imported only when it is used: the CLI
imports no daemon code (checked by import-linter), so `domctl get` loads neither the engine,
the drivers nor the settings tree.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from controller.cli import commands


class LazyGroup(click.Group):
    """A command group whose commands may also be given as "module:attribute", imported the
    first time they are looked up (to run them, or for --help), never at start-up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, str] = {}

    def add_lazy_command(self, name: str, target: str) -> None:
        self._lazy[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy.get(cmd_name)
        if target is not None and cmd_name not in self.commands:
            module, _, attribute = target.partition(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="domctl", prog_name="domctl",
                      message="%(prog)s %(version)s")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level of `run`, the only command that logs.")
def main(log_level: str) -> None:
    """domctl keeps qemu VMs and LXC containers in the state their YAML manifests declare."""
    # `run` (controller/service/command.py) reads --log-level from this context's params.


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one document with every problem, for tools.")
def validate(paths: tuple[str, ...], output: str) -> None:
    """Check manifest files and directories (domains and networks); exit 1 if any is invalid.

    Directories are scanned like the controller scans its manifests directory (*.yaml, *.yml;
    dot files and editor temp files skipped). Each problem is printed as
    FILE:LINE:COLUMN: FIELD: MESSAGE.
    """
    from controller.manifests.loader import load_paths  # jsonschema: only for `validate`

    result = load_paths(paths)
    if output == "json":
        click.echo(json.dumps({
            "valid": not result.problems,
            "files": result.files,
            "domains": sorted(d.name for d in result.domains),
            "networks": sorted(n.name for n in result.networks),
            "problems": [p.to_dict() for p in result.problems],
        }, indent=2))
    else:
        for problem in result.problems:
            click.echo(str(problem))
        summary = (f"{result.files} file(s), {len(result.domains)} valid domain(s), "
                   f"{len(result.networks)} valid network(s), {len(result.problems)} problem(s)")
        click.echo(summary, err=True)
    sys.exit(1 if result.problems else 0)


commands.register(main)
main.add_lazy_command("import-libvirt", "controller.cli.importer:import_libvirt")
main.add_lazy_command("export", "controller.cli.export:export")
