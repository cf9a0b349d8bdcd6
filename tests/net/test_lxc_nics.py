"""Containers' NICs with real parts: a busybox container on a bridge with a dnsmasq, inside a
network namespace of the test's own (the test's thread is moved into it, so lxc-start, ip and
LXC's monitor all run there).

The container's init asks for a lease with busybox udhcpc (a lease script of the test's own
is mounted in: the rootfs has none), then pings the bridge. The NICs are resolved the way the
engine resolves them (reconcilers/net/nics.py), so the MACs are the derived ones and dnsmasq's
reservation is the one the network reconciler would write."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from reconcilers.driver import ChangeKind
from reconcilers.errors import HostValidationError
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.tools import LxcTools
from reconcilers.model import Domain, LinkState, LxcSpec, Mount, Nic, NicMode
from reconcilers.net import bridge, dnsmasq, nics
from reconcilers.net.bridge import BridgeSpec
from reconcilers.net.command import Place
from reconcilers.net.dnsmasq import DnsmasqConfig, Files, Reservation
from reconcilers.net.names import veth_name
from reconcilers.net.veth import parse_addresses
from tests.net.conftest import sh
from tests.support.domains import domain
from tests.support.lxc import LxcHost
from tests.support.waiting import async_wait_until

NETWORK, BRIDGE = "testnet", "dc-testnet"
GW = IPv4Interface("10.77.0.1/24")
RANGE = (IPv4Address("10.77.0.100"), IPv4Address("10.77.0.150"))
RESERVED, HOTPLUGGED = "10.77.0.5", "10.77.0.6"
REACHED = f"nic-test: reached {GW.ip}"
LEASE_SCRIPT = """\
#!/bin/sh
case "$1" in
  deconfig) /bin/ip -4 address flush dev "$interface" ;;
  bound|renew) /bin/ip address add "$ip/$mask" dev "$interface" && echo "lease $interface $ip" ;;
esac
exit 0
"""
UDHCPC = ("/bin/udhcpc", "-f", "-q", "-n", "-t", "10", "-T", "1", "-s", "/udhcpc.sh", "-i")
ON_NETWORK = Nic(NicMode.NETWORK, network=NETWORK)


CLONE_FS, CLONE_NEWNS = 0x00000200, 0x00020000
MS_BIND, MS_MOVE, MS_REC, MS_SLAVE = 0x1000, 0x2000, 0x4000, 0x80000


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


@contextlib.contextmanager
def sysfs_of_the_netns(scratch: Path) -> Iterator[None]:
    """The calling thread (and what it starts) in a mount namespace of its own whose /sys shows
    the thread's network namespace, as `ip netns exec` arranges: LXC looks a veth's bridge up
    in /sys/class/net, and the host's /sys lists the host's interfaces. The cgroup mounts are
    moved onto the new /sys (LXC sets the container's limits there). Nothing reaches the host's
    mounts: everything is made a slave first. `scratch`: an empty directory for the move."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(libc.unshare(CLONE_NEWNS), "unshare")
        try:
            _check(libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "make / rslave")
            _check(libc.mount(b"/sys/fs/cgroup", bytes(scratch), None, MS_BIND | MS_REC, None),
                   "bind the cgroups aside")
            _check(libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None), "mount sysfs")
            _check(libc.mount(bytes(scratch), b"/sys/fs/cgroup", None, MS_MOVE, None),
                   "move the cgroups back")
            yield
        finally:
            # threads started meanwhile (asyncio's executor) share this thread's filesystem
            # attributes, and setns refuses a mount namespace to a thread that shares them
            _check(libc.unshare(CLONE_FS), "unshare fs")
            _check(libc.setns(own, CLONE_NEWNS), "setns back")
    finally:
        os.close(own)


@pytest.fixture(scope="module")
def nic_host() -> Iterator[LxcHost]:
    with LxcHost.in_scratch("lxc-nics") as host:  # where unprivileged containers run
        yield host


