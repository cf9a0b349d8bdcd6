"""Metrics scraped over real HTTP on 127.0.0.1 port 0 and parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import platform
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.engine.ledger import DomainSample
from controller.engine.stats import DomainStatsCollector, Figures, NotRunning, to_json
from controller.service.metrics import Metrics, MetricsAddressError, MetricsServer, parse_addr
from controller.settings import MetricsSettings
from controller.state.status import NoSuchDomain
from reconcilers.errors import DriverError
from reconcilers.model import DriverName, Reason, State
from reconcilers.stats import DiskStats, DomainStats, NicStats
from tests.support.domains import MiB
from tests.support.memory import MemoryDriver
from tests.unit.domains import domain
from tests.unit.test_controller import make_controller

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]

WEB = DomainSample("web-1", DriverName.QEMU, State.RUNNING, Reason.BOOTED, 2, 1)
DB = DomainSample("db", DriverName.LXC, State.SHUTOFF, Reason.FAILED, 0, 3)


class World:
    """The daemon's side: what the callbacks return, changed by the tests between scrapes."""

    def __init__(self) -> None:
        self.domains = [WEB, DB]
        self.depth = 0


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def served(world: World) -> Iterator[tuple[Metrics, MetricsServer]]:
    metrics = Metrics(lambda: world.domains, lambda: world.depth)
    server = metrics.serve("127.0.0.1:0")
    yield metrics, server
    server.close()


def scrape(server: MetricsServer) -> Series:
    with urllib.request.urlopen(server.url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return parse(text)


def parse(text: str) -> Series:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, tuple(sorted(labels.items()))))


def names_with(series: Series, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in series if n == name]


def test_domain_series_follow_the_snapshot_and_vanish_with_the_domain(
        served: tuple[Metrics, MetricsServer], world: World) -> None:
    _, server = served
    first = scrape(server)
    assert value(first, "domctl_domain_state", domain="web-1", driver="qemu", state="running",
                 reason="booted") == 1
    assert value(first, "domctl_domain_state", domain="db", driver="lxc", state="shutoff",
                 reason="failed") == 1
    assert value(first, "domctl_domain_restarts_total", domain="web-1") == 2
    assert value(first, "domctl_domain_start_failures_total", domain="db") == 3

    world.domains = [WEB]
    second = scrape(server)
    for name in ("domctl_domain_state", "domctl_domain_restarts_total",
                 "domctl_domain_start_failures_total"):
        assert [labels["domain"] for labels in names_with(second, name)] == ["web-1"]
    assert value(second, "domctl_domains", driver="lxc", state="shutoff") == 0


def test_domains_by_state_has_every_state_of_every_driver(
        served: tuple[Metrics, MetricsServer], world: World) -> None:
    _, server = served
    world.domains = [WEB, DomainSample("web-2", DriverName.QEMU, State.RUNNING, Reason.UNPAUSED,
                                       0, 0)]
    series = scrape(server)
    counts = {(labels["driver"], labels["state"]): value(series, "domctl_domains", **labels)
              for labels in names_with(series, "domctl_domains")}
    assert set(counts) == {(d.value, s.value) for d in DriverName for s in State}
    assert counts["qemu", "running"] == 2
    assert sum(v or 0 for v in counts.values()) == 2


def test_state_change_replaces_the_series(served: tuple[Metrics, MetricsServer],
                                          world: World) -> None:
    _, server = served
    scrape(server)
    world.domains = [DomainSample("web-1", DriverName.QEMU, State.PAUSED, Reason.USER, 2, 1)]
    assert names_with(scrape(server), "domctl_domain_state") == [
        {"domain": "web-1", "driver": "qemu", "state": "paused", "reason": "user"}]


def test_queue_depth_is_read_at_scrape(served: tuple[Metrics, MetricsServer],
                                       world: World) -> None:
    _, server = served
    assert value(scrape(server), "domctl_workqueue_depth") == 0
    world.depth = 7
    assert value(scrape(server), "domctl_workqueue_depth") == 7


def test_reconcile_histogram_counts_by_result(served: tuple[Metrics, MetricsServer]) -> None:
    metrics, server = served
    assert value(scrape(server), "domctl_reconcile_duration_seconds_count", result="error") == 0
    metrics.observe_reconcile(0.003, "ok")
    metrics.observe_reconcile(0.2, "ok")
    metrics.observe_reconcile(12.0, "error")
    series = scrape(server)
    count = "domctl_reconcile_duration_seconds_count"
    assert value(series, count, result="ok") == 2
    assert value(series, count, result="error") == 1
    assert value(series, count, result="requeue") == 0
    assert value(series, "domctl_reconcile_duration_seconds_bucket", result="ok", le="0.005") == 1
    assert value(series, "domctl_reconcile_duration_seconds_bucket", result="ok", le="0.25") == 2
    assert value(series, "domctl_reconcile_duration_seconds_sum", result="error") == 12.0
    with pytest.raises(ValueError):
        metrics.observe_reconcile(1.0, "maybe")


