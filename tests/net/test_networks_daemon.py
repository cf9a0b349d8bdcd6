"""Managed networks under the real daemon, run inside a network namespace of the test's own
(`ip netns exec`): a Network comes up (bridge, nftables, dnsmasq) and is repaired and removed;
a container on it waits for it, takes a DHCP lease, reaches the gateway, blocks the network's
removal and survives a controller restart with its lease and veth untouched; a VM's tap joins
the bridge with its MAC and the real guest's DHCP address reaches the VM's status."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.daemon.conftest import Controller, alive, condition, controller_on
from tests.net.conftest import sh
from tests.support.guest import GuestBuild

pytestmark = pytest.mark.net

NETWORK = """\
apiVersion: domctl/v1
kind: Network
metadata:
  name: {name}
spec:
  ipv4:
    address: 10.79.0.1/24
    dhcp:
      range: [10.79.0.100, 10.79.0.199]
      leaseTime: 10m
    nat: true
"""

# udhcpc's script configures the leased address, so the container can ping its gateway
CONTAINER_INIT = " ".join([
    "printf '#!/bin/sh\\n[ \"$1\" = bound ] && ip addr add $ip/$mask dev $interface\\n"
    "exit 0\\n' > /tmp/dhcp; chmod +x /tmp/dhcp;",
    "udhcpc -i eth0 -q -n -t 20 -T 1 -s /tmp/dhcp && ping -c 1 -W 2 10.79.0.1",
    "&& echo GATEWAY-REACHED; trap 'exit 0' PWR; sleep infinity & wait"])


def container(name: str, network: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "domctl/v1", "kind": "Domain", "metadata": {"name": name},
        "spec": {"driver": "lxc", "memory": "64Mi", "shutdownTimeout": "2s",
                 "lxc": {"init": ["/bin/sh", "-c", CONTAINER_INIT],
                         "nics": [{"network": network, "ip": "10.79.0.20"}]}}})


def guest_vm(name: str, network: str, build: GuestBuild) -> str:
    return f"""\
apiVersion: domctl/v1
kind: Domain
metadata:
  name: {name}
spec:
  driver: qemu
  memory: 128Mi
  shutdownTimeout: 2s
  qemu:
    machine: pc
    accel: tcg
    kernel: {build.kernel}
    initrd: {build.initrd}
    cmdline: "console=ttyS0 panic=0 guest.mode=idle guest.net=dhcp"
    serial: log
    nics:
      - network: {network}
