"""`kind: Network` documents and the NICs of domains, through the real loader.

Every field of a Network is read and defaulted; every value that will reach ip, nft or dnsmasq
is refused at load time with FILE:LINE: FIELD when names.py's gate would refuse it (a hostile
bridge name or DHCP range cannot even be loaded); names are unique per kind and a bridge serves
one network; NICs follow their driver's rules.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema

from controller.manifests import schema
from controller.manifests.errors import ManifestError
from controller.manifests.loader import load_documents, load_paths, load_text
from controller.manifests.semantic import check
from reconcilers.model import LinkState, Nic, NicMode
from reconcilers.net import names
from reconcilers.net.model import Dhcp4, Dhcp6, Dns, Ipv4, Ipv6, Network, NetworkSpec
from tests.support.cli import invoke
from tests.test_manifest_properties import LOCATED, dump

NETWORK = """\
apiVersion: domctl/v1
kind: Network
metadata:
  name: lan
  labels: {site: lab}
spec:
  bridge: br-lan
  mtu: 9000
  ipv4:
    address: 192.168.150.1/24
    dhcp:
      range: [192.168.150.100, 192.168.150.199]
      leaseTime: 30m
    nat: true
  ipv6:
    address: fd00:150::1/64
    dhcp:
      range: ["fd00:150::100", "fd00:150::1ff"]
      leaseTime: 2h
  dns:
    domain: lan.test
