"""The fleet's admin commands: `domctl hosts`, `cordon`, `uncordon`, `drain`; and the fleet view
of the domains that `domctl get --etcd` prints.

They talk to etcd only (no daemon, no API socket), so they live beside `run` in the daemon's
layer: the CLI may not import fleet code. controller/service/entry.py registers each as a lazy
command (`configure_hosts`, `configure_cordon`, `configure_uncordon`, `configure_drain`): this
module loads only when one of them is parsed.

- `hosts`: every host the fleet knows (a lease, a cordon or a placement names it): STATE is
  Ready (it holds its lease) or NotReady, with `,Cordoned` or `,Draining` after it; CPUS,
  MEMORY as it registered; FREE its memory less that of the domains placed on it (what the
  scheduler counts); DOMAINS placed there; LABELS.
- `cordon HOST`: no new domain goes there (keys.Cordon, drain false; a drain in progress
  stops, what moved stays moved). `uncordon HOST` deletes the cordon.
- `drain HOST`: a cordon with drain: the scheduler moves the host's domains elsewhere. The
  command waits until every domain placed there has moved (printed as it does), or the
  scheduler said it cannot (`scheduling/`: unschedulable, or unreachable for a domain without
  failover on a lost host), or `--timeout` (exit 1 naming what is left).
A host no one knows is refused (a typo must not cordon nothing). The fleet code they run logs
its warnings (a record that does not parse, etcd unreachable) on stderr; stdout is the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from controller.cli.parser import Failed, Parser, bounded
from controller.cli.render import cell, table
from controller.fleet.keys import DEFAULT_PREFIX, Cordon, Keys
from controller.fleet.scheduler import FleetState
from controller.fleet.scheduling import Kind, demand_of
from controller.fleet.source import EtcdSource
from controller.fleet.store import Delete, EtcdError, EtcdStore
from controller.protocol import rfc3339
from controller.service import logconfig

T = TypeVar("T")
DRAIN_TIMEOUT = 300.0
POLL = 0.5  # seconds between two reads of a drain's progress


def _connection(parser: Parser) -> None:
    parser.add_argument("--etcd", metavar="ENDPOINTS", required=True,
                        help="etcd client endpoints, comma-separated (host:port or URLs).")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX,
                        help="The fleet's key prefix [default: %(default)s].")


def _host_argument(parser: Parser) -> None:
    _connection(parser)
    parser.add_argument("host", metavar="HOST")


def configure_hosts(parser: Parser) -> None:
    _connection(parser)
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table",
                        help="json: one document per host [default: %(default)s].")
    parser.set_defaults(handler=hosts)


def configure_cordon(parser: Parser) -> None:
    _host_argument(parser)
    parser.set_defaults(handler=cordon)


def configure_uncordon(parser: Parser) -> None:
    _host_argument(parser)
    parser.set_defaults(handler=uncordon)


def configure_drain(parser: Parser) -> None:
    _host_argument(parser)
    parser.add_argument("--timeout", type=bounded(float, 0.0), default=DRAIN_TIMEOUT,
                        metavar="S", help="Give up (exit 1) after S seconds "
                                          "[default: %(default)s].")
    parser.set_defaults(handler=drain)


def _run(args: argparse.Namespace,
         work: Callable[[EtcdStore, Keys], Awaitable[T]]) -> T:
    """`work` against the fleet of --etcd and --prefix; an etcd error is the command's."""
    logconfig.configure("warning")
    async def run() -> T:
        store = EtcdStore([e.strip() for e in args.etcd.split(",") if e.strip()])
        try:
            return await work(store, Keys(args.prefix))
        except EtcdError as err:
            raise Failed(f"etcd: {err}") from None
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except ValueError as err:  # a prefix that is none, no endpoint
        raise Failed(str(err)) from None


# -- hosts --------------------------------------------------------------------------------------

def hosts(args: argparse.Namespace) -> None:
    """The fleet's hosts with their state and free capacity."""
    rows = _run(args, host_rows)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return
    headers = ["NAME", "STATE", "CPUS", "MEMORY", "FREE", "DOMAINS", "LABELS"]
    print("\n".join(table(headers, [[
        row["name"], row["state"], cell(row["cpus"]), _mib(row["memoryMiB"]),
        _mib(row["freeMiB"]), str(len(row["domains"])),
        cell(",".join(f"{k}={v}" for k, v in row["labels"].items()))] for row in rows])))


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value}Mi"


async def host_rows(store: EtcdStore, keys: Keys) -> list[dict[str, Any]]:
    """One document per host the fleet knows (see the module docstring)."""
    state, memory = await asyncio.gather(FleetState.read(store, keys), _memory(store, keys))
    return hosts_table(state, memory)


