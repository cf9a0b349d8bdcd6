"""The `domctl` console script (pyproject [project.scripts]): the CLI's commands, plus `run`.

`run` lives in the daemon's layer (controller/service/command.py), which the CLI must not
import; this entry point names it to the CLI's parser as a lazy command, so it and the settings
tree load only when `run` is parsed and `domctl get` starts with the client alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.cli.main import LAZY, Lazy
from controller.cli.main import main as cli

RUN = Lazy("run", """Run the controller in the foreground.

Until SIGTERM or SIGINT, which stop the controller only: the domains keep running, and the
next `domctl run` adopts them again.""", "controller.service.command:configure")


def main(argv: Sequence[str] | None = None) -> int:
    """The `domctl` console script: the CLI's commands, and `run`; the exit code."""
    return cli(argv, (RUN, *LAZY))
