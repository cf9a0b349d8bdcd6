"""Fixtures of the network tests: a network namespace per test, deleted afterwards.

Tests marked `net` run real ip, nft and dnsmasq, always inside a namespace they create
(`domctl-t-<random>`), so nothing reaches the host's own interfaces, rules or traffic. They
are skipped, with the reason, only when a tool is missing or the tests do not run as root.
The namespace is deleted in the fixture's finalizer, also when the test failed; deleting it
removes every interface, table and socket in it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from reconcilers.net.command import Place
from tests.support.netns import inside

MISSING = [tool for tool in ("ip", "nft", "dnsmasq", "busybox") if shutil.which(tool) is None]


@pytest.fixture(autouse=True)
def _net_tools(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("net") is None:
        return
    if MISSING:
        pytest.skip(f"not installed: {', '.join(MISSING)}")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")


def _netns() -> Iterator[str]:
    name = f"domctl-t-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=10)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace (only lo, up), deleted after the test."""
    yield from _netns()


@pytest.fixture
def place(netns: str) -> Place:
    return Place(netns)


@pytest.fixture
def client_netns() -> Iterator[str]:
    """A second namespace, for a DHCP client on the far end of a veth."""
    yield from _netns()


def sh(*argv: str, check: bool = True,
       stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a setup or inspection command of a test (never the code under test)."""
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=20,
                          input=stdin)


@pytest.fixture
def in_netns(netns: str) -> Iterator[str]:
    """The test's own thread inside `netns` (tests/support/netns.py): the drivers' commands,
    qemu and lxc-start run there; back in the host's namespace afterwards."""
    with inside(netns):
        yield netns