@dataclass
class Lan:
    """The namespace's managed-looking network (bridge, dnsmasq) and a driver running there."""

    netns: str
    place: Place
    host: LxcHost
    driver: LxcDriver
    script: Path
    files: Files

    def container(self, prefix: str, *declared: Nic, init: tuple[str, ...] = ()) -> Domain:
        """A busybox container with `declared` NICs, resolved as the engine would; its init
        runs `init` (the lease script is mounted at /udhcpc.sh), then sleeps."""
        script = " ".join(init) or "true"
        lxc = LxcSpec(init=("/bin/sh", "-c", f"{script}; while :; do sleep 1; done"),
                      mounts=(Mount(str(self.script), "/udhcpc.sh", readonly=True),),
                      nics=declared)
        return self.resolve(domain(self.host.name(prefix), "lxc", lxc=lxc))

    @staticmethod
    def resolve(container: Domain) -> Domain:
        assert container.metadata.uuid is not None
        return nics.resolve(container, container.metadata.uuid, {NETWORK: BRIDGE})

    async def serve(self, *containers: Domain) -> None:
        """dnsmasq on the bridge, with the reservations of the containers' NICs."""
        reserved = tuple(Reservation(mac, IPv4Address(ip))
                         for _, mac, ip in nics.reservations(containers, NETWORK))
        await dnsmasq.start(self.place, DnsmasqConfig(
            network=NETWORK, interface=BRIDGE, address=GW, dhcp_range=RANGE, files=self.files,
            lease_seconds=600, reservations=reserved))

    def on_bridge(self) -> set[str]:
        out = sh("ip", "-n", self.netns, "-json", "link", "show", "master", BRIDGE).stdout
        return {entry["ifname"] for entry in json.loads(out or "[]")}

    def console(self, name: str) -> str:
        path = self.host.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
async def lan(in_netns: str, place: Place, tmp_path: Path, nic_host: LxcHost
              ) -> AsyncIterator[Lan]:
    """Set up after `in_netns`, so torn down before it: the containers are swept from inside
    the namespace (lxc-stop reaches LXC's monitor through an abstract socket of that
    namespace)."""
    (tmp_path / "cgroup").mkdir()
    with sysfs_of_the_netns(tmp_path / "cgroup"):
        await bridge.ensure(place, BridgeSpec(NETWORK, BRIDGE, GW))
        script = nic_host.state_dir.parent / "udhcpc.sh"  # mounted: reachable unprivileged
        script.write_text(LEASE_SCRIPT)
        script.chmod(0o755)
        first = len(nic_host.names)
        driver = LxcDriver(nic_host.context(lambda event: None))
        files = Files.in_dir(tmp_path / "net", NETWORK)
        try:
            yield Lan(in_netns, place, nic_host, driver, script, files)
        finally:
            await driver.close()
            nic_host.sweep(nic_host.names[first:])
            await dnsmasq.stop(files)


def guest_link(pid: int, ifname: str) -> dict[str, Any] | None:
    """`ip -json link show dev IFNAME` inside the namespace of `pid`; None if there is none."""
    done = sh("nsenter", f"--target={pid}", "--net", "ip", "-json", "link", "show", "dev",
              ifname, check=False)
    if done.returncode != 0:
        return None
    entry: dict[str, Any] = json.loads(done.stdout)[0]
    return entry


def has_carrier(pid: int, ifname: str) -> bool:
    link = guest_link(pid, ifname)
    assert link is not None, f"{ifname} missing in the container"
    return "NO-CARRIER" not in link["flags"]


@pytest.mark.net
@pytest.mark.lxc
async def test_a_container_gets_its_reserved_lease_and_reaches_the_bridge(lan: Lan) -> None:
    container = lan.container(
        "dhcp", replace(ON_NETWORK, ip=RESERVED),
        Nic(NicMode.BRIDGE, bridge=BRIDGE, link_state=LinkState.DOWN),
        init=(*UDHCPC, "eth0", "&&", "ping", "-c", "1", "-W", "5", str(GW.ip), "&&", "echo",
              REACHED))
    assert container.spec.lxc is not None
    mac, down_mac = (nic.mac for nic in container.spec.lxc.nics)
    assert mac is not None and down_mac is not None
    await lan.serve(container)
    name = container.name
    live = await lan.driver.start(container, paused=False, token="test")
    assert live.pid is not None

    # a line of its own: the domain log's first line quotes the init command, marker included
    await async_wait_until(lambda: REACHED in lan.console(name).splitlines(),
                           "the lease and the ping",
                           timeout=20, explain=lambda: lan.console(name))
    # dnsmasq writes its lease file just after the ACK, so maybe after the ping
    await async_wait_until(lambda: f" {mac} {RESERVED} " in lan.files.leases.read_text(),
                           "the reserved lease in dnsmasq's lease file", timeout=5)
    assert (await lan.driver.interfaces(name)).addresses == {mac: (f"{RESERVED}/24",),
                                                             down_mac: ()}
    veths = {veth_name(name, 0), veth_name(name, 1)}
    assert lan.on_bridge() >= veths
    # linkState down: the container's eth1 is up but has no carrier (the host end is down,
    # set so by the start-host hook before init ran); switched live, both ways
    assert not has_carrier(live.pid, "eth1")
    running = container.spec
    assert running.lxc is not None
    for state, carrier in ((LinkState.UP, True), (LinkState.DOWN, False)):
        changed = replace(running, lxc=replace(running.lxc, nics=(
            running.lxc.nics[0], replace(running.lxc.nics[1], link_state=state))))
        assert lan.driver.classify(running, changed) == {
            "lxc.nics[1].link_state": ChangeKind.LIVE}
        await lan.driver.apply_live(name, running, changed)
        assert has_carrier(live.pid, "eth1") is carrier
        running = changed

    await lan.driver.destroy(name)
    await async_wait_until(lambda: not lan.on_bridge() & veths, "the veths gone", timeout=5)
    assert (await lan.driver.interfaces(name)).addresses == {}


