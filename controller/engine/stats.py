"""Per-domain statistics (virsh domstats) for `domctl stats`, the API and the metrics.

`DomainStatsCollector.collect()` asks the driver of every domain the ledger records as running
(or of one name) for its figures (`Driver.stats`), all at once, each call bounded by
`timeout`, and adds the CPU use in percent of one host CPU since the previous sample of the
same run (the same domain name and pid), time-stamped with the monotonic clock: the first
sample of a run has no percentage, like `top`'s first screen. A domain whose driver call fails
or times out comes back with its error and never fails the others. Concurrent collections of
every domain share one round of driver calls (a scrape and `domctl stats` at once ask once).

`to_json()` is the wire form of one result for the HTTP API and the CLI:
    {"name", "cpu": {"seconds", "percent"}, "memory": {"rssBytes", "balloonBytes"},
     "disks": [{"device", "readBytes", "writeBytes", "readOps", "writeOps"}],
     "interfaces": [{"name", "rxBytes", "txBytes", "rxPackets", "txPackets"}]}
with `percent` and `balloonBytes` null when unknown, and `{"name", "error"}` for a domain
whose figures could not be read. Interfaces are counted as the guest sees them (rx: received
by the guest), as libvirt does.

Reads the ledger and calls only the drivers' read-only `stats`; it keeps nothing but the last
sample of each run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from controller.engine.ledger import Ledger
from controller.state.status import NoSuchDomain
from reconcilers.driver import Driver
from reconcilers.errors import DomctlError, TerminalError
from reconcilers.model import DriverName
from reconcilers.stats import DomainStats

log = structlog.get_logger(__name__)

DRIVER_TIMEOUT = 2.0  # seconds one domain's figures may take (a QMP round trip is ~1 ms)


class NotRunning(TerminalError):
    """Statistics of a domain that is not running (virsh domstats shows none either), or
    another question only a running domain answers (`consequence` says what it lacks)."""

    def __init__(self, name: str, consequence: str = "it has no statistics") -> None:
        self.name = name
        super().__init__(f"{name} is not running: {consequence}")


@dataclass(frozen=True)
class Figures:
    """One domain's statistics: its figures and CPU %, or why there are none."""

    name: str
    stats: DomainStats | None
    cpu_percent: float | None = None  # of one host CPU since the previous sample of this run
    error: str = ""


@dataclass(frozen=True)
class _Sample:
    pid: int
    at: float  # monotonic seconds
    cpu_seconds: float


class DomainStatsCollector:
    def __init__(self, ledger: Ledger, drivers: Mapping[DriverName, Driver],
                 now: Callable[[], float] = time.monotonic,
                 timeout: float = DRIVER_TIMEOUT) -> None:
        self._ledger, self._drivers, self._now, self._timeout = ledger, drivers, now, timeout
        self._last: dict[str, _Sample] = {}
        self._round: asyncio.Task[list[Figures]] | None = None  # a collection of all under way

    async def collect(self, name: str | None = None) -> list[Figures]:
        """The figures of every running domain, by name, or of `name` alone: NoSuchDomain
        for a name the ledger does not know, NotRunning for one that is not running."""
        if name is not None:
            return [await self._one(name, self._running_driver(name))]
        if self._round is None or self._round.done():
            self._round = asyncio.ensure_future(self._all())
        return await asyncio.shield(self._round)

    def _running_driver(self, name: str) -> DriverName:
        record = self._ledger.get(name)
        if record is None:
            raise NoSuchDomain(name, self._ledger.registry.names())
        if record.runtime is None:
            raise NotRunning(name)
        return record.runtime.driver

    async def _all(self) -> list[Figures]:
        running = {}
        for name in sorted(self._ledger.registry.names()):
            record = self._ledger.get(name)
            if record is not None and record.runtime is not None:
                running[name] = record.runtime.driver
        for gone in set(self._last) - set(running):
            del self._last[gone]
        return list(await asyncio.gather(*(self._one(name, driver)
                                           for name, driver in running.items())))

    async def _one(self, name: str, driver: DriverName) -> Figures:
        try:
            stats = await asyncio.wait_for(self._drivers[driver].stats(name), self._timeout)
        except TimeoutError:
            log.warning("domain statistics timed out", domain=name, timeout=self._timeout)
            return Figures(name, None, error=f"no answer within {self._timeout} s")
        except DomctlError as exc:
            log.info("domain statistics unavailable", domain=name, error=str(exc))
            return Figures(name, None, error=str(exc))
        except Exception as exc:  # a driver's bug: this domain's figures only
            log.error("domain statistics failed unexpectedly", domain=name, exc_info=exc)
            return Figures(name, None, error=f"internal error: {type(exc).__name__}: {exc}")
        return Figures(name, stats, self._percent(name, stats))

    def _percent(self, name: str, stats: DomainStats) -> float | None:
        record = self._ledger.get(name)
        pid = record.runtime.pid if record is not None and record.runtime is not None else -1
        sample = _Sample(pid, self._now(), stats.cpu_seconds)
        previous, self._last[name] = self._last.get(name), sample
        if previous is None or previous.pid != pid or sample.at <= previous.at:
            return None
        used = sample.cpu_seconds - previous.cpu_seconds
        return max(0.0, 100.0 * used / (sample.at - previous.at))


def to_json(figures: Figures) -> dict[str, Any]:
    """The wire form of one domain's figures (see the module docstring)."""
    stats = figures.stats
    if stats is None:
        return {"name": figures.name, "error": figures.error}
    return {
        "name": figures.name,
        "cpu": {"seconds": stats.cpu_seconds, "percent": figures.cpu_percent},
        "memory": {"rssBytes": stats.rss_bytes, "balloonBytes": stats.balloon_bytes},
        "disks": [{"device": disk.device, "readBytes": disk.read_bytes,
                   "writeBytes": disk.write_bytes, "readOps": disk.read_ops,
                   "writeOps": disk.write_ops} for disk in stats.disks],
        "interfaces": [{"name": nic.name, "rxBytes": nic.rx_bytes, "txBytes": nic.tx_bytes,
                        "rxPackets": nic.rx_packets, "txPackets": nic.tx_packets}
                       for nic in stats.interfaces],
    }
