"""Prometheus metrics for `domctl run --metrics ADDR`: off unless that flag is given.

The daemon builds one `Metrics`, calls `observe_reconcile` after every reconcile pass and
`event` with every record the EventBus emits, and `serve(addr)` once, before anything else
starts (a busy port stops `domctl run` at once: `MetricsAddressError`, one line). Prometheus
cannot scrape a Unix socket (prometheus/prometheus#12024), so this is a small TCP listener of
its own.

Per-domain series are never kept in labelled metric objects: a collector builds them at scrape
time from the `domains` snapshot callback, so a removed domain's series simply stop being
exposed (prometheus/client_python#182, #1047). The callbacks are read on the event loop when
`loop` is given (the scrape runs in the HTTP server's thread, and the daemon's dicts must not be
iterated while the loop changes them); a loop that does not answer within the settings'
`snapshot_timeout` fails the scrape, which Prometheus records as `up == 0`.

The statistics series (libvirt-exporter's names, `domctl_domain_...`) come from one collection
of the `stats` callback per scrape (engine/stats.py: every running domain's driver asked at
once, each call bounded), run on the loop and waited for at most `snapshot_timeout`; a
collection that does not finish in time, or a domain whose driver does not answer, only leaves
those series out of that scrape. Interface series count as the guest sees them (receive: what
the guest received), as libvirt-exporter's do.

Series (every help text is in the exposition):
    domctl_domains{driver,state}                     gauge, every State of every driver, 0 too
    domctl_domain_state{domain,driver,state,reason}  gauge, 1 for each domain's current state
    domctl_domain_restarts_total{domain}             counter, from the snapshot
    domctl_domain_start_failures_total{domain}       counter, from the snapshot
    domctl_reconcile_duration_seconds{result}        histogram, result = ok | error | requeue;
        there is no separate error counter: `..._count{result="error"}` is the number of failed
        passes, and `rate()` of it the error rate
    domctl_workqueue_depth                           gauge, from the `queue_depth` callback
    domctl_manifest_problems{file}                   gauge, problems of each manifest file, 0
        for a valid one (from the `manifests` callback); an invalid new file that declares
        no domain yet shows here, so `domctl_manifest_problems > 0` alerts on every typo
    domctl_events_total{event,detail}                counter, every libvirt pair present from 0
    domctl_domain_in_desired_state{domain}           gauge, 1 when the domain is in the state
        the controller drives it towards (its Ready condition), else 0: the one alert is
        `domctl_domain_in_desired_state == 0` (with a `for:` longer than a start takes)
    domctl_domain_cpu_seconds_total{domain}          counter, CPU time of the domain
    domctl_domain_memory_rss_bytes{domain}           gauge, qemu's RSS; a container's cgroup use
    domctl_domain_balloon_bytes{domain}              gauge, the balloon's actual size (qemu)
    domctl_domain_block_{read,write}_bytes_total{domain,device}     counter, per disk
    domctl_domain_block_{read,write}_requests_total{domain,device}  counter, per disk
    domctl_domain_interface_{receive,transmit}_{bytes,packets}_total{domain,interface}
                                                     counter, per NIC, the guest's view
    domctl_build_info{version,python}                gauge, always 1
    process_*                                        the controller process (prometheus_client's
        ProcessCollector: CPU, memory, open fds, start time)

ADDR is HOST:PORT: `127.0.0.1:9100`, `localhost:9100`, `[::1]:9100`, `0.0.0.0:9100`. Unlike
Go exporters, an empty host (`:9100`) means loopback, not every interface: exposing domain
names to the network must be asked for by writing `0.0.0.0:9100` or `[::]:9100`. Port 0 binds
a free port (tests); the handle reports it.

Public surface:
    DomainSample(name, driver, state, reason, restarts, start_failures, ready)
    ReconcileResult.OK | ERROR | REQUEUE
    Metrics(domains, queue_depth, loop=None, settings=MetricsSettings(), manifests=dict,
            stats=None):
        registry,
        observe_reconcile(seconds, result), event(record), serve(addr) -> MetricsServer
    MetricsServer: host, port, url, close()
    MetricsAddressError (a ValueError): `--metrics ADDR: why`, an address serve() cannot bind
    parse_addr(addr) -> (host, port)
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import platform
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from controller.engine.ledger import DomainSample
from controller.engine.stats import Figures
from controller.protocol import installed_version
from controller.settings import MetricsSettings
from reconcilers.model import DETAILS_BY_EVENT, DriverName, State

log = structlog.get_logger(__name__)

# A pass is mostly milliseconds; a start or a graceful shutdown inside it takes seconds to minutes.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                     120.0, 300.0)


_Snapshot = tuple[list[DomainSample], int, dict[str, int]]  # what one scrape reads on the loop


class ReconcileResult(str, enum.Enum):
    OK = "ok"  # the pass finished, nothing left to do
    ERROR = "error"  # the pass raised; it is retried under backoff (or stalled, if terminal)
    REQUEUE = "requeue"  # the pass finished and asked to run again later


class _DomainCollector(Collector):
    """Builds the per-domain and queue series from the callbacks at every scrape."""

    def __init__(self, snapshot: Callable[[], _Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        # Present so that registering does not call collect() (and the callbacks) early.
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families(*self._snapshot()))

    @staticmethod
    def _families(samples: list[DomainSample] | None = None, depth: int | None = None,
                  manifests: Mapping[str, int] | None = None) -> Iterator[Metric]:
        counts = GaugeMetricFamily("domctl_domains", "Domains by driver and current state.",
                                   labels=["driver", "state"])
        current = GaugeMetricFamily(
            "domctl_domain_state", "1 for the current state and reason of each domain.",
            labels=["domain", "driver", "state", "reason"])
        restarts = CounterMetricFamily(
            "domctl_domain_restarts", "Restarts of the domain done by the controller.",
            labels=["domain"])
        failures = CounterMetricFamily(
            "domctl_domain_start_failures", "Failed starts of the domain.", labels=["domain"])
        queue = GaugeMetricFamily("domctl_workqueue_depth",
                                  "Domain names waiting in the work queue to be reconciled.")
        desired = GaugeMetricFamily(
            "domctl_domain_in_desired_state",
            "1 when the domain is in the state the controller drives it towards (its Ready "
            "condition), else 0.", labels=["domain"])
        if samples is not None:
            by_state = {(driver, state): 0 for driver in DriverName for state in State}
            for sample in samples:
                by_state[sample.driver, sample.state] += 1
                current.add_metric([sample.name, sample.driver.value, sample.state.value,
                                    sample.reason.value], 1)
                restarts.add_metric([sample.name], sample.restarts)
                failures.add_metric([sample.name], sample.start_failures)
                if sample.ready is not None:
                    desired.add_metric([sample.name], int(sample.ready))
            for (driver, state), count in by_state.items():
                counts.add_metric([driver.value, state.value], count)
        if depth is not None:
            queue.add_metric([], depth)
        problems = GaugeMetricFamily(
            "domctl_manifest_problems",
            "Problems found in each manifest file; 0 for a valid one.", labels=["file"])
        for file, count in sorted((manifests or {}).items()):
            problems.add_metric([file], count)
        yield from (counts, current, restarts, failures, queue, problems, desired)


_Family = CounterMetricFamily | GaugeMetricFamily


def _families(prefix: str, labels: list[str],
              specs: Iterable[tuple[str, str, type[_Family]]]) -> dict[str, _Family]:
    """Empty metric families `prefix` + suffix, by suffix, with `labels`."""
    return {suffix: kind(prefix + suffix, text, labels=labels) for suffix, text, kind in specs}


_DOMAIN = (
    ("cpu_seconds", "CPU time used by the domain (qemu's process, a container's cgroup).",
     CounterMetricFamily),
    ("memory_rss_bytes", "Resident memory of qemu's process; a container's cgroup memory use.",
     GaugeMetricFamily),
    ("balloon_bytes", "The memory balloon's actual size (qemu domains with a balloon).",
     GaugeMetricFamily),
)
_BLOCK = (
    ("read_bytes", "Bytes read from the block device by the domain.", CounterMetricFamily),
    ("write_bytes", "Bytes written to the block device by the domain.", CounterMetricFamily),
    ("read_requests", "Read requests to the block device.", CounterMetricFamily),
    ("write_requests", "Write requests to the block device.", CounterMetricFamily),
)
_INTERFACE = (
    ("receive_bytes", "Bytes the domain received on the interface.", CounterMetricFamily),
    ("transmit_bytes", "Bytes the domain transmitted on the interface.", CounterMetricFamily),
    ("receive_packets", "Packets the domain received on the interface.", CounterMetricFamily),
    ("transmit_packets", "Packets the domain transmitted on the interface.",
     CounterMetricFamily),
)


class _StatsCollector(Collector):
    """The per-domain statistics series, from one stats collection at every scrape."""

    def __init__(self, figures: Callable[[], list[Figures]]) -> None:
        self._figures = figures

    def describe(self) -> Iterable[Metric]:
        return list(self._build([]))

    def collect(self) -> Iterable[Metric]:
        return list(self._build(self._figures()))

    @staticmethod
    def _build(figures: list[Figures]) -> Iterator[Metric]:
        domain = _families("domctl_domain_", ["domain"], _DOMAIN)
        block = _families("domctl_domain_block_", ["domain", "device"], _BLOCK)
        nic = _families("domctl_domain_interface_", ["domain", "interface"], _INTERFACE)
        for each in figures:
            stats, name = each.stats, each.name
            if stats is None:
                continue
            domain["cpu_seconds"].add_metric([name], stats.cpu_seconds)
            domain["memory_rss_bytes"].add_metric([name], stats.rss_bytes)
            if stats.balloon_bytes is not None:
                domain["balloon_bytes"].add_metric([name], stats.balloon_bytes)
            for disk in stats.disks:
                for suffix, value in (("read_bytes", disk.read_bytes),
                                      ("write_bytes", disk.write_bytes),
                                      ("read_requests", disk.read_ops),
                                      ("write_requests", disk.write_ops)):
                    block[suffix].add_metric([name, disk.device], value)
            for iface in stats.interfaces:
                for suffix, value in (("receive_bytes", iface.rx_bytes),
                                      ("transmit_bytes", iface.tx_bytes),
                                      ("receive_packets", iface.rx_packets),
                                      ("transmit_packets", iface.tx_packets)):
                    nic[suffix].add_metric([name, iface.name], value)
        for families in (domain, block, nic):
            yield from families.values()


class Metrics:
    def __init__(self, domains: Callable[[], Iterable[DomainSample]],
                 queue_depth: Callable[[], int],
                 loop: asyncio.AbstractEventLoop | None = None,
                 settings: MetricsSettings = MetricsSettings(),
                 manifests: Callable[[], Mapping[str, int]] = dict,
                 stats: Callable[[], Coroutine[Any, Any, list[Figures]]] | None = None
                 ) -> None:
        """`domains`, `queue_depth` and `manifests` (problems by manifest file) are called at
        every scrape, on `loop` when given (otherwise in the HTTP thread, and then they must
        be thread-safe); so is `stats` (every running domain's figures, awaited on `loop`,
        or in a loop of the HTTP thread's own without one)."""
        self._domains, self._queue_depth, self._manifests = domains, queue_depth, manifests
        self._loop, self._snapshot_timeout = loop, settings.snapshot_timeout
        self._stats = stats
        self.registry = CollectorRegistry()
        self.registry.register(_DomainCollector(self._snapshot))
        self.registry.register(_StatsCollector(self._figures))
        ProcessCollector(registry=self.registry)
        Gauge("domctl_build_info", "The domctl version and Python that run the controller; "
              "always 1.", ["version", "python"], registry=self.registry).labels(
            version=installed_version(), python=platform.python_version()).set(1)
        self._reconcile = Histogram(
            "domctl_reconcile_duration_seconds",
            "Duration of reconcile passes by result (ok, error, requeue); the count of "
            "result=\"error\" is the number of failed passes.",
            ["result"], buckets=RECONCILE_BUCKETS, registry=self.registry)
        self._events = Counter("domctl_events", "Lifecycle events emitted, by event and detail.",
                               ["event", "detail"], registry=self.registry)
        for result in ReconcileResult:
            self._reconcile.labels(result=result.value)
        for event, details in DETAILS_BY_EVENT.items():
            for detail in details:
                self._events.labels(event=event.value, detail=detail.value)

    def observe_reconcile(self, seconds: float, result: ReconcileResult | str) -> None:
        """Record one reconcile pass; ValueError for a result other than ok, error, requeue."""
        self._reconcile.labels(result=ReconcileResult(result).value).observe(seconds)

    def event(self, record: Mapping[str, Any]) -> None:
        """Count one EventBus record; records without event and detail (markers) are skipped."""
        event, detail = record.get("event"), record.get("detail")
        if isinstance(event, str) and isinstance(detail, str):
            self._events.labels(event=event, detail=detail).inc()

    def serve(self, addr: str) -> MetricsServer:
        """Listen on ADDR (see the module docstring) in a daemon thread.

        ValueError for an ADDR that is not HOST:PORT (parse_addr); MetricsAddressError (a
        ValueError too) for one whose host does not resolve or that cannot be bound (in use,
        not a local address), one line naming it."""
        host, port = parse_addr(addr)
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except socket.gaierror as err:
            raise MetricsAddressError(addr, f"cannot resolve {host!r}: {err.strerror}") from err
        except OSError as err:
            why = err.strerror or str(err)
            raise MetricsAddressError(addr, why[:1].lower() + why[1:]) from err
        handle = MetricsServer(server, thread)
        log.info("serving metrics", url=handle.url)
        return handle

    def _snapshot(self) -> _Snapshot:
        loop = self._loop
        if loop is None or _running_loop() is loop:
            return self._read()

        future: Future[_Snapshot] = Future()

        def read() -> None:
            if future.set_running_or_notify_cancel():  # False: the scrape already gave up
                try:
                    future.set_result(self._read())
                except Exception as err:
                    future.set_exception(err)

        loop.call_soon_threadsafe(read)
        try:
            return future.result(timeout=self._snapshot_timeout)
        except TimeoutError:
            future.cancel()
            log.warning("metrics scrape failed: the event loop did not answer; is it blocked?",
                        timeout=self._snapshot_timeout)
            raise

    def _read(self) -> _Snapshot:
        return list(self._domains()), self._queue_depth(), dict(self._manifests())

    def _figures(self) -> list[Figures]:
        """One stats collection for this scrape; none (the series left out) when it cannot
        be waited for (called on the loop itself) or does not finish in time."""
        if self._stats is None:
            return []
        loop, running = self._loop, _running_loop()
        if running is not None and (loop is None or running is loop):
            return []  # the loop cannot wait for itself
        if loop is None:
            return asyncio.run(self._stats())
        future = asyncio.run_coroutine_threadsafe(self._stats(), loop)
        try:
            return future.result(timeout=self._snapshot_timeout)
        except TimeoutError:
            future.cancel()
            log.warning("metrics scrape without domain statistics: not collected in time",
                        timeout=self._snapshot_timeout)
            return []


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class MetricsAddressError(ValueError):
    """The `--metrics` address cannot be served; the message is one line naming it."""

    def __init__(self, addr: str, why: str) -> None:
        self.addr = addr
        super().__init__(f"--metrics {addr}: {why}")


class MetricsServer:
    """The running listener; `close()` stops it and releases the port."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def parse_addr(addr: str) -> tuple[str, int]:
    """HOST:PORT → (host, port); an empty host is 127.0.0.1. ValueError naming `addr`."""
    hint = "expected HOST:PORT, e.g. 127.0.0.1:9100, [::1]:9100 or 0.0.0.0:9100"
    host, colon, port_text = addr.rpartition(":")
    if not colon:
        raise ValueError(f"metrics address {addr!r}: no port; {hint}")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"metrics address {addr!r}: port {port_text!r} is not a number from "
                         f"0 to 65535; {hint}")
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"metrics address {addr!r}: {host!r} is not a bracketed IPv6 "
                             f"address; {hint}") from None
        host = inner
    elif ":" in host:
        raise ValueError(f"metrics address {addr!r}: put an IPv6 address in brackets, "
                         f"e.g. [::1]:9100")
    elif any(c.isspace() or c in "[]/" for c in host):
        raise ValueError(f"metrics address {addr!r}: {host!r} is not a host name or address; "
                         f"{hint}")
    return host or "127.0.0.1", int(port_text)