@pytest.mark.net
@pytest.mark.lxc
async def test_nics_added_and_removed_at_the_end_of_a_running_container(lan: Lan,
                                                                        nic_host: LxcHost
                                                                        ) -> None:
    container = lan.container("hotplug", ON_NETWORK)
    assert container.spec.lxc is not None
    grown = lan.resolve(replace(container, spec=replace(container.spec, lxc=replace(
        container.spec.lxc, nics=(*container.spec.lxc.nics, replace(ON_NETWORK, ip=HOTPLUGGED))))))
    old, new = container.spec, grown.spec
    assert new.lxc is not None
    added_mac = new.lxc.nics[1].mac
    assert added_mac is not None
    # reserved, because a dynamic lease takes dnsmasq ~3 s (udhcpc sends 4 discovers)
    await lan.serve(grown)
    name = container.name
    live = await lan.driver.start(container, paused=False, token="test")
    assert live.pid is not None

    assert lan.driver.classify(old, new) == {"lxc.nics": ChangeKind.LIVE}
    await lan.driver.apply_live(name, old, new)
    assert veth_name(name, 1) in lan.on_bridge()
    link = guest_link(live.pid, "eth1")
    assert link is not None and link["address"] == added_mac and has_carrier(live.pid, "eth1")
    # the new NIC works: its lease, then seen in the container's addresses
    attached = await LxcTools(nic_host.lxcpath).attach(name, [*UDHCPC, "eth1"], timeout=20)
    assert f"lease eth1 {HOTPLUGGED}" in attached.stdout
    assert (await lan.driver.interfaces(name)).addresses[added_mac] == (f"{HOTPLUGGED}/24",)

    await lan.driver.apply_live(name, new, old)  # removed again: the pair is gone
    assert veth_name(name, 1) not in lan.on_bridge()
    assert guest_link(live.pid, "eth1") is None
    assert veth_name(name, 0) in lan.on_bridge()


@pytest.mark.net
@pytest.mark.lxc
async def test_the_host_check_names_the_nic_that_cannot_be_made(lan: Lan) -> None:
    sh("ip", "-n", lan.netns, "link", "add", "not-a-bridge", "type", "veth", "peer", "name",
       "its-peer")
    cases = {
        "spec.lxc.nics[0].bridge": Nic(NicMode.BRIDGE, bridge="no-such-br"),
        "spec.lxc.nics[0].network": Nic(NicMode.NETWORK, network="down"),  # not up: no bridge
    }
    for field, nic in cases.items():
        with pytest.raises(HostValidationError) as refused:
            await lan.driver.validate(lan.container("refused", nic))
        assert refused.value.field == field
    assert isinstance(refused.value, nics.NetworkNotReady)
    with pytest.raises(HostValidationError, match="is a veth, not a Linux bridge") as refused:
        await lan.driver.validate(lan.container("refused", Nic(NicMode.BRIDGE,
                                                               bridge="not-a-bridge")))
    assert refused.value.field == "spec.lxc.nics[0].bridge"
    await lan.driver.validate(lan.container("accepted", ON_NETWORK))


def test_addresses_by_mac_without_lo_and_link_local() -> None:
    shown = [
        {"ifname": "lo", "link_type": "loopback", "address": "00:00:00:00:00:00",
         "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8,
                        "scope": "host"}]},
        {"ifname": "eth0", "link_type": "ether", "address": "00:16:3E:00:00:01",
         "addr_info": [{"family": "inet", "local": "10.0.0.5", "prefixlen": 24,
                        "scope": "global"},
                       {"family": "inet6", "local": "fd00::5", "prefixlen": 64,
                        "scope": "global"},
                       {"family": "inet6", "local": "fe80::216:3eff:fe00:1", "prefixlen": 64,
                        "scope": "link"}]},
        {"ifname": "eth1", "link_type": "ether", "address": "00:16:3e:00:00:02"},
    ]
    assert parse_addresses(shown) == {"00:16:3e:00:00:01": ("10.0.0.5/24", "fd00::5/64"),
                                      "00:16:3e:00:00:02": ()}