def test_events_counter_starts_at_zero_and_skips_markers(
        served: tuple[Metrics, MetricsServer]) -> None:
    metrics, server = served
    assert value(scrape(server), "domctl_events_total", event="crashed", detail="panicked") == 0
    metrics.event({"domain": "web-1", "event": "started", "detail": "booted", "state": "running"})
    metrics.event({"domain": "db", "event": "started", "detail": "booted"})
    metrics.event({"domain": "db", "event": "stopped", "detail": "failed"})
    metrics.event({"marker": "dropped", "message": "subscriber fell behind"})
    series = scrape(server)
    assert value(series, "domctl_events_total", event="started", detail="booted") == 2
    assert value(series, "domctl_events_total", event="stopped", detail="failed") == 1
    assert value(series, "domctl_events_total", event="stopped", detail="crashed") == 0


def test_every_family_has_help_text(served: tuple[Metrics, MetricsServer]) -> None:
    _, server = served
    with urllib.request.urlopen(server.url, timeout=10) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    names = {f.name for f in families}
    assert {"domctl_domains", "domctl_domain_state", "domctl_domain_restarts",
            "domctl_domain_start_failures", "domctl_reconcile_duration_seconds",
            "domctl_workqueue_depth", "domctl_events"} <= names
    assert all(f.documentation for f in families)


def test_instances_do_not_share_a_registry(world: World) -> None:
    one = Metrics(lambda: world.domains, lambda: 0)
    two = Metrics(lambda: [], lambda: 0)
    one.observe_reconcile(1.0, "ok")
    assert value(parse(generate_latest(two.registry).decode()),
                 "domctl_reconcile_duration_seconds_count", result="ok") == 0


async def test_callbacks_run_on_the_loop_when_given(world: World) -> None:
    loop = asyncio.get_running_loop()
    seen: list[asyncio.AbstractEventLoop] = []

    def domains() -> list[DomainSample]:
        seen.append(asyncio.get_running_loop())  # raises off the loop
        return world.domains

    metrics = Metrics(domains, lambda: world.depth, loop=loop)
    server = metrics.serve("127.0.0.1:0")
    try:
        series = await asyncio.to_thread(scrape, server)
    finally:
        server.close()
    assert seen == [loop]
    assert value(series, "domctl_domain_restarts_total", domain="web-1") == 2
    # Collected from the loop's own thread (no deadlock): called directly.
    assert b"domctl_domain_state" in generate_latest(metrics.registry)


async def test_a_blocked_loop_fails_the_scrape_instead_of_hanging(world: World) -> None:
    metrics = Metrics(lambda: world.domains, lambda: 0, loop=asyncio.get_running_loop(),
                      settings=MetricsSettings(snapshot_timeout=0.2))
    server = metrics.serve("127.0.0.1:0")
    try:
        # A synchronous call on the loop's thread: the loop cannot answer the scrape meanwhile.
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(server.url, timeout=10)
        assert raised.value.code == 500
        await asyncio.sleep(0)  # the late read runs now and finds the scrape gone: no error
        assert value(await asyncio.to_thread(scrape, server), "domctl_workqueue_depth") == 0
    finally:
        server.close()


def test_close_releases_the_port(world: World) -> None:
    metrics = Metrics(lambda: world.domains, lambda: 0)
    server = metrics.serve("127.0.0.1:0")
    port = server.port
    server.close()
    again = metrics.serve(f"127.0.0.1:{port}")
    assert again.port == port
    again.close()


def test_ipv6_loopback(world: World) -> None:
    metrics = Metrics(lambda: world.domains, lambda: 0)
    try:
        server = metrics.serve("[::1]:0")
    except OSError as err:
        pytest.skip(f"no IPv6 loopback here: {err}")
    try:
        assert server.host == "::1"
        assert server.url == f"http://[::1]:{server.port}/metrics"
        assert value(scrape(server), "domctl_workqueue_depth") == 0
    finally:
        server.close()


