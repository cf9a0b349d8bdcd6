"""network.py: a whole network (bridge, nftables, dnsmasq) ensured, repaired part by part and
removed, for real inside a namespace of the test's own; the lease file parsed."""

from __future__ import annotations

import os
import signal
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from reconcilers.identity import ExitWatch
from reconcilers.model import Metadata, SourceRef
from reconcilers.net.command import Place
from reconcilers.net.dnsmasq import Reservation
from reconcilers.net.model import Dhcp4, Dns, Ipv4, Ipv6, Network, NetworkSpec
from reconcilers.net.network import NetworkHost, parse_leases, plan
from tests.net.conftest import sh

LAN = Network(Metadata("lan"), NetworkSpec(
    bridge="dc-lan", mtu=1400,
    ipv4=Ipv4("10.78.0.1/24", Dhcp4("10.78.0.100", "10.78.0.150", 600), nat=True),
    dns=Dns("lan.test")), SourceRef("lan.yaml", 1))


def _ifindex(netns: str, name: str) -> str:
    return sh("ip", "-n", netns, "-o", "link", "show", "dev", name).stdout.split(":")[0]


@pytest.mark.net
async def test_a_network_comes_up_is_repaired_part_by_part_and_goes(place: Place, netns: str,
                                                                     tmp_path: Path) -> None:
    host = NetworkHost(tmp_path, place)
    wanted = plan(LAN, tmp_path, [Reservation("52:54:00:00:00:05", IPv4Address("10.78.0.5"))])
    found, repaired = await host.ensure(wanted)
    assert not found.complete and repaired == ["bridge", "nftables table", "dnsmasq"]
    observed = await host.observe(wanted)
    assert observed.complete and observed.dnsmasq_pid is not None
    assert wanted.dnsmasq is not None
    assert "dhcp-host=52:54:00:00:00:05,10.78.0.5" in wanted.dnsmasq.files.conf.read_text()
    assert sh("ip", "netns", "exec", netns, "sysctl", "-n",
              "net.ipv4.ip_forward").stdout.strip() == "1"
    bridge_index = _ifindex(netns, "dc-lan")

    # an intact network is left alone: nothing restarted, nothing replaced
    _, repaired = await host.ensure(wanted)
    assert repaired == [] and (await host.observe(wanted)).dnsmasq_pid == observed.dnsmasq_pid

    # dnsmasq killed by hand: only it comes back
    assert observed.dnsmasq_pid is not None
    watch = ExitWatch(observed.dnsmasq_pid, lambda: None)
    os.kill(observed.dnsmasq_pid, signal.SIGKILL)
    assert await watch.wait(5)
    _, repaired = await host.ensure(wanted)
    assert repaired == ["dnsmasq"] and _ifindex(netns, "dc-lan") == bridge_index

    # the bridge deleted by hand: recreated with its address
    sh("ip", "-n", netns, "link", "del", "dc-lan")
    _, repaired = await host.ensure(wanted)
    assert "bridge" in repaired and (await host.observe(wanted)).complete
    assert "10.78.0.1/24" in sh("ip", "-n", netns, "-4", "-o", "address", "show", "dev",
                                "dc-lan").stdout

    # a new reservation is a new config: dnsmasq is restarted with it
    more = plan(LAN, tmp_path, [Reservation("52:54:00:00:00:06", IPv4Address("10.78.0.6"))])
    assert not (await host.observe(more)).dnsmasq_current
    await host.ensure(more)
    assert (await host.observe(more)).complete

    assert await host.remove("lan", "dc-lan") == ["dnsmasq", "nftables table", "bridge"]
    assert sh("ip", "-n", netns, "link", "show", "dev", "dc-lan", check=False).returncode != 0
    assert "domctl_lan" not in sh("ip", "netns", "exec", netns, "nft", "list",
                                  "tables").stdout
    assert not any(tmp_path.iterdir())


def test_the_lease_file_gives_ipv4_leases_by_mac() -> None:
    text = ("1764170000 52:54:00:ab:cd:ef 10.78.0.120 guest1 01:52:54:00:ab:cd:ef\n"
            "0 00:16:3E:00:00:01 10.78.0.5 * *\n"
            "duid 00:01:00:01:2c:5d:aa:bb:52:54:00:00:00:01\n"
            "1764170000 1234 fd00::120 * 00:01:00:01\n"
            "garbage\n")
    leases = parse_leases(text)
    assert [(lease.mac, lease.address, lease.hostname) for lease in leases] == [
        ("52:54:00:ab:cd:ef", "10.78.0.120", "guest1"), ("00:16:3e:00:00:01", "10.78.0.5", None)]


