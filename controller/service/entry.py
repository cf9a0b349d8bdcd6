"""The `domctl` console script (pyproject [project.scripts]): the CLI's commands, plus `run` and
the fleet's commands.

`run` lives in the daemon's layer (controller/service/command.py), which the CLI must not
import; this entry point names it to the CLI's parser as a lazy command, so it and the settings
tree load only when `run` is parsed and `domctl get` starts with the client alone. The fleet's
commands (`publish`, `hosts`, `cordon`, `uncordon`, `drain`: docs/fleet.md) import fleet code,
so they are lazy commands of this entry point too, each module imported only when used.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.cli.main import LAZY, Lazy
from controller.cli.main import main as cli

RUN = Lazy("run", """Run the controller in the foreground.

Until SIGTERM or SIGINT, which stop the controller only: the domains keep running, and the
next `domctl run` adopts them again.""", "controller.service.command:configure")


FLEET = (
    Lazy("publish", """Mirror a manifests directory into etcd, for the fleet.

Validated as a whole (every problem printed as file:line:column, nothing written), with the
mass-prune guard, in one etcd transaction.""", "controller.service.publish_command:configure"),
    Lazy("hosts", "List the fleet's hosts: state, capacity, labels.",
         "controller.service.fleet_admin:configure_hosts"),
    Lazy("cordon", "Keep new domains off a fleet host.",
         "controller.service.fleet_admin:configure_cordon"),
    Lazy("uncordon", "Let new domains onto a cordoned fleet host again.",
         "controller.service.fleet_admin:configure_uncordon"),
    Lazy("drain", "Cordon a fleet host and move its domains to other hosts.",
         "controller.service.fleet_admin:configure_drain"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """The `domctl` console script: the CLI's commands, `run` and the fleet's; the exit code."""
    return cli(argv, (RUN, *FLEET, *LAZY))
