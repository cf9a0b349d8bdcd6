"""names.py: the gate for every value reaching ip, nft or dnsmasq, and the derived names."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest

from reconcilers.net import names
from reconcilers.net.names import UnsafeValue

HOSTILE = [
    "", " ", "br 0", "br0\n", "br\nx", "-br0", "--help", "br;rm", "br'0", 'br"0', "br`x`",
    "br$(x)", "br/0", "br\\0", "br\t0", "br#0", "br{0}", "a" * 16, ".", "..", "brü", "br\x00",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_interface_names_are_refused(value: str) -> None:
    with pytest.raises(UnsafeValue, match=r"^interface "):
        names.check_ifname(value)


@pytest.mark.parametrize("value", ["br0", "a", "dc-default", "A.b_c-9", "a" * 15, "vlan.10"])
def test_plain_interface_names_pass(value: str) -> None:
    assert names.check_ifname(value) == value


@pytest.mark.parametrize("check", [names.check_object_name, names.check_netns, names.check_mac,
                                   names.check_path, names.check_dns_domain,
                                   names.check_account, names.parse_interface,
                                   names.parse_host])
@pytest.mark.parametrize("value", ["x\ny", "x y", "-x", "x;y", "x'y", 'x"y', "x" * 300, 5, None])
def test_every_checker_refuses_hostile_values(check: object, value: object) -> None:
    assert callable(check)
    with pytest.raises(UnsafeValue):
        check(value)


@pytest.mark.parametrize(("value", "why"), [
    ("10.0.0.1", "prefix length"), ("10.0.0.0/24", "network or broadcast"),
    ("10.0.0.255/24", "network or broadcast"), ("10.0.0.1/31", "/30 or shorter"),
    ("10.0.0.1/255.255.255.0", "write it as 10.0.0.1/24"), ("010.0.0.1/24", "Leading zeros"),
    ("127.0.0.1/8", "usable host"), ("224.0.0.1/24", "usable host"),
    ("10.0.0.1/24 ", "not a valid netmask"), ("10.0.0.1/24\nx", "not a valid netmask"),
    ("fe80::1/64", "Expected 4 octets"), ("10.0.0.256/24", "255"),
])
def test_bad_interface_addresses_are_refused(value: str, why: str) -> None:
    with pytest.raises(UnsafeValue, match=why):
        names.parse_interface(value)


def test_an_interface_address_parses() -> None:
    iface = names.parse_interface("192.168.122.1/24")
    assert iface == IPv4Interface("192.168.122.1/24")
    assert str(iface.network) == "192.168.122.0/24"


GW = IPv4Interface("10.9.0.1/24")


@pytest.mark.parametrize(("start", "end", "why"), [
    ("10.9.1.10", "10.9.1.20", "outside the subnet"),
    ("10.9.0.10", "10.9.1.20", "outside the subnet"),
    ("10.9.0.20", "10.9.0.10", "start comes after the end"),
    ("10.9.0.1", "10.9.0.20", "is the gateway"),
    ("10.9.0.0", "10.9.0.20", "network or broadcast"),
    ("10.9.0.2", "10.9.0.255", "network or broadcast"),
    ("10.9.0.2", "10.9.0.20 ", "decimal digits"),
    ("10.9.0.2", "10.9.0.20,1", "decimal digits"),
])
def test_bad_dhcp_ranges_are_refused(start: str, end: str, why: str) -> None:
    with pytest.raises(UnsafeValue, match=why):
        names.check_dhcp_range(GW, start, end)


def test_a_range_around_the_gateway_is_refused() -> None:
    with pytest.raises(UnsafeValue, match=r"contains the gateway 10\.9\.0\.100"):
        names.check_dhcp_range(IPv4Interface("10.9.0.100/24"), "10.9.0.10", "10.9.0.200")


def test_a_good_dhcp_range() -> None:
    assert names.check_dhcp_range(GW, "10.9.0.10", "10.9.0.10") == (IPv4Address("10.9.0.10"),
                                                                  IPv4Address("10.9.0.10"))


def test_reservations_are_in_the_subnet_and_not_the_gateway() -> None:
    assert names.check_reserved(GW, "10.9.0.5") == IPv4Address("10.9.0.5")
    for bad in ("10.9.0.1", "10.9.1.5", "10.9.0.255"):
        with pytest.raises(UnsafeValue):
            names.check_reserved(GW, bad)


@pytest.mark.parametrize(("value", "why"), [
    ("52:54:00:12:34", "six hex pairs"), ("52-54-00-12-34-56", "six hex pairs"),
    ("01:00:5e:00:00:01", "multicast"), ("52:54:00:12:34:56,10.0.0.9", "six hex pairs"),
])
def test_bad_macs_are_refused(value: str, why: str) -> None:
    with pytest.raises(UnsafeValue, match=why):
        names.check_mac(value)


def test_macs_are_lower_cased() -> None:
    assert names.check_mac("52:54:00:AB:cd:EF") == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize("value", [67, 65536, True, "1500", 1500.0])
def test_bad_mtus_are_refused(value: object) -> None:
    with pytest.raises(UnsafeValue):
        names.check_mtu(value)


@pytest.mark.parametrize("value", ["relative/path", "/a/../b", "/a b", "/a\n", "/a;b", "/a#b"])
def test_bad_paths_are_refused(value: str) -> None:
    with pytest.raises(UnsafeValue):
        names.check_path(value)


def test_bridge_names_short_and_hashed() -> None:
    assert names.bridge_name("default") == "dc-default"
    assert names.bridge_name("a" * 11) == "dc-" + "a" * 11
    long = names.bridge_name("a-very-long-network-name")
    assert len(long) == 15 and long.startswith("dc-a-ver-")
    assert names.bridge_name("a-very-long-network-name") == long  # stable
    assert names.bridge_name("a-very-long-network-nam3") != long
    # the hashed form is always 15 characters, the short form at most 14: they never meet
    assert all(len(names.bridge_name("n" * k)) <= 14 for k in range(1, 12))
    assert all(len(names.bridge_name("n" * k)) == 15 for k in range(12, 64))


def test_bridge_names_refuse_bad_network_names() -> None:
    for bad in ("", "Upper", "-x", "a b", "x" * 64):
        with pytest.raises(UnsafeValue):
            names.bridge_name(bad)


def test_nic_names_are_short_stable_and_distinct() -> None:
    domains = [f"vm-{i}" for i in range(2000)] + ["x" * 63]
    taps = {names.tap_name(d, i) for d in domains for i in (0, 1, 999)}
    assert len(taps) == len(domains) * 3
    assert all(len(t) <= 15 for t in taps)
    assert names.tap_name("web", 0) == names.tap_name("web", 0)
    assert names.tap_name("web", 0).startswith("dt-")
    assert names.veth_name("web", 0).startswith("dv-")
    assert names.veth_name("web", 0)[3:] == names.tap_name("web", 0)[3:]
    for bad_index in (-1, 1000, True):
        with pytest.raises(UnsafeValue):
            names.tap_name("web", bad_index)