@pytest.mark.parametrize(("addr", "expected"), [
    ("127.0.0.1:9100", ("127.0.0.1", 9100)),
    (":9100", ("127.0.0.1", 9100)),
    ("[::1]:9100", ("::1", 9100)),
    ("[::]:9100", ("::", 9100)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("localhost:0", ("localhost", 0)),
    ("metrics.example.org:65535", ("metrics.example.org", 65535)),
])
def test_parse_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_addr(addr) == expected


@pytest.mark.parametrize(("addr", "message"), [
    ("9100", "no port"),
    ("", "no port"),
    ("localhost", "no port"),
    ("127.0.0.1:", "port ''"),
    ("127.0.0.1:http", "port 'http'"),
    ("127.0.0.1:65536", "port '65536'"),
    ("127.0.0.1:-1", "port '-1'"),
    ("127.0.0.1:٩١", "port"),  # Arabic-Indic digits are str.isdigit() but not a port
    ("::1:9100", "in brackets"),
    ("[::1:9100", "bracketed IPv6"),
    ("[127.0.0.1]:9100", "bracketed IPv6"),
    ("bad host:9100", "not a host name"),
])
def test_bad_addr_names_the_value(addr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_addr(addr)
    assert repr(addr) in str(raised.value)


def test_serve_reports_bad_addr_and_unresolvable_host() -> None:
    metrics = Metrics(lambda: [], lambda: 0)
    with pytest.raises(ValueError, match="'nope'"):
        metrics.serve("nope")
    with pytest.raises(ValueError, match="cannot resolve"):
        metrics.serve("no-such-host.invalid:0")


def test_port_in_use_is_one_line_naming_the_flag_and_the_address(world: World) -> None:
    metrics = Metrics(lambda: [], lambda: 0)
    server = metrics.serve("127.0.0.1:0")
    try:
        with pytest.raises(MetricsAddressError) as raised:
            metrics.serve(f"127.0.0.1:{server.port}")
        assert str(raised.value) == f"--metrics 127.0.0.1:{server.port}: address already in use"
    finally:
        server.close()


def test_constructing_does_not_call_the_callbacks() -> None:
    def boom() -> list[DomainSample]:
        raise AssertionError("called before any scrape")

    Metrics(boom, lambda: int(boom() == []))  # registering must use describe(), not collect()


def test_manifest_problems_by_file_in_the_exposition() -> None:
    counts = {"/m/web.yaml": 0, "/m/new-vm.yaml": 2}
    metrics = Metrics(lambda: [], lambda: 0, manifests=lambda: counts)
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE domctl_manifest_problems gauge" in text
    assert 'domctl_manifest_problems{file="/m/new-vm.yaml"} 2.0' in text
    assert 'domctl_manifest_problems{file="/m/web.yaml"} 0.0' in text
    counts.pop("/m/new-vm.yaml")  # fixed and gone: its series goes too
    assert "new-vm" not in generate_latest(metrics.registry).decode()


# --- the statistics series and the engine's collection behind them ---------------------------

WEB_STATS = DomainStats(
    cpu_seconds=12.5, rss_bytes=80 * MiB, balloon_bytes=64 * MiB,
    disks=(DiskStats("root", 4096, 512, 3, 1),),
    interfaces=(NicStats("dt-0a1b2c3d-0", rx_bytes=1500, tx_bytes=900, rx_packets=10,
                         tx_packets=6),))


def test_statistics_series_with_libvirt_exporter_names() -> None:
    async def stats() -> list[Figures]:
        return [Figures("web-1", WEB_STATS, 25.0), Figures("db", None, error="timed out")]

    metrics = Metrics(lambda: [dataclasses.replace(WEB, ready=True),
                               dataclasses.replace(DB, ready=False)], lambda: 0, stats=stats)
    series = parse(generate_latest(metrics.registry).decode())  # no loop: one of its own
    assert value(series, "domctl_domain_cpu_seconds_total", domain="web-1") == 12.5
    assert value(series, "domctl_domain_memory_rss_bytes", domain="web-1") == 80 * MiB
    assert value(series, "domctl_domain_balloon_bytes", domain="web-1") == 64 * MiB
    disk = {"domain": "web-1", "device": "root"}
    assert value(series, "domctl_domain_block_read_bytes_total", **disk) == 4096
    assert value(series, "domctl_domain_block_write_bytes_total", **disk) == 512
    assert value(series, "domctl_domain_block_read_requests_total", **disk) == 3
    assert value(series, "domctl_domain_block_write_requests_total", **disk) == 1
    nic = {"domain": "web-1", "interface": "dt-0a1b2c3d-0"}
    assert value(series, "domctl_domain_interface_receive_bytes_total", **nic) == 1500
    assert value(series, "domctl_domain_interface_transmit_bytes_total", **nic) == 900
    assert value(series, "domctl_domain_interface_receive_packets_total", **nic) == 10
    assert value(series, "domctl_domain_interface_transmit_packets_total", **nic) == 6
    assert not names_with(series, "domctl_domain_cpu_seconds_total")[1:]  # db: no figures
    # the one alert expression: domctl_domain_in_desired_state == 0
    assert value(series, "domctl_domain_in_desired_state", domain="web-1") == 1
    assert value(series, "domctl_domain_in_desired_state", domain="db") == 0
    [build] = names_with(series, "domctl_build_info")
    assert build["python"] == platform.python_version() and build["version"]
    assert (value(series, "process_resident_memory_bytes") or 0) > 0


async def test_statistics_are_collected_on_the_loop_and_a_slow_collection_is_left_out(
        ) -> None:
    loop = asyncio.get_running_loop()
    slow = asyncio.Event()

    async def stats() -> list[Figures]:
        assert asyncio.get_running_loop() is loop
        if slow.is_set():
            await asyncio.sleep(30)
        return [Figures("web-1", WEB_STATS)]

    metrics = Metrics(lambda: [WEB], lambda: 0, loop=loop, stats=stats,
                      settings=MetricsSettings(snapshot_timeout=0.5))
    server = metrics.serve("127.0.0.1:0")
    try:
        series = await asyncio.to_thread(scrape, server)
        assert value(series, "domctl_domain_cpu_seconds_total", domain="web-1") == 12.5
        slow.set()
        series = await asyncio.to_thread(scrape, server)  # still served, without them
        assert names_with(series, "domctl_domain_cpu_seconds_total") == []
        assert value(series, "domctl_domain_restarts_total", domain="web-1") == 2
    finally:
        server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_collector_cpu_percent_from_the_previous_sample_and_failures_kept_apart(
        tmp_path: Path) -> None:
    driver = MemoryDriver()
    controller = make_controller(tmp_path, driver, domain("web"), domain("db"),
                                 domain("off", state="shutoff"))
    for name in ("web", "db", "off"):
        await controller.reconcile(name)
    clock = Clock()
    collector = DomainStatsCollector(controller.ledger, controller.drivers, clock)
    driver.host.figures["web"] = dataclasses.replace(WEB_STATS, cpu_seconds=10.0)
    driver.host.figures["db"] = DriverError("db", "stats", "monitor: no reply")

    first = {f.name: f for f in await collector.collect()}
    assert set(first) == {"web", "db"}  # running ones only
    assert first["web"].cpu_percent is None  # no earlier sample of this run
    assert first["db"].stats is None and "no reply" in first["db"].error

    clock.now += 2.0
    driver.host.figures["web"] = dataclasses.replace(WEB_STATS, cpu_seconds=11.0)
    [web] = await collector.collect("web")
    assert web.cpu_percent == 50.0  # 1 CPU second in 2 s

    wire = to_json(web)
    assert wire == {
        "name": "web", "cpu": {"seconds": 11.0, "percent": 50.0},
        "memory": {"rssBytes": 80 * MiB, "balloonBytes": 64 * MiB},
        "disks": [{"device": "root", "readBytes": 4096, "writeBytes": 512, "readOps": 3,
                   "writeOps": 1}],
        "interfaces": [{"name": "dt-0a1b2c3d-0", "rxBytes": 1500, "txBytes": 900,
                        "rxPackets": 10, "txPackets": 6}]}
    assert to_json(first["db"]) == {"name": "db", "error": first["db"].error}
    assert json.dumps(wire)  # JSON-ready

    with pytest.raises(NotRunning, match="off is not running"):
        await collector.collect("off")
    with pytest.raises(NoSuchDomain, match="did you mean web"):
        await collector.collect("webb")


async def test_a_driver_call_that_hangs_or_breaks_leaves_the_others_alone(
        tmp_path: Path) -> None:
    driver = MemoryDriver()
    controller = make_controller(tmp_path, driver, domain("web"), domain("db"), domain("ok"))
    for name in ("web", "db", "ok"):
        await controller.reconcile(name)
    collector = DomainStatsCollector(controller.ledger, controller.drivers, timeout=0.1)
    answer = driver.stats

    async def stats(name: str) -> DomainStats:
        if name == "web":
            await asyncio.sleep(30)
        if name == "db":
            raise RuntimeError("a bug")
        return await answer(name)

    driver.stats = stats  # type: ignore[method-assign]
    db, ok, web = await collector.collect()  # by name
    assert web.stats is None and "0.1 s" in web.error
    assert db.stats is None and db.error == "internal error: RuntimeError: a bug"
    assert ok.stats is not None and ok.stats.rss_bytes == 64 * MiB
