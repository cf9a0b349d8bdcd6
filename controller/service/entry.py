"""The `domctl` console script (pyproject [project.scripts]): the CLI's group, plus `run`.

`run` lives in the daemon's layer (controller/service/command.py), which the CLI must not
import; this entry point names it to the CLI's lazy group, so it and the settings tree load
only when `run` is used and `domctl get` starts with the client alone.
"""

from __future__ import annotations

from controller.cli.main import main as cli


def main() -> None:
    """The `domctl` console script: the CLI's commands, and `run`."""
    cli.add_lazy_command("run", "controller.service.command:run")
    cli()
