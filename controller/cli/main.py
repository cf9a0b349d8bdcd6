"""The `domctl` command line (click). Each command is a thin shell over a controller module.

`validate` works offline: it needs no daemon and touches nothing running.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from controller.cli import commands

from controller.service import logconfig
from controller.engine.backoff import CrashLoopSettings
from controller.service.config import Paths, default_paths
from controller.engine.controller import ControllerSettings
from controller.engine.desired import PruneSettings
from controller.state.fsutil import LockHeldError
from controller.manifests.loader import load_paths

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def main(log_level: str) -> None:
    """domctl keeps qemu VMs and LXC containers in the state their YAML manifests declare."""
    logconfig.configure(log_level)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one document with every problem, for tools.")
def validate(paths: tuple[str, ...], output: str) -> None:
    """Check manifest files and directories; exit 1 if any is invalid.

    Directories are scanned like the controller scans its manifests directory (*.yaml, *.yml;
    dot files and editor temp files skipped). Each problem is printed as
    FILE:LINE:COLUMN: FIELD: MESSAGE.
    """
    result = load_paths(paths)
    if output == "json":
        click.echo(json.dumps({
            "valid": not result.problems,
            "files": result.files,
            "domains": sorted(d.name for d in result.domains),
            "problems": [p.to_dict() for p in result.problems],
        }, indent=2))
    else:
        for problem in result.problems:
            click.echo(str(problem))
        summary = (f"{result.files} file(s), {len(result.domains)} valid domain(s), "
                   f"{len(result.problems)} problem(s)")
        click.echo(summary, err=True)
    sys.exit(1 if result.problems else 0)


def _dir_option(flag: str, what: str) -> Callable[[F], F]:
    return click.option(flag, type=click.Path(file_okay=False, path_type=Path),
                        help=f"{what} [default: as root /etc, /var/lib, /run, /var/log under "
                             "domctl; as a user the XDG directories]")


@main.command()
@_dir_option("--manifests", "Directory of Domain manifests to watch.")
@_dir_option("--state-dir", "Status, events, audit log, domain records, driver data.")
@_dir_option("--runtime-dir", "API sockets, QMP sockets and pidfiles.")
@_dir_option("--log-dir", "One <name>.log per domain (argv, serial/console output).")
@_dir_option("--hooks-dir", "Hook scripts: qemu, lxc, qemu.d/*, lxc.d/*.")
@click.option("--resync", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds between full rescans of the manifests directory.")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=4, show_default=True,
              help="Domains reconciled in parallel (never two passes on one domain).")
@click.option("--removal-grace", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Seconds a domain whose manifest vanished is kept before it is removed.")
@click.option("--restart-backoff", type=click.FloatRange(min=0), default=10.0,
              show_default=True, help="Crash-loop backoff base: n-th failure waits base×n² "
                                      "(plus up to half of it at random).")
@click.option("--restart-backoff-max", type=click.FloatRange(min=0), default=300.0,
              show_default=True, help="Longest crash-loop backoff, seconds.")
@click.option("--metrics", "metrics_addr", metavar="HOST:PORT",
              help="Serve Prometheus metrics on this address (off by default; ':9100' means "
                   "127.0.0.1:9100, write 0.0.0.0:9100 for every interface).")
@click.option("--hook-timeout", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds each hook script may run before it is killed (counts as failed).")
@click.option("--stable-after", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds of running after which the failure count resets.")
def run(manifests: Path | None, state_dir: Path | None, runtime_dir: Path | None,
        log_dir: Path | None, hooks_dir: Path | None, resync: float, workers: int,
        removal_grace: float, restart_backoff: float, restart_backoff_max: float,
        metrics_addr: str | None, hook_timeout: float, stable_after: float) -> None:
    """Run the controller in the foreground until SIGTERM/SIGINT (domains keep running)."""
    from controller.service.daemon import Daemon, DaemonSettings  # the drivers load only for `run`

    defaults = default_paths(os.geteuid(), os.environ)
    paths = Paths(manifests=manifests or defaults.manifests,
                  state_dir=state_dir or defaults.state_dir,
                  runtime_dir=runtime_dir or defaults.runtime_dir,
                  log_dir=log_dir or defaults.log_dir, hooks_dir=hooks_dir or defaults.hooks_dir)
    crash_loop = CrashLoopSettings(min_interval=restart_backoff, cap=restart_backoff_max,
                                   stable_after=stable_after)
    settings = DaemonSettings(paths=paths, resync=resync, metrics=metrics_addr,
                              hook_timeout=hook_timeout,
                              controller=ControllerSettings(
        workers=workers, prune=PruneSettings(grace=removal_grace), crash_loop=crash_loop,
        revalidate=resync))
    try:
        asyncio.run(Daemon(settings).run())
    except (LockHeldError, ValueError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)


commands.register(main)
