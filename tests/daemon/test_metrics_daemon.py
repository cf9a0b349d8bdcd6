"""The Prometheus listener of a real `domctl run --metrics`: the statistics series of a real
qemu VM and a real container scraped over HTTP, the desired-state gauge, the build info and
the process collector; and a busy `--metrics` port, which ends `domctl run` with one line.

The VM boots a one-sector disk (SeaBIOS reads it, then the guest spins under tcg), so CPU time
and the disk's reads are there at once; the container is busybox."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.domains import domain
from tests.support.qemu import LOOP_CODE, boot_sector

from .conftest import SLEEPER, Controller, controller_on

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """A controller with metrics on a free port, its URL as `ctl.metrics_url`."""
    with controller_on(tmp_path_factory.mktemp("metrics"), ("--metrics", "127.0.0.1:0")) as ctl:
        url = next((line["url"] for line in ctl.log_lines()
                    if line.get("event") == "metrics listening"), None)
        assert url is not None, ctl.stderr_tail()
        ctl.metrics_url = url  # type: ignore[attr-defined]
        yield ctl


def scrape(url: str) -> Series:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.qemu
@pytest.mark.lxc
def test_statistics_series_of_a_vm_and_a_container(ctl: Controller, tmp_path: Path) -> None:
    url = ctl.metrics_url  # type: ignore[attr-defined]
    vm, ct = ctl.name("stats-vm"), ctl.name("stats-ct")
    ctl.apply(domain(vm, image=boot_sector(tmp_path / "loop.img", LOOP_CODE)))
    ctl.apply(domain(ct, "lxc", lxc=SLEEPER))
    for name in (vm, ct):
        ctl.wait_state(name, "running", "booted", timeout=60)

    def figures() -> Series | None:
        series = scrape(url)
        ready = (value(series, "domctl_domain_block_read_bytes_total", domain=vm,
                       device="boot") > 0
                 and all(value(series, "domctl_domain_cpu_seconds_total", domain=name) > 0
                         for name in (vm, ct)))
        return series if ready else None

    series = ctl.wait_for(figures, "CPU time of both and the VM's boot sector read", vm)
    assert value(series, "domctl_domain_block_read_requests_total", domain=vm,
                 device="boot") >= 1
    assert value(series, "domctl_domain_memory_rss_bytes", domain=vm) > 0
    assert value(series, "domctl_domain_balloon_bytes", domain=vm) == 64 * 1024 * 1024
    assert value(series, "domctl_domain_memory_rss_bytes", domain=ct) > 0
    assert ("domctl_domain_balloon_bytes", (("domain", ct),)) not in series
    for name in (vm, ct):  # Ready: the one alert is `domctl_domain_in_desired_state == 0`
        assert value(series, "domctl_domain_in_desired_state", domain=name) == 1
    build = [dict(labels) for (name, labels) in series if name == "domctl_build_info"]
    assert len(build) == 1 and build[0]["version"] and build[0]["python"], build
    assert value(series, "process_resident_memory_bytes") > 0
    assert value(series, "process_open_fds") > 0

    ctl.apply(domain(ct, "lxc", lxc=SLEEPER, state="shutoff"))
    ctl.wait_state(ct, "shutoff", timeout=60)
    series = scrape(url)
    assert not [labels for (name, labels) in series
                if name.startswith("domctl_domain_cpu") and ("domain", ct) in labels]
    assert value(series, "domctl_domain_in_desired_state", domain=ct) == 1  # off, as desired


def test_a_busy_metrics_port_ends_run_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        ctl = Controller(tmp_path, ("--metrics", addr))
        try:
            done = subprocess.run(ctl.argv(), capture_output=True, text=True, timeout=60,
                                  check=False)
        finally:
            ctl.cleanup()
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == f"error: --metrics {addr}: address already in use"