BLUE = Network(Metadata("blue"), NetworkSpec(
    bridge="dc-blue", ipv4=Ipv4("10.80.0.1/24", nat=True),
    ipv6=Ipv6("fd00:80::1/64")), SourceRef("blue.yaml", 1))


def _ping(netns: str, address: str) -> bool:
    flag = "-6" if ":" in address else "-4"
    return sh("ip", "netns", "exec", netns, "busybox", "ping", flag, "-c", "1", "-W", "1", address,
              check=False).returncode == 0


@pytest.mark.net
async def test_a_guest_reaches_its_own_gateway_but_not_another_networks(
        place: Place, netns: str, client_netns: str, tmp_path: Path) -> None:
    """Two networks on one host: a guest on `lan` (a veth into a namespace of its own, its
    default route via lan's gateway) pings lan's gateway, and neither blue's IPv4 nor its IPv6
    gateway: the input chain of blue's table drops what arrives from another bridge."""
    host = NetworkHost(tmp_path, place)
    for network in (LAN, BLUE):
        await host.ensure(plan(network, tmp_path))
    blue = await host.observe(plan(BLUE, tmp_path))
    assert blue.complete and blue.dnsmasq_pid is not None  # router advertisements for SLAAC
    assert "enable-ra" in host.files("blue").conf.read_text()
    sh("ip", "-n", netns, "link", "add", "vh0", "type", "veth", "peer", "name", "eth0",
       "netns", client_netns)
    sh("ip", "-n", netns, "link", "set", "vh0", "master", "dc-lan", "up")
    for command in (("address", "add", "10.78.0.50/24", "dev", "eth0"),
                    ("link", "set", "eth0", "up"),
                    ("route", "add", "default", "via", "10.78.0.1"),
                    ("-6", "route", "add", "default", "dev", "eth0")):
        sh("ip", "-n", client_netns, *command)
    try:
        assert _ping(client_netns, "10.78.0.1")
        assert not _ping(client_netns, "10.80.0.1")
        assert not _ping(client_netns, "fd00:80::1")
        assert _ping(netns, "10.80.0.1")  # the host itself still reaches blue (via lo)
        sh("ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "domctl_blue")
        assert _ping(client_netns, "10.80.0.1")  # it was blue's table that kept it out
    finally:
        for name, network in (("lan", LAN), ("blue", BLUE)):
            await host.remove(name, network.spec.bridge)


@pytest.mark.net
async def test_a_leased_name_resolves_under_the_networks_dns_domain(
        place: Place, netns: str, client_netns: str, tmp_path: Path) -> None:
    """spec.dns: dnsmasq answers on the gateway for NAME.lan.test, NAME being the hostname a
    guest sent with its DHCP request; names outside the domain are not forwarded anywhere."""
    host = NetworkHost(tmp_path, place)
    await host.ensure(plan(LAN, tmp_path))
    sh("ip", "-n", netns, "link", "add", "vh0", "type", "veth", "peer", "name", "eth0",
       "netns", client_netns)
    sh("ip", "-n", netns, "link", "set", "vh0", "master", "dc-lan", "up")
    sh("ip", "-n", client_netns, "link", "set", "eth0", "up")
    script = tmp_path / "lease.sh"
    script.write_text('#!/bin/sh\n[ "$1" = bound ] && ip addr add $ip/$mask dev $interface\n'
                      'exit 0\n')
    script.chmod(0o755)
    try:
        sh("ip", "netns", "exec", client_netns, "busybox", "udhcpc", "-i", "eth0", "-q", "-n",
           "-t", "10", "-T", "1", "-x", "hostname:guest1", "-s", str(script))
        leased = next(lease.address for lease in host.leases("lan")
                      if lease.hostname == "guest1")
        answer = sh("ip", "netns", "exec", client_netns, "busybox", "nslookup",
                    "guest1.lan.test", "10.78.0.1").stdout
        assert leased in answer, answer
        outside = sh("ip", "netns", "exec", client_netns, "busybox", "nslookup",
                     "example.org", "10.78.0.1", check=False)
        assert outside.returncode == 1 and "REFUSED" in outside.stdout, outside
    finally:
        await host.remove("lan", "dc-lan")
