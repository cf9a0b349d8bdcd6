"""`domctl run`: the command that starts the controller.

The CLI (controller/cli/) must not import the daemon's layers, not even inside a function
(import-linter reads those imports too), so the command that starts the controller lives here;
the console script's entry point (controller/service/entry.py) names it to the CLI's parser as
a lazy command, whose `configure` is imported only when `run` is parsed. The daemon, and with
it the engine and both drivers, is imported inside `run` only.

`run` turns its flags into the settings tree (controller/settings.py), once. Every flag's
default is read from that tree and shown in its help, so `--help`, the README's flag table and
the daemon cannot disagree; `--resync` sets the rescan period, the engine's re-check of domains
stalled by host validation and the re-check of managed networks. Directories are made absolute
as they are parsed: the controller's working directory must not decide where a domain's files
are (a restart from another directory would not find them, and LXC needs absolute paths).
`--etcd ENDPOINTS --host NAME` (fleet mode) adds the settings' `fleet` branch: the desired
state comes from etcd instead of `--manifests` (docs/fleet.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

from controller.cli.parser import Parser, UsageError, bounded, directory
from controller.paths import Paths, default_paths
from controller.settings import (
    CrashLoopSettings,
    EngineSettings,
    FleetSettings,
    HookSettings,
    MetricsSettings,
    NetworkSettings,
    PruneSettings,
    Settings,
    SourceSettings,
)

# The defaults the flags show and fall back to: the tree's own.
_ENGINE, _SOURCE, _HOOKS = EngineSettings(), SourceSettings(), HookSettings()
_FLEET = FleetSettings(endpoints=(), host="")
DIRECTORIES = {  # the flags of the directories in controller/paths.py, and what each holds
    "--manifests": "Directory of Domain manifests to watch.",
    "--state-dir": "Status, events, audit log, domain records, driver data.",
    "--runtime-dir": "API sockets, QMP sockets and pidfiles.",
    "--log-dir": "One <name>.log per domain (argv, serial/console output).",
    "--hooks-dir": "Hook scripts: qemu, lxc, qemu.d/*, lxc.d/*.",
}


def absolute_directory(text: str) -> Path:
    """A directory flag's type: made absolute against the working directory of now."""
    return directory(text).absolute()


def configure(parser: Parser) -> None:
    """`run`'s flags, each with its default in its help (a lazy command of the console script,
    controller/service/entry.py)."""
    defaults = default_paths(os.geteuid(), os.environ)  # this user's (root's, or XDG)
    for flag, what in DIRECTORIES.items():
        field = flag.removeprefix("--").replace("-", "_")
        parser.add_argument(flag, type=absolute_directory, metavar="DIR",
                            help=f"{what} [default: {getattr(defaults, field)}]")
    parser.add_argument("--pool", type=absolute_directory, metavar="DIR",
                        help="The storage pool: the volumes, cloud-init seeds and UEFI variables "
                             "domctl makes for VMs, as <pool>/<domain>/... "
                             "[default: <state dir>/pool]")
    _number(parser, "--resync", "S", bounded(float, 1), _SOURCE.resync,
            "Seconds between full rescans of the manifests directory (and re-checks of hosts a "
            "domain could not start on, and of managed networks).")
    _number(parser, "--max-manifest-bytes", "N", bounded(int, 1024), _SOURCE.max_manifest_bytes,
            "Bytes one manifest file may have; a bigger file is refused unread, as invalid.")
    _number(parser, "--workers", "N", bounded(int, 1, 64), _ENGINE.workers,
            "Domains reconciled in parallel (never two passes on one domain).")
    parser.add_argument("--max-parallel-starts", type=bounded(int, 1), metavar="N",
                        help="Starts in flight at once (bounds a boot storm; higher "
                             "spec.startPriority first when several wait). "
                             "[default: off, only --workers bounds them]")
    _number(parser, "--removal-grace", "S", bounded(float, 0), _ENGINE.prune.grace,
            "Seconds a domain whose manifest vanished is kept before it is removed.")
    _number(parser, "--prune-window", "S", bounded(float, 0), _ENGINE.prune.window,
            "Seconds over which removals count for the mass-removal guard.")
    _number(parser, "--restart-backoff", "S", bounded(float, 0), _ENGINE.crash_loop.min_interval,
            "Crash-loop backoff base, seconds: n-th failure waits S×n² (plus up to half of it at "
            "random).")
    _number(parser, "--restart-backoff-max", "S", bounded(float, 0), _ENGINE.crash_loop.cap,
            "Longest crash-loop backoff, seconds.")
    parser.add_argument("--metrics", dest="metrics_addr", metavar="HOST:PORT",
                        help="Serve Prometheus metrics on this address (':9100' means "
                             "127.0.0.1:9100, write 0.0.0.0:9100 for every interface) "
                             "[default: off]")
    _number(parser, "--hook-timeout", "S", bounded(float, 1), _HOOKS.timeout,
            "Seconds each hook script may run before it is killed (counts as failed).")
    _number(parser, "--stable-after", "S", bounded(float, 0), _ENGINE.crash_loop.stable_after,
            "Seconds of running after which the failure count resets.")
    fleet = parser.add_argument_group(
        "fleet mode", "The desired state from etcd instead of --manifests, for the domains "
                      "placed on this host (docs/fleet.md).")
    fleet.add_argument("--etcd", metavar="ENDPOINTS", type=endpoints,
                       help="etcd endpoints, comma-separated HOST:PORT or URLs [default: off, "
                            "read --manifests]")
    fleet.add_argument("--host", dest="fleet_host", metavar="NAME",
                       help="This host's name in the fleet (needed with --etcd).")
    fleet.add_argument("--host-labels", type=labels, default={}, metavar="K=V,...",
                       help="Labels a placement.selector matches [default: none].")
    fleet.add_argument("--prefix", default=_FLEET.prefix, metavar="P",
                       help="The fleet's etcd key prefix [default: %(default)s].")
    fleet.add_argument("--host-ttl", type=bounded(int, 2, 3600), default=_FLEET.ttl,
                       metavar="S", help="Seconds of this host's lease; it fences its failover "
                                         "domains max(2, S/5) seconds before it could expire "
                                         "[default: %(default)s].")
    fleet.add_argument("--no-scheduler", dest="scheduler", action="store_false",
                       help="Never stand in the scheduler's election (this host only runs the "
                            "domains placed on it) [default: stands].")
    parser.set_defaults(handler=run)