"""


def network(text: str = NETWORK, filename: str = "n.yaml") -> Network:
    [declared] = load_documents(textwrap.dedent(text), filename).networks
    return declared


def problems_of(text: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_documents(textwrap.dedent(text), "n.yaml")
    return [str(p) for p in caught.value.problems]


def one_problem(text: str) -> str:
    found = problems_of(text)
    assert len(found) == 1, found
    return found[0]


# --- the Network document ----------------------------------------------------------------------

def test_every_field_is_read() -> None:
    lan = network()
    assert lan.name == "lan" and lan.metadata.labels == (("site", "lab"),)
    assert lan.spec == NetworkSpec(
        bridge="br-lan", mtu=9000,
        ipv4=Ipv4(address="192.168.150.1/24", nat=True,
                  dhcp=Dhcp4("192.168.150.100", "192.168.150.199", lease_seconds=1800)),
        ipv6=Ipv6(address="fd00:150::1/64",
                  dhcp=Dhcp6("fd00:150::100", "fd00:150::1ff", lease_seconds=7200)),
        dns=Dns(domain="lan.test"))
    assert lan.source.file == "n.yaml" and lan.source.line == 1


def test_defaults_a_bare_bridge_and_a_derived_name() -> None:
    bare = network("apiVersion: domctl/v1\nkind: Network\nmetadata: {name: lan}\nspec: {}\n")
    assert bare.spec == NetworkSpec(bridge="dc-lan", mtu=1500)  # no address, DHCP, NAT, DNS
    long_name = "a-network-with-a-long-name"
    derived = network(NETWORK.replace("name: lan", f"name: {long_name}")
                      .replace("  bridge: br-lan\n", ""))
    assert derived.spec.bridge == names.bridge_name(long_name) and len(derived.spec.bridge) == 15
    dns_only = network(NETWORK.replace("    domain: lan.test\n", "").replace("dns:", "dns: {}"))
    assert dns_only.spec.dns == Dns(domain=None)  # DNS served, no local domain
    no_lease = network(NETWORK.replace("      leaseTime: 30m\n", ""))
    assert no_lease.spec.ipv4 is not None and no_lease.spec.ipv4.dhcp is not None
    assert no_lease.spec.ipv4.dhcp.lease_seconds == 3600


@pytest.mark.parametrize(("written", "seconds"), [
    ("1h", 3600), ("30m", 1800), ("3600s", 3600), ("3600", 3600), ("2m", 120), ("1h30m", 5400),
    ("2.5m", 150),
])
def test_lease_times(written: str, seconds: int) -> None:
    lan = network(NETWORK.replace("leaseTime: 30m", f"leaseTime: {written}"))
    assert lan.spec.ipv4 is not None and lan.spec.ipv4.dhcp is not None
    assert lan.spec.ipv4.dhcp.lease_seconds == seconds


def test_the_same_lease_written_two_ways_is_one_generation() -> None:
    a = network(NETWORK.replace("leaseTime: 30m", "leaseTime: 1800"))
    b = network(NETWORK.replace("leaseTime: 30m", "leaseTime: 30m  # half an hour"))
    assert a.generation == b.generation
    assert network(NETWORK.replace("30m", "31m")).generation != a.generation


# (edit of NETWORK, line, field, words of the message)
REFUSED = [
    (("bridge: br-lan", 'bridge: "br0 up; x"'), 7, "spec.bridge",
     '"br0 up; x" is not an interface'),
    (("bridge: br-lan", "bridge: -br"), 7, "spec.bridge", "not starting with '-'"),
    (("bridge: br-lan", "bridge: a-bridge-too-long"), 7, "spec.bridge", "is not an interface"),
    (("bridge: br-lan", 'bridge: ".."'), 7, "spec.bridge", "'..': is not an interface name"),
    (("mtu: 9000", "mtu: 67"), 8, "spec.mtu", "at least 68"),
    (("mtu: 9000", "mtu: 65536"), 8, "spec.mtu", "at most 65535"),
    (("mtu: 9000", "mtu: 1200"), 8, "spec.mtu", "IPv6 needs an MTU of at least 1280"),
    (("[192.168.150.100,", '["192.168.150.100,dhcp-script=/x",'), 12, "spec.ipv4.dhcp.range[0]",
     "is not an IPv4 address"),
    (("[192.168.150.100,", '["192.168.150.100\\ndhcp-script=/x",'), 12,
     "spec.ipv4.dhcp.range[0]", "is not an IPv4 address"),
    (("192.168.150.199]", "192.168.151.199]"), 12, "spec.ipv4.dhcp.range[1]",
     "is outside the subnet 192.168.150.0/24"),
    (("[192.168.150.100, 192.168.150.199]", "[192.168.150.199, 192.168.150.100]"), 12,
     "spec.ipv4.dhcp.range", "the start comes after the end"),
    (("[192.168.150.100,", "[192.168.150.1,"), 12, "spec.ipv4.dhcp.range[0]", "is the gateway"),
    (("[192.168.150.100,", "[192.168.150.0,"), 12, "spec.ipv4.dhcp.range[0]",
     "network or broadcast"),
    (("[192.168.150.100,", "[192.168.150.010,"), 12, "spec.ipv4.dhcp.range[0]",
     "Leading zeros are not permitted"),
    (("[192.168.150.100, 192.168.150.199]", "[192.168.150.100]"), 12, "spec.ipv4.dhcp.range",
     "needs at least 2 items"),
    (("leaseTime: 30m", "leaseTime: 1m"), 13, "spec.ipv4.dhcp.leaseTime",
     "'1m': is 60 s; must be an integer number of seconds, 120 to 31536000"),
    (("leaseTime: 30m", "leaseTime: 150500ms"), 13, "spec.ipv4.dhcp.leaseTime",
     "must be a whole number of seconds"),
    (("leaseTime: 30m", "leaseTime: 1d"), 13, "spec.ipv4.dhcp.leaseTime", "is not a duration"),
    (("address: 192.168.150.1/24", "address: 192.168.150.0/24"), 10, "spec.ipv4.address",
     "is the network or broadcast address"),
    (("address: 192.168.150.1/24", "address: 192.168.150.1/31"), 10, "spec.ipv4.address",
     "/30 or shorter"),
    (("address: 192.168.150.1/24", "address: 192.168.150.1"), 10, "spec.ipv4.address",
     "is not an IPv4 address with its prefix length"),
    (("nat: true", "nat: yes please"), 14, "spec.ipv4.nat", "must be a boolean"),
    (("    nat: true", "    gateway: 192.168.150.254"), 14, "spec.ipv4.gateway",
     "unknown field 'gateway'"),
    (("address: fd00:150::1/64", "address: FD00:150::1/64"), 16, "spec.ipv6.address",
     "write it as fd00:150::1/64"),
    (("address: fd00:150::1/64", "address: fd00:150::1/48"), 16, "spec.ipv6.address",
     "the prefix must be /64"),
    (("address: fd00:150::1/64", "address: fe80::1/64"), 16, "spec.ipv6.address",
     "is not a usable host address"),
    (('"fd00:150::1ff"', '"fd00:151::1ff"'), 18, "spec.ipv6.dhcp.range[1]",
     "is outside the subnet fd00:150::/64"),
    (("leaseTime: 2h", "leaseTime: 119"), 19, "spec.ipv6.dhcp.leaseTime", "120 to 31536000"),
    (("domain: lan.test", 'domain: "lan.test; x"'), 21, "spec.dns.domain", "is not a DNS domain"),
    (("domain: lan.test", "domain: lan..test"), 21, "spec.dns.domain",
     "must be dot-separated labels"),
    (("  labels: {site: lab}", "  uuid: 4f7c1c38-0c1b-4d0e-9b55-3c2b8a7d9e10"), 5,
     "metadata.uuid", "unknown field 'uuid'"),
    (("name: lan", "name: ../lan"), 4, "metadata.name", "is not a network name"),
    (("kind: Network", "kind: Netwrok"), 2, "kind",
     "must be one of Domain, Network (got \"Netwrok\"); did you mean 'Network'?"),
]


@pytest.mark.parametrize(("edit", "line", "field", "words"), REFUSED,
                         ids=[f"{field}:{edit[1][:30]}" for edit, _, field, _ in REFUSED])
def test_a_refused_value_is_located(edit: tuple[str, str], line: int, field: str,
                                    words: str) -> None:
    assert edit[0] in NETWORK
    message = one_problem(NETWORK.replace(*edit))
    assert message.startswith(f"n.yaml:{line}:") and f": {field}: " in message, message
    assert words in message, message


def test_dns_needs_an_address_on_the_bridge() -> None:
    text = "apiVersion: domctl/v1\nkind: Network\nmetadata: {name: lan}\nspec:\n  dns: {}\n"
    assert one_problem(text).startswith("n.yaml:5:3: spec.dns: DNS is served on the bridge's")


def test_a_document_without_kind_names_the_kinds() -> None:
    message = one_problem(NETWORK.replace("kind: Network\n", ""))
    assert message == "n.yaml:1:1: kind: required field is missing; one of Domain, Network"


def test_the_schemas_share_their_rules() -> None:
    """The two schema files are each whole (for editors); what they share must not drift."""
    domain, net = schema.schema(schema.DOMAIN)["definitions"], \
        schema.schema(schema.NETWORK)["definitions"]
    assert net["duration"] == domain["duration"] and net["stringMap"] == domain["stringMap"]
    patterns = {domain["name"]["pattern"], domain["networkName"]["pattern"],
                net["name"]["pattern"]}
    assert patterns == {f"^{names._OBJECT_NAME.pattern}$"}


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(from_schema(schema.schema(schema.NETWORK)))
def test_every_network_schema_instance_loads_unless_a_cross_field_rule_refuses_it(
        document: dict[str, object]) -> None:
    refused = check(document)
    try:
        [loaded] = load_documents(dump(document), "m.yaml").networks
    except ManifestError as err:
        assert refused, [str(p) for p in err.problems]
        assert all(LOCATED.match(str(p)) for p in err.problems)
        return
    assert not refused
    assert loaded.name == document["metadata"]["name"]  # type: ignore[index]


# --- mixed files and conflicts -----------------------------------------------------------------

DOMAIN = """\
apiVersion: domctl/v1
kind: Domain
metadata:
  name: lan
