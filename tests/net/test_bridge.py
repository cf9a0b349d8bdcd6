"""bridge.py with real iproute2, inside a namespace of the test's own."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface

import pytest

from reconcilers.net import bridge
from reconcilers.net.bridge import BridgeSpec
from reconcilers.net.command import Place
from reconcilers.net.errors import NetError
from tests.net.conftest import sh

pytestmark = pytest.mark.net

SPEC = BridgeSpec(network="testnet", name="dc-testnet", address=IPv4Interface("10.77.0.1/24"),
                  mtu=1400)


async def test_a_bridge_comes_up_with_its_address_and_mtu_and_is_removed(place: Place,
                                                                         netns: str) -> None:
    assert await bridge.observe(place, SPEC.name) is None
    state = await bridge.ensure(place, SPEC)
    assert state.kind == "bridge" and state.up and state.mtu == 1400
    assert state.addresses == (IPv4Interface("10.77.0.1/24"),)
    shown = sh("ip", "-n", netns, "-4", "-o", "address", "show", "dev", "dc-testnet").stdout
    assert "10.77.0.1/24" in shown
    assert await bridge.delete(place, "testnet", SPEC.name) is True
    assert await bridge.observe(place, SPEC.name) is None
    assert await bridge.delete(place, "testnet", SPEC.name) is False


async def test_ensure_is_idempotent_and_repairs_drift(place: Place, netns: str) -> None:
    first = await bridge.ensure(place, SPEC)
    assert await bridge.ensure(place, SPEC) == first
    sh("ip", "-n", netns, "link", "del", "dev", SPEC.name)  # someone deletes it
    assert await bridge.ensure(place, SPEC) == first
    sh("ip", "-n", netns, "link", "set", "dev", SPEC.name, "mtu", "1300", "down")
    sh("ip", "-n", netns, "address", "del", "10.77.0.1/24", "dev", SPEC.name)
    sh("ip", "-n", netns, "address", "add", "10.78.0.1/24", "dev", SPEC.name)
    assert await bridge.ensure(place, SPEC) == first


async def test_a_bridge_that_is_not_ours_is_never_touched(place: Place, netns: str) -> None:
    sh("ip", "-n", netns, "link", "add", "name", SPEC.name, "type", "bridge")
    with pytest.raises(NetError, match="not managed by domctl"):
        await bridge.ensure(place, SPEC)
    with pytest.raises(NetError, match="refusing to delete"):
        await bridge.delete(place, "testnet", SPEC.name)
    other = BridgeSpec(network="other", name="dc-other", address=IPv4Interface("10.79.0.1/24"))
    await bridge.ensure(place, other)
    with pytest.raises(NetError, match="refusing to delete"):
        await bridge.delete(place, "testnet", "dc-other")  # ours, but another network's
    state = await bridge.observe(place, SPEC.name)
    assert state is not None and state.alias is None and state.addresses == ()


async def test_an_ipv6_address_is_set_without_dad_and_the_link_local_one_is_ignored(
        place: Place, netns: str) -> None:
    spec = BridgeSpec(network="testnet", name="dc-testnet", address=None,
                      address6=IPv6Interface("fd00:77::1/64"))
    state = await bridge.ensure(place, spec)
    assert state.addresses == () and state.addresses6 == (IPv6Interface("fd00:77::1/64"),)
    shown = sh("ip", "-n", netns, "-6", "-o", "address", "show", "dev", "dc-testnet").stdout
    [line] = [entry for entry in shown.splitlines() if "fd00:77::1/64" in entry]
    assert "tentative" not in line
    assert (await bridge.ensure(place, spec)).matches(spec)