def endpoints(text: str) -> tuple[str, ...]:
    """An option type: comma-separated etcd endpoints."""
    found = tuple(part.strip() for part in text.split(",") if part.strip())
    if not found:
        raise argparse.ArgumentTypeError("no etcd endpoint given")
    return found


def labels(text: str) -> dict[str, str]:
    """An option type: `k=v,...` host labels."""
    found: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, equals, value = part.partition("=")
        if not equals or not key:
            raise argparse.ArgumentTypeError(f"{part!r} is not KEY=VALUE")
        found[key.strip()] = value.strip()
    return found


def _number(parser: Parser, flag: str, metavar: str, kind: Callable[[str], float],
            default: float, what: str) -> None:
    parser.add_argument(flag, type=kind, default=default, metavar=metavar,
                        help=f"{what} [default: %(default)s]")


def run(args: argparse.Namespace) -> int:
    """Build the settings tree from the flags and run the daemon until it stops."""
    # loaded here, not at the top: the engine and the drivers load only when the daemon runs
    import asyncio

    from controller.service import logconfig
    from controller.service.daemon import Daemon
    from controller.state.fsutil import LockHeldError

    logconfig.configure(args.log_level)

    paths = _paths(manifests=args.manifests, state_dir=args.state_dir,
                   runtime_dir=args.runtime_dir, log_dir=args.log_dir, hooks_dir=args.hooks_dir)
    crash_loop = CrashLoopSettings(min_interval=args.restart_backoff,
                                   cap=args.restart_backoff_max, stable_after=args.stable_after)
    engine = EngineSettings(
        workers=args.workers, max_parallel_starts=args.max_parallel_starts,
        prune=PruneSettings(grace=args.removal_grace, window=args.prune_window),
        crash_loop=crash_loop, resync=args.resync)
    source = SourceSettings(resync=args.resync, max_manifest_bytes=args.max_manifest_bytes)
    settings = Settings(paths=paths, engine=engine, source=source,
                        hooks=HookSettings(timeout=args.hook_timeout),
                        metrics=MetricsSettings(address=args.metrics_addr),
                        networks=NetworkSettings(resync=args.resync))
    if args.etcd is not None:
        if not args.fleet_host:
            raise UsageError("--etcd needs --host NAME (this host's name in the fleet)")
        settings = dataclasses.replace(settings, fleet=FleetSettings(
            endpoints=args.etcd, host=args.fleet_host, labels=args.host_labels,
            prefix=args.prefix, ttl=args.host_ttl, scheduler=args.scheduler))
    elif args.fleet_host is not None:
        raise UsageError("--host names this host in a fleet: give --etcd too")
    if args.pool is not None:
        settings = dataclasses.replace(settings, qemu=dataclasses.replace(
            settings.qemu, pool_dir=args.pool))
    try:
        asyncio.run(Daemon(settings).run())
    except (LockHeldError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _paths(**given: Path | None) -> Paths:
    """The directories given as flags (absolute already), the defaults for this user for the
    others."""
    defaults = default_paths(os.geteuid(), os.environ)
    return defaults._replace(**{key: value for key, value in given.items() if value is not None})