spec:
  driver: qemu
  qemu:
    accel: tcg
    nics:
      - network: lan
"""


def test_a_file_mixes_kinds_and_a_domain_may_share_a_network_name(tmp_path: Path) -> None:
    text = NETWORK + "---\n" + DOMAIN
    declared = load_documents(text, "m.yaml")
    assert [n.name for n in declared.networks] == ["lan"]
    assert [d.name for d in declared.domains] == ["lan"]
    assert declared.domains[0].source.line == 23
    assert load_text(text, "m.yaml") == list(declared.domains)  # domains only, as before
    (tmp_path / "m.yaml").write_text(text)
    result = load_paths([tmp_path])
    assert result.problems == [] and len(result.networks) == len(result.domains) == 1


def test_an_invalid_network_refuses_its_whole_file() -> None:
    text = NETWORK.replace("mtu: 9000", "mtu: 1") + "---\n" + DOMAIN
    assert [p.split(": ")[1] for p in problems_of(text)] == ["spec.mtu"]


def test_two_networks_of_one_name_are_both_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NETWORK)
    (tmp_path / "b.yaml").write_text(NETWORK.replace("br-lan", "br-other"))
    result = load_paths([tmp_path])
    assert result.networks == []
    assert [(p.file, p.field) for p in result.problems] == [
        (str(tmp_path / "a.yaml"), "metadata.name"), (str(tmp_path / "b.yaml"), "metadata.name")]
    assert f"network 'lan' is also declared at {tmp_path / 'b.yaml'}:1" in \
        result.problems[0].message
    assert f"at {tmp_path / 'a.yaml'}:1" in result.problems[1].message


def test_two_networks_of_one_bridge_are_both_refused(tmp_path: Path) -> None:
    """`dc-wan` is the bridge `wan` derives, and the one `lan` asks for."""
    (tmp_path / "a.yaml").write_text(NETWORK.replace("br-lan", "dc-wan"))
    (tmp_path / "b.yaml").write_text(
        "apiVersion: domctl/v1\nkind: Network\nmetadata: {name: wan}\nspec: {}\n"
        "---\n" + NETWORK.replace("name: lan", "name: other").replace("br-lan", "br-other"))
    result = load_paths([tmp_path])
    assert [n.name for n in result.networks] == ["other"]
    [lan, wan] = result.problems
    assert (lan.file, lan.field) == (str(tmp_path / "a.yaml"), "spec.bridge")
    assert f"bridge 'dc-wan' is also the bridge of the network at {tmp_path / 'b.yaml'}:1" \
        in lan.message
    assert wan.file == str(tmp_path / "b.yaml") and f"{tmp_path / 'a.yaml'}:1" in wan.message


def test_networks_of_one_name_are_not_told_again_about_their_bridge(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NETWORK)
    (tmp_path / "b.yaml").write_text(NETWORK)
    assert [p.field for p in load_paths([tmp_path]).problems] == ["metadata.name"] * 2


def test_validate_reports_networks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.yaml").write_text(NETWORK + "---\n" + DOMAIN)
    text = invoke(capsys, ["validate", str(tmp_path)])
    assert text.exit_code == 0, text.output
    assert "1 file(s), 1 valid domain(s), 1 valid network(s), 0 problem(s)" in text.output
    as_json = invoke(capsys, ["validate", "-o", "json", str(tmp_path)])
    assert json.loads(as_json.output)["networks"] == ["lan"]


# --- NICs ---------------------------------------------------------------------------------------

def nics_of(driver: str, nics: str) -> str:
    section = "qemu: {accel: tcg," if driver == "qemu" else "lxc: {"
    return (f"apiVersion: domctl/v1\nkind: Domain\nmetadata: {{name: d}}\nspec:\n"
            f"  driver: {driver}\n  {section} nics: {nics}}}\n")


@pytest.mark.parametrize(("driver", "written", "nic"), [
    ("qemu", "{network: lan}", Nic(mode=NicMode.NETWORK, network="lan")),
    ("qemu", "{network: lan, ip: 192.168.150.20, mode: network}",
     Nic(mode=NicMode.NETWORK, network="lan", ip="192.168.150.20")),
    ("qemu", "{bridge: br0, model: e1000e, linkState: down}",
     Nic(mode=NicMode.BRIDGE, bridge="br0", model="e1000e", link_state=LinkState.DOWN)),
    ("qemu", "{}", Nic(mode=NicMode.USER)),
    ("qemu", "{mode: user, mac: '52:54:00:AB:CD:EF'}", Nic(mac="52:54:00:ab:cd:ef")),
    ("lxc", "{network: lan, ip: 192.168.150.20}",
     Nic(mode=NicMode.NETWORK, network="lan", ip="192.168.150.20")),
    ("lxc", "{bridge: br0, linkState: down}",
     Nic(mode=NicMode.BRIDGE, bridge="br0", link_state=LinkState.DOWN)),
])
def test_a_nic_is_normalised(driver: str, written: str, nic: Nic) -> None:
    [domain] = load_text(nics_of(driver, f"[{written}]"), "d.yaml")
    section = domain.spec.qemu if driver == "qemu" else domain.spec.lxc
    assert section is not None and section.nics == (nic,)


@pytest.mark.parametrize(("driver", "nics", "field", "words"), [
    ("qemu", "[{network: lan, bridge: br0}]", "spec.qemu.nics[0].bridge", "not both"),
    ("qemu", "[{mode: user, network: lan}]", "spec.qemu.nics[0].mode",
     "mode user does not fit network: write mode: network, or leave mode out"),
    ("qemu", "[{mode: network}]", "spec.qemu.nics[0].mode", "mode network needs network:"),
    ("qemu", "[{bridge: br0, ip: 10.0.0.2}]", "spec.qemu.nics[0].ip", "it needs network: NAME"),
    ("qemu", "[{network: lan, ip: 10.0.0.02}]", "spec.qemu.nics[0].ip", "Leading zeros"),
    ("qemu", "[{network: lan, ip: '10.0.0.2,x'}]", "spec.qemu.nics[0].ip",
     "is not an IPv4 address"),
    ("qemu", "[{network: lan, mac: '01:00:5e:00:00:01'}]", "spec.qemu.nics[0].mac",
     "is a multicast address"),
    ("qemu", "[{network: lan, mac: '52:54:00:00:00:01'}, {mac: '52:54:00:00:00:01'}]",
     "spec.qemu.nics[1].mac", "MAC '52:54:00:00:00:01' is already used by entry 0"),
    ("qemu", "[{network: lan, mac: '52:54:00:00:00:0a'}, {mac: '52:54:00:00:00:0A'}]",
     "spec.qemu.nics[1].mac", "is already used by entry 0"),
    ("qemu", "[{bridge: 'br0 up'}]", "spec.qemu.nics[0].bridge", "is not an interface name"),
    ("qemu", "[{bridge: '.'}]", "spec.qemu.nics[0].bridge", "is not an interface name"),
    ("qemu", "[{network: 'LAN'}]", "spec.qemu.nics[0].network", "is not a network name"),
    ("qemu", "[{network: lan, model: ne2k}]", "spec.qemu.nics[0].model", "must be one of"),
    ("lxc", "[{}]", "spec.lxc.nics[0]", "containers have no user-mode network"),
    ("lxc", "[{mode: user}]", "spec.lxc.nics[0]", "containers have no user-mode network"),
    ("lxc", "[{network: lan, model: e1000}]", "spec.lxc.nics[0].model",
     "model applies to qemu NICs only"),
])
def test_a_refused_nic_is_located(driver: str, nics: str, field: str, words: str) -> None:
    message = one_problem(nics_of(driver, nics))
    assert message.startswith("n.yaml:6:") and f": {field}: " in message, message
    assert words in message, message


def test_the_examples_put_a_vm_and_a_container_on_lan() -> None:
    examples = Path(__file__).resolve().parents[2] / "manifests" / "examples"
    result = load_paths([examples])
    assert result.problems == []
    [lan] = result.networks
    assert lan.spec.bridge == "dc-lan" and lan.spec.ipv4 is not None and lan.spec.ipv4.nat
    by_name = {d.name: d.spec for d in result.domains}
    vm, ct = by_name["lan-vm"].qemu, by_name["lan-ct"].lxc
    assert vm is not None and vm.nics == (Nic(mode=NicMode.NETWORK, network="lan"),)
    assert ct is not None and ct.nics == (Nic(mode=NicMode.NETWORK, network="lan",
                                              ip="192.168.150.20"),)
