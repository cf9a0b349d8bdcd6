"""`domctl run`: the command that starts the controller.

The CLI (controller/cli/) must not import the daemon's layers, not even inside a function
(import-linter reads those imports too), so the command that starts the controller lives here;
the console script's entry point (controller/service/entry.py) names it to the CLI's group,
which imports this module only when `run` is used. The daemon, and with it the engine and
both drivers, is imported inside `run` only.

`run` turns its flags into the settings tree (controller/settings.py), once. Every flag's
default is read from that tree, so `--help`, the README's flag table and the daemon cannot
disagree; `--resync` sets the rescan period, the engine's re-check of domains stalled by host
validation and the re-check of managed networks.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from controller.paths import Paths, default_paths
from controller.settings import (
    CrashLoopSettings,
    EngineSettings,
    HookSettings,
    MetricsSettings,
    NetworkSettings,
    PruneSettings,
    Settings,
    SourceSettings,
)

F = TypeVar("F", bound=Callable[..., Any])

# The defaults the flags show and fall back to: the tree's own.
_ENGINE, _SOURCE, _HOOKS = EngineSettings(), SourceSettings(), HookSettings()


def _dir_option(flag: str, what: str) -> Callable[[F], F]:
    return click.option(flag, type=click.Path(file_okay=False, path_type=Path),
                        help=f"{what} [default: as root /etc, /var/lib, /run, /var/log under "
                             "domctl; as a user the XDG directories]")


@click.command()
@_dir_option("--manifests", "Directory of Domain manifests to watch.")
@_dir_option("--state-dir", "Status, events, audit log, domain records, driver data.")
@_dir_option("--runtime-dir", "API sockets, QMP sockets and pidfiles.")
@_dir_option("--log-dir", "One <name>.log per domain (argv, serial/console output).")
@_dir_option("--hooks-dir", "Hook scripts: qemu, lxc, qemu.d/*, lxc.d/*.")
@click.option("--pool", type=click.Path(file_okay=False, path_type=Path),
              help="The storage pool: the volumes, cloud-init seeds and UEFI variables domctl "
                   "makes for VMs, as <pool>/<domain>/... [default: <state dir>/pool]")
@click.option("--resync", type=click.FloatRange(min=1), default=_SOURCE.resync,
              show_default=True, help="Seconds between full rescans of the manifests directory "
                                      "(and re-checks of hosts a domain could not start on, "
                                      "and of managed networks).")
@click.option("--max-manifest-bytes", type=click.IntRange(min=1024),
              default=_SOURCE.max_manifest_bytes, show_default=True,
              help="Bytes one manifest file may have; a bigger file is refused unread, as "
                   "invalid.")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=_ENGINE.workers,
              show_default=True,
              help="Domains reconciled in parallel (never two passes on one domain).")
@click.option("--max-parallel-starts", type=click.IntRange(min=1), default=None,
              help="Starts in flight at once (bounds a boot storm; higher spec.startPriority "
                   "first when several wait). [default: off, only --workers bounds them]")
@click.option("--removal-grace", type=click.FloatRange(min=0), default=_ENGINE.prune.grace,
              show_default=True,
              help="Seconds a domain whose manifest vanished is kept before it is removed.")
@click.option("--prune-window", type=click.FloatRange(min=0), default=_ENGINE.prune.window,
              show_default=True,
              help="Seconds over which removals count for the mass-removal guard.")
@click.option("--restart-backoff", type=click.FloatRange(min=0),
              default=_ENGINE.crash_loop.min_interval, show_default=True,
              help="Crash-loop backoff base: n-th failure waits base×n² (plus up to half of it "
                   "at random).")
@click.option("--restart-backoff-max", type=click.FloatRange(min=0),
              default=_ENGINE.crash_loop.cap, show_default=True,
              help="Longest crash-loop backoff, seconds.")
@click.option("--metrics", "metrics_addr", metavar="HOST:PORT",
              help="Serve Prometheus metrics on this address (off by default; ':9100' means "
                   "127.0.0.1:9100, write 0.0.0.0:9100 for every interface).")
@click.option("--hook-timeout", type=click.FloatRange(min=1), default=_HOOKS.timeout,
              show_default=True,
              help="Seconds each hook script may run before it is killed (counts as failed).")
@click.option("--stable-after", type=click.FloatRange(min=0),
              default=_ENGINE.crash_loop.stable_after, show_default=True,
              help="Seconds of running after which the failure count resets.")
def run(manifests: Path | None, state_dir: Path | None, runtime_dir: Path | None,
        log_dir: Path | None, hooks_dir: Path | None, pool: Path | None, resync: float,
        max_manifest_bytes: int, workers: int, max_parallel_starts: int | None,
        removal_grace: float, prune_window: float, restart_backoff: float,
        restart_backoff_max: float,
        metrics_addr: str | None, hook_timeout: float, stable_after: float) -> None:
    """Run the controller in the foreground until SIGTERM/SIGINT (domains keep running)."""
    # loaded here, not at the top: `domctl get` starts through this module too, and the
    # engine and the drivers must load only for `run`
    import asyncio

    from controller.service import logconfig
    from controller.service.daemon import Daemon
    from controller.state.fsutil import LockHeldError

    logconfig.configure(click.get_current_context().find_root().params["log_level"])

    paths = _paths(manifests=manifests, state_dir=state_dir, runtime_dir=runtime_dir,
                   log_dir=log_dir, hooks_dir=hooks_dir)
    engine = EngineSettings(
        workers=workers, max_parallel_starts=max_parallel_starts,
        prune=PruneSettings(grace=removal_grace, window=prune_window),
        crash_loop=CrashLoopSettings(min_interval=restart_backoff, cap=restart_backoff_max,
                                     stable_after=stable_after),
        resync=resync)
    source = SourceSettings(resync=resync, max_manifest_bytes=max_manifest_bytes)
    settings = Settings(paths=paths, engine=engine, source=source,
                        hooks=HookSettings(timeout=hook_timeout),
                        metrics=MetricsSettings(address=metrics_addr),
                        networks=NetworkSettings(resync=resync))
    if pool is not None:
        settings = dataclasses.replace(settings, qemu=dataclasses.replace(
            settings.qemu, pool_dir=pool.absolute()))
    try:
        asyncio.run(Daemon(settings).run())
    except (LockHeldError, ValueError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)


def _paths(**given: Path | None) -> Paths:
    """The directories given as flags, the defaults for this user for the others, all made
    absolute: the controller's working directory must not decide where a domain's files are
    (a restart from another directory would not find them, and LXC needs absolute paths)."""
    defaults = default_paths(os.geteuid(), os.environ)
    return dataclasses.replace(defaults, **{key: value.absolute()
                                            for key, value in given.items()
                                            if value is not None})
