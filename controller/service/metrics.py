"""Prometheus metrics for `domctl run --metrics ADDR`: off unless that flag is given.

The daemon builds one `Metrics`, calls `observe_reconcile` after every reconcile pass and
`event` with every record the EventBus emits, and `serve(addr)` once. Prometheus cannot scrape
a Unix socket (prometheus/prometheus#12024), so this is a small TCP listener of its own.

Per-domain series are never kept in labelled metric objects: a collector builds them at scrape
time from the `domains` snapshot callback, so a removed domain's series simply stop being
exposed (prometheus/client_python#182, #1047). The callbacks are read on the event loop when
`loop` is given (the scrape runs in the HTTP server's thread, and the daemon's dicts must not be
iterated while the loop changes them); a loop that does not answer within the settings'
`snapshot_timeout` fails the scrape, which Prometheus records as `up == 0`.

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

ADDR is HOST:PORT: `127.0.0.1:9100`, `localhost:9100`, `[::1]:9100`, `0.0.0.0:9100`. Unlike
Go exporters, an empty host (`:9100`) means loopback, not every interface: exposing domain
names to the network must be asked for by writing `0.0.0.0:9100` or `[::]:9100`. Port 0 binds
a free port (tests); the handle reports it.

Public surface:
    DomainSample(name, driver, state, reason, restarts, start_failures)
    ReconcileResult.OK | ERROR | REQUEUE
    Metrics(domains, queue_depth, loop=None, settings=MetricsSettings(), manifests=dict):
        registry,
        observe_reconcile(seconds, result), event(record), serve(addr) -> MetricsServer
    MetricsServer: host, port, url, close()
    parse_addr(addr) -> (host, port)
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from controller.engine.ledger import DomainSample
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
        if samples is not None:
            by_state = {(driver, state): 0 for driver in DriverName for state in State}
            for sample in samples:
                by_state[sample.driver, sample.state] += 1
                current.add_metric([sample.name, sample.driver.value, sample.state.value,
                                    sample.reason.value], 1)
                restarts.add_metric([sample.name], sample.restarts)
                failures.add_metric([sample.name], sample.start_failures)
            for (driver, state), count in by_state.items():
                counts.add_metric([driver.value, state.value], count)
        if depth is not None:
            queue.add_metric([], depth)
        problems = GaugeMetricFamily(
            "domctl_manifest_problems",
            "Problems found in each manifest file; 0 for a valid one.", labels=["file"])
        for file, count in sorted((manifests or {}).items()):
            problems.add_metric([file], count)
        yield from (counts, current, restarts, failures, queue, problems)


class Metrics:
    def __init__(self, domains: Callable[[], Iterable[DomainSample]],
                 queue_depth: Callable[[], int],
                 loop: asyncio.AbstractEventLoop | None = None,
                 settings: MetricsSettings = MetricsSettings(),
                 manifests: Callable[[], Mapping[str, int]] = dict) -> None:
        """`domains`, `queue_depth` and `manifests` (problems by manifest file) are called at
        every scrape, on `loop` when given (otherwise in the HTTP thread, and then they must
        be thread-safe)."""
        self._domains, self._queue_depth, self._manifests = domains, queue_depth, manifests
        self._loop, self._snapshot_timeout = loop, settings.snapshot_timeout
        self.registry = CollectorRegistry()
        self.registry.register(_DomainCollector(self._snapshot))
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

        ValueError for an ADDR that is not HOST:PORT or whose host does not resolve; OSError
        naming the address when it cannot be bound (in use, not a local address)."""
        host, port = parse_addr(addr)
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except socket.gaierror as err:
            raise ValueError(f"metrics address {addr!r}: cannot resolve {host!r}: "
                             f"{err.strerror}") from err
        except OSError as err:
            raise OSError(err.errno, f"cannot listen for metrics on {addr!r}: "
                                     f"{err.strerror or err}") from err
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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


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
