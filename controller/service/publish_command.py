"""`domctl publish`: a manifests directory mirrored into etcd, for the fleet (docs/fleet.md).

A lazy command of the console script (controller/service/entry.py), here and not in
controller/cli/ because it imports fleet code, which the CLI's contract keeps out of the
client's imports (`domctl get` loads neither). It needs no daemon: it validates the directory
with the loader every host uses and writes it in one etcd transaction (controller/fleet/
publish.py). What it prints, and its exit code:

- every problem as `file:line:column: field: message`, nothing written: exit 1;
- a publish that would remove most domains, held until `--confirm-prune`: exit 1;
- another publish written between this one's read and its write: planned once more (the
  second plan shows what is left to do); a second loss is an error, exit 1;
- success: the files written and deleted, and etcd's revision: exit 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.cli.parser import Parser, existing_path
from controller.fleet.keys import DEFAULT_PREFIX
from controller.service.command import endpoints


def configure(parser: Parser) -> None:
    """`publish`'s arguments (a lazy command of the console script)."""
    parser.add_argument("--manifests", required=True, type=existing_path, metavar="DIR",
                        help="The directory to publish (a git checkout).")
    parser.add_argument("--etcd", required=True, type=endpoints, metavar="ENDPOINTS",
                        help="etcd endpoints, comma-separated HOST:PORT or URLs.")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, metavar="P",
                        help="The fleet's etcd key prefix [default: %(default)s].")
    parser.add_argument("--confirm-prune", action="store_true",
                        help="Publish even when it removes more than half of the published "
                             "domains [default: held].")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from controller.service import logconfig

    logconfig.configure("warning")  # what it did is its output; warnings go to stderr
    return asyncio.run(_publish(Path(args.manifests), args.etcd, args.prefix,
                                args.confirm_prune))


async def _publish(directory: Path, endpoints: tuple[str, ...], prefix: str,
                   confirm_prune: bool) -> int:
    from controller.fleet.keys import Keys
    from controller.fleet.publish import PruneHeld, PublishConflict, PublishRefused, publish
    from controller.fleet.store import EtcdError, EtcdStore

    try:
        keys = Keys(prefix)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    store = EtcdStore(endpoints)
    try:
        for attempt in (1, 2):
            try:
                result = await publish(directory, store, keys, confirm_prune=confirm_prune)
                break
            except PublishConflict as err:
                if attempt == 2:
                    print(f"error: {err} (twice)", file=sys.stderr)
                    return 1
    except PublishRefused as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"error: {len(err.problems)} problem(s): nothing published", file=sys.stderr)
        return 1
    except PruneHeld as err:
        print(f"error: {err} (--confirm-prune)", file=sys.stderr)
        return 1
    except EtcdError as err:
        print(f"error: etcd: {err}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    if not result.written and not result.deleted:
        print(f"unchanged: nothing to publish (revision {result.revision})")
        return 0
    for name in result.written:
        print(f"written: {name}")
    for name in result.deleted:
        print(f"deleted: {name}")
    print(f"published at revision {result.revision}")
    return 0