"""


@pytest.fixture
def ctl(netns: str, tmp_path: Path) -> Iterator[Controller]:
    with controller_on(tmp_path, netns=netns) as controller:
        yield controller


def _link(netns: str, name: str) -> dict[str, Any] | None:
    import json
    done = sh("ip", "-n", netns, "-json", "link", "show", "dev", name, check=False)
    if done.returncode != 0:
        return None
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found[0]


def _active(ctl: Controller, name: str) -> dict[str, Any]:
    return ctl.wait_for(lambda: (s if (s := ctl.network_status(name)) is not None
                                 and s["state"] == "active" else None),
                        f"network {name} active")


def _event(ctl: Controller, name: str, event: str, detail: str,
           after: int = 0) -> dict[str, Any]:
    return ctl.wait_for(lambda: next((e for e in ctl.network_events(name)[after:]
                                      if (e["event"], e["detail"]) == (event, detail)), None),
                        f"network event {event}/{detail}")


def test_a_network_comes_up_is_repaired_and_goes_away(ctl: Controller, netns: str) -> None:
    ctl.write_manifest("lan.yaml", NETWORK.format(name="lan"))
    status = _active(ctl, "lan")
    bridge = status["bridge"]
    assert bridge == "dc-lan" and status["ipv4"] == "10.79.0.1/24" and status["nat"] is True
    link = _link(netns, bridge)
    assert link is not None and "UP" in link["flags"]
    assert "domctl_lan" in sh("ip", "netns", "exec", netns, "nft", "list", "tables").stdout
    pid = status["dnsmasqPid"]
    assert alive(pid)
    _event(ctl, "lan", "started", "created")

    shown = ctl.domctl("get", "networks")
    assert shown.returncode == 0 and "lan" in shown.stdout and "active" in shown.stdout, shown

    # dnsmasq killed by hand: seen at once (its exit), restarted; the bridge left alone
    index = link["ifindex"]
    before = len(ctl.network_events("lan"))
    os.kill(pid, signal.SIGKILL)
    _event(ctl, "lan", "stopped", "broken", before)
    _event(ctl, "lan", "started", "repaired", before)
    again = _active(ctl, "lan")
    ctl.wait_for(lambda: (s := ctl.network_status("lan")) is not None
                 and s["dnsmasqPid"] not in (None, pid), "a new dnsmasq")
    assert (_link(netns, bridge) or {}).get("ifindex") == index, again

    # the bridge deleted by hand: recreated at the next check (resync)
    sh("ip", "-n", netns, "link", "del", bridge)
    ctl.wait_for(lambda: _link(netns, bridge), "the bridge recreated")

    # an invalid edit keeps the network on its last valid spec, also across a restart
    ctl.write_manifest("lan.yaml", NETWORK.format(name="lan").replace("10.79.0.1/24",
                                                                     "10.79.0.1/33"))
    invalid = ctl.wait_for(lambda: (s if (s := ctl.network_status("lan")) is not None and
                                    condition(s, "ManifestValid").get("status") == "False"
                                    else None), "ManifestValid=False")
    assert "lan.yaml:" in condition(invalid, "ManifestValid")["message"], invalid
    ctl.restart()
    ctl.wait_for(lambda: ctl.logged("first full pass done; ready"), "the first passes")
    assert (ctl.network_status("lan") or {}).get("state") == "active"
    assert _link(netns, bridge) is not None

    ctl.remove_manifest("lan.yaml")
    _event(ctl, "lan", "undefined", "removed")
    assert ctl.network_status("lan") is None
    assert _link(netns, bridge) is None
    assert "domctl_lan" not in sh("ip", "netns", "exec", netns, "nft", "list", "tables").stdout


@pytest.mark.lxc
def test_a_container_waits_for_its_network_takes_its_reserved_lease_and_holds_removal(
        ctl: Controller, netns: str) -> None:
    ct = ctl.name("ct")
    ctl.write_manifest(f"{ct}.yaml", container(ct, "lan"))
    waiting = ctl.wait_status(ct, "waiting for network lan",
                              lambda s: "waiting for network 'lan'" in str(s["conditions"]))
    assert waiting["state"] == "shutoff", waiting

    ctl.write_manifest("lan.yaml", NETWORK.format(name="lan"))
    running = ctl.wait_state(ct, "running")  # no edit of the container's manifest
    log = ctl.logs / f"{ct}.log"
    ctl.wait_for(lambda: "GATEWAY-REACHED" in log.read_text(errors="replace")
                 if log.exists() else False, "the container to ping its gateway", ct)
    shown = ctl.wait_status(ct, "its address in the status", lambda s: any(
        "10.79.0.20" in a for nic in s.get("interfaces", []) for a in nic["addresses"]))
    [nic] = shown["interfaces"]
    assert nic["network"] == "lan" and nic["mac"].startswith("00:16:3e:"), nic
    veth = _link(netns, nic["name"])
    assert veth is not None and veth.get("master") == "dc-lan", veth
    lease = next(lease for lease in ctl.network_status("lan")["leases"]  # type: ignore[index]
                 if lease["mac"] == nic["mac"])
    assert lease["address"] == "10.79.0.20" and lease["domain"] == ct, lease
    wide = ctl.domctl("get", "-o", "wide")
    assert "10.79.0.20" in wide.stdout, wide

    # removing the network while the container runs is refused, and says why
    ctl.remove_manifest("lan.yaml")
    blocked = ctl.wait_for(lambda: (s if (s := ctl.network_status("lan")) is not None and
                                    condition(s, "RemovalBlocked").get("status") == "True"
                                    else None), "RemovalBlocked")
    assert ct in condition(blocked, "RemovalBlocked")["message"]
    assert _link(netns, "dc-lan") is not None

    # a controller restart leaves dnsmasq, the veth and the container alone
    dnsmasq = blocked["dnsmasqPid"]
    ctl.restart()
    ctl.wait_for(lambda: ctl.logged("first full pass done; ready"), "the first passes")
    assert (_link(netns, nic["name"]) or {}).get("ifindex") == veth["ifindex"]
    assert ctl.status(ct)["pid"] == running["pid"]  # type: ignore[index]
    assert (ctl.network_status("lan") or {}).get("dnsmasqPid") == dnsmasq and alive(dnsmasq)

    # once the container is gone, the removal goes on
    ctl.remove_manifest(f"{ct}.yaml")
    _event(ctl, "lan", "undefined", "removed")
    assert _link(netns, "dc-lan") is None and not alive(dnsmasq)


@pytest.mark.qemu
@pytest.mark.guest
def test_a_vm_on_a_network_shows_the_address_its_guest_leased(
        ctl: Controller, netns: str, guest_build: GuestBuild) -> None:
    vm = ctl.name("vm")
    ctl.write_manifest("lan.yaml", NETWORK.format(name="lan"))
    ctl.write_manifest(f"{vm}.yaml", guest_vm(vm, "lan", guest_build))
    shown = ctl.wait_status(vm, "the guest's leased address in the status", lambda s: any(
        a.startswith("10.79.0.") for nic in s.get("interfaces", []) for a in nic["addresses"]),
        timeout=120)
    [nic] = shown["interfaces"]
    tap = _link(netns, nic["name"])
    assert tap is not None and tap.get("master") == "dc-lan", tap
    log = ctl.logs / f"{vm}.log"
    ctl.wait_for(lambda: f"GUEST-IP eth0 {nic['mac']} 10.79.0." in log.read_text(
        errors="replace"), "the guest to report its lease on its console", vm)
    described = ctl.domctl("describe", vm)
    assert "Interfaces:" in described.stdout and nic["mac"] in described.stdout