async def _memory(store: EtcdStore, keys: Keys) -> dict[str, int]:
    """Each published domain's memory in MiB, as the scheduler counts it."""
    snapshot = await EtcdSource(store, keys, lambda _snapshot: None).rescan()
    if not snapshot.readable:
        raise Failed("cannot read the published manifests from etcd")
    return {name: demand_of(domain).memory_mib for name, domain in snapshot.domains.items()}


def hosts_table(state: FleetState, memory: Mapping[str, int]) -> list[dict[str, Any]]:
    """The rows of `domctl hosts`, by name: a pure function of what etcd holds."""
    placed: dict[str, list[str]] = {}
    for domain, placement in state.placements.items():
        placed.setdefault(placement.host, []).append(domain)
    rows = []
    for name in sorted(state.hosts.keys() | state.cordons.keys() | placed.keys()):
        record, mark, domains = state.hosts.get(name), state.cordons.get(name), \
            sorted(placed.get(name, ()))
        status = "Ready" if record is not None else "NotReady"
        if mark is not None:
            status += ",Draining" if mark.drain else ",Cordoned"
        used = sum(memory.get(domain, 0) for domain in domains)
        rows.append({"name": name, "state": status,
                     "cpus": record.cpus if record else None,
                     "memoryMiB": record.memory_mib if record else None,
                     "freeMiB": record.memory_mib - used if record else None,
                     "domains": domains,
                     "labels": dict(sorted(record.labels.items())) if record else {}})
    return rows


# -- cordon, uncordon, drain --------------------------------------------------------------------

async def _known(store: EtcdStore, keys: Keys, host: str) -> FleetState:
    state = await FleetState.read(store, keys)
    if host not in state.hosts and host not in state.cordons and not any(
            p.host == host for p in state.placements.values()):
        raise Failed(f"no host {host!r} in the fleet (no lease, cordon or placement names it)")
    return state


async def set_cordon(store: EtcdStore, keys: Keys, host: str, *, drain: bool) -> int:
    """Cordon `host` (with drain: its domains are moved off too); etcd's revision after."""
    return await store.put(keys.cordon(host), Cordon(drain, rfc3339(time.time())).encode())


def cordon(args: argparse.Namespace) -> None:
    """Keep new domains off HOST (those placed there stay)."""
    async def work(store: EtcdStore, keys: Keys) -> None:
        await _known(store, keys, args.host)
        await set_cordon(store, keys, args.host, drain=False)

    _run(args, work)
    print(f"host {args.host} cordoned")


def uncordon(args: argparse.Namespace) -> None:
    """Let the scheduler place domains on HOST again."""
    async def work(store: EtcdStore, keys: Keys) -> None:
        await _known(store, keys, args.host)
        await store.txn([], [Delete(keys.cordon(args.host))])

    _run(args, work)
    print(f"host {args.host} uncordoned")


def drain(args: argparse.Namespace) -> int:
    """Move every domain off HOST and keep new ones off; wait until done."""
    async def work(store: EtcdStore, keys: Keys) -> list[str]:
        return await drain_host(store, keys, args.host, timeout=args.timeout, report=print)

    left = _run(args, work)
    if left:
        raise Failed(f"drain of {args.host}: timed out after {args.timeout:g} s; still placed "
                     f"there: {', '.join(left)}")
    print(f"host {args.host} drained")
    return 0


async def drain_host(store: EtcdStore, keys: Keys, host: str, *, timeout: float,
                     report: Callable[[str], None]) -> list[str]:
    """Cordon `host` with drain and follow its domains until each has moved or the scheduler
    said it cannot move it (each reported as a line); the domains still there at `timeout`."""
    state = await _known(store, keys, host)
    since = await set_cordon(store, keys, host, drain=True)
    report(f"host {host} cordoned, draining")
    waiting = sorted(name for name, p in state.placements.items() if p.host == host)
    deadline = time.monotonic() + timeout
    while True:
        state = await FleetState.read(store, keys)
        for name in list(waiting):
            line = _drained(state, keys, name, host, since)
            if line is not None:
                report(line)
                waiting.remove(name)
        if not waiting or time.monotonic() >= deadline:
            return waiting
        await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


def _drained(state: FleetState, keys: Keys, name: str, host: str, since: int) -> str | None:
    """How the domain left the drained host (None: it has not yet)."""
    placement = state.placements.get(name)
    if placement is None:
        return f"{name}: removed" if not state.revision(keys.placement(name)) else None
    if placement.host != host:
        return f"{name}: moved to {placement.host} (epoch {placement.epoch})"
    record = state.schedulings.get(name)
    if record is None:
        return None
    # unreachable: the host is lost and the domain may not fail over; the record may be
    # older than the drain, which changes nothing of it. unschedulable: a word on this drain
    if record.kind == Kind.UNREACHABLE.value or state.revision(keys.scheduling(name)) > since:
        return f"{name}: stays on {host}: {record.kind}: {record.message}"
    return None
