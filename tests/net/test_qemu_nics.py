"""qemu NICs on taps, for real: the driver runs inside a namespace of the test's own (`in_netns`:
ip, qemu and dnsmasq start there), on a bridge made there by reconcilers/net/bridge.py.

A boot-sector VM (no OS) is enough for the tap, its MAC on qemu's side, stops of every kind,
reuse of our leftover and refusal of a foreign device, set_link and a hotplug; the one real
guest test (slow: a Linux boot under tcg) proves a DHCP lease from dnsmasq across the bridge
and an unplug the guest acknowledges.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from reconcilers.driver import AgentState, ChangeKind
from reconcilers.errors import DriverError, HostValidationError
from reconcilers.model import Accel, Domain, LinkState, Nic, NicMode, QemuSpec, Reason, State
from reconcilers.net import bridge, dnsmasq, tap
from reconcilers.net.bridge import BridgeSpec
from reconcilers.net.command import Place
from reconcilers.net.dnsmasq import DnsmasqConfig, Files
from reconcilers.net.names import tap_name
from reconcilers.net.nics import NetworkNotReady, resolve
from reconcilers.qemu import nics
from reconcilers.qemu.driver import QemuDriver
from tests.net.conftest import sh
from tests.support.domains import domain
from tests.support.guest import IDLE_CMDLINE, GuestBuild, async_wait_ready, guest_domain
from tests.support.qemu import LOOP_CODE, QemuEnv, boot_sector, qemu_env

pytestmark = [pytest.mark.net, pytest.mark.qemu]

BR = "br-lan"
GW = IPv4Interface("192.168.77.1/24")
MTU = 1400


@pytest.fixture
async def env(in_netns: str, tmp_path: Path) -> AsyncIterator[QemuEnv]:
    """Drivers whose every command runs inside the test's namespace, swept afterwards."""
    async with qemu_env(tmp_path) as running:
        yield running


@pytest.fixture
async def lan(in_netns: str) -> str:
    await bridge.ensure(Place(), BridgeSpec("lan", BR, GW, MTU))
    return BR


@pytest.fixture
def loop_image(tmp_path: Path) -> Path:
    return boot_sector(tmp_path / "loop.img", LOOP_CODE)


def resolved(vm: Domain) -> Domain:
    """As the engine hands it over: MACs derived, network `lan` on its bridge."""
    assert vm.metadata.uuid is not None
    return resolve(vm, vm.metadata.uuid, {"lan": BR})


def vm(name: str, image: Path, *nic_list: Nic, agent: bool = False) -> Domain:
    qemu = QemuSpec(machine="pc", accel=Accel.TCG, nics=nic_list, guest_agent=agent)
    return resolved(domain(name, image=image, qemu=qemu))


def ports(bridge_name: str = BR) -> dict[str, int]:
    """The bridge's ports and their MTUs, as `ip` shows them."""
    shown = json.loads(sh("ip", "-json", "link", "show", "master", bridge_name).stdout or "[]")
    return {entry["ifname"]: entry["mtu"] for entry in shown}


async def qemu_mac(driver: QemuDriver, name: str, device: str) -> str:
    reply = await driver._tracked[name].monitor.execute(
        "qom-get", {"path": f"/machine/peripheral/{device}", "property": "mac"})
    return str(reply)


def mac_of(vm: Domain, index: int) -> str:
    assert vm.spec.qemu is not None
    mac = vm.spec.qemu.nics[index].mac
    assert mac is not None
    return mac


async def test_a_tap_is_on_its_bridge_for_the_guest_mac_and_gone_after_any_stop(
        env: QemuEnv, lan: str, loop_image: Path) -> None:
    driver = env.driver()
    guest = vm("t-tap", loop_image, Nic(mode=NicMode.NETWORK, network="lan"))
    tap0 = tap_name("t-tap", 0)
    live = await driver.start(guest, paused=False, token="test")
    assert ports() == {tap0: MTU}
    assert await qemu_mac(driver, "t-tap", "net0") == mac_of(guest, 0)
    vhost = (await driver.capabilities()).details["vhost_net"]
    assert ("vhost=on" in env.context.log_dir.joinpath("t-tap.log").read_text()) is vhost
    await driver.destroy("t-tap")
    assert ports() == {} and await tap.owned(Place(), "t-tap") == []

    # a leftover of ours (a crash before the stop was seen): marked, off the bridge, down
    sh("ip", "tuntap", "add", "dev", tap0, "mode", "tap")
    sh("ip", "link", "set", "dev", tap0, "alias", tap.mark("t-tap", 0))
    live = await driver.start(guest, paused=False, token="test")
    assert ports() == {tap0: MTU}
    await driver.close()  # a controller restart leaves the tap alone
    second = env.driver()
    assert live.record is not None and await second.reattach(live.record) is not None
    assert ports() == {tap0: MTU}

    assert live.pid is not None
    os.kill(live.pid, signal.SIGKILL)  # seen by the exit watch: released with the process
    await env.wait_event(lambda e: (e.state, e.reason) == (State.SHUTOFF, Reason.CRASHED))
    assert ports() == {}


async def test_a_tap_hotplugged_into_a_vm_started_without_one_goes_with_its_stop(
        env: QemuEnv, lan: str, loop_image: Path) -> None:
    driver = env.driver()
    bare = vm("t-late", loop_image)  # no tap: its stop looks for none, unless one is added
    await driver.start(bare, paused=False, token="test")
    more = vm("t-late", loop_image, Nic(mode=NicMode.NETWORK, network="lan"))
    await driver.apply_live("t-late", bare.spec, more.spec)
    assert ports() == {tap_name("t-late", 0): MTU}
    await driver.destroy("t-late")
    assert ports() == {}


async def test_a_foreign_device_or_a_missing_bridge_refuses_the_start(
        env: QemuEnv, lan: str, loop_image: Path) -> None:
    driver = env.driver()
    guest = vm("t-foreign", loop_image, Nic(mode=NicMode.BRIDGE, bridge=BR))
    tap0 = tap_name("t-foreign", 0)
    sh("ip", "tuntap", "add", "dev", tap0, "mode", "tap")  # someone else's, unmarked
    with pytest.raises(DriverError, match="refusing to touch it"):
        await driver.start(guest, paused=False, token="test")
    assert sh("ip", "link", "show", "dev", tap0, check=False).returncode == 0  # left alone
    assert (await driver.observe("t-foreign")).state is State.SHUTOFF

    with pytest.raises(HostValidationError) as refused:
        await driver.validate(vm("t-nobr", loop_image, Nic(mode=NicMode.BRIDGE, bridge="br-x")))
    assert refused.value.field == "spec.qemu.nics[0].bridge"
    assert "does not exist" in refused.value.message
    with pytest.raises(NetworkNotReady) as waiting:
        await driver.validate(vm("t-nonet", loop_image, Nic(mode=NicMode.NETWORK, network="x")))
    assert waiting.value.field == "spec.qemu.nics[0].network"


async def test_link_state_hotplug_and_a_silent_agent_on_a_running_vm(
        env: QemuEnv, lan: str, loop_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = env.driver()
    down = Nic(mode=NicMode.BRIDGE, bridge=BR, link_state=LinkState.DOWN)
    guest = vm("t-hot", loop_image, down, agent=True)
    await driver.start(guest, paused=False, token="test")  # set_link down before `cont`
    up = vm("t-hot", loop_image, dataclasses.replace(down, link_state=LinkState.UP), agent=True)
    assert driver.classify(guest.spec, up.spec) == {"qemu.nics[0].link_state": ChangeKind.LIVE}
    await driver.apply_live("t-hot", guest.spec, up.spec)
    assert (await driver.observe("t-hot")).state is State.RUNNING

    more = vm("t-hot", loop_image, *(up.spec.qemu.nics if up.spec.qemu else ()),
              Nic(mode=NicMode.NETWORK, network="lan", link_state=LinkState.DOWN), agent=True)
    assert driver.classify(up.spec, more.spec) == {"qemu.nics": ChangeKind.LIVE}
    await driver.apply_live("t-hot", up.spec, more.spec)
    qmp = driver._tracked["t-hot"].qmp
    assert {"net0", "net1"} <= await qmp.peripherals()
    assert await qemu_mac(driver, "t-hot", "net1") == mac_of(more, 1)
    assert ports() == {tap_name("t-hot", 0): MTU, tap_name("t-hot", 1): MTU}
    await driver.apply_live("t-hot", up.spec, more.spec)  # a retry finds it done

    seen = await driver.interfaces("t-hot")  # a channel, no agent behind it
    assert seen.agent is AgentState.NOT_RESPONDING and "did not answer" in seen.agent_message

    # no OS acknowledges the unplug: the wait is bounded, the NIC and its tap stay
    monkeypatch.setattr(nics, "UNPLUG_TIMEOUT", 0.3)
    with pytest.raises(DriverError, match="did not release NIC 1"):
        await driver.apply_live("t-hot", more.spec, up.spec)
    assert tap_name("t-hot", 1) in ports()
    await driver.destroy("t-hot")
    assert ports() == {}  # the hotplugged NIC's tap too


GUEST_IP = re.compile(r"GUEST-IP eth0 (\S+) (\S+)/24 gw 192\.168\.77\.1")


@pytest.mark.guest
async def test_a_real_guest_gets_a_lease_across_the_bridge_and_acknowledges_an_unplug(
        env: QemuEnv, lan: str, tmp_path: Path, guest_build: GuestBuild) -> None:
    config = DnsmasqConfig(network="lan", interface=BR, address=GW,
                           dhcp_range=(IPv4Address("192.168.77.100"),
                                       IPv4Address("192.168.77.150")),
                           files=Files.in_dir(tmp_path / "dnsmasq", "lan"))
    await dnsmasq.start(Place(), config)
    driver = env.driver()
    try:
        plain = guest_domain("t-dhcp", guest_build, cmdline=f"{IDLE_CMDLINE} guest.net=dhcp")
        assert plain.spec.qemu is not None
        nic = Nic(mode=NicMode.NETWORK, network="lan")
        guest = resolved(dataclasses.replace(plain, spec=dataclasses.replace(
            plain.spec, qemu=dataclasses.replace(plain.spec.qemu, nics=(nic,)))))
        await driver.start(guest, paused=False, token="test")
        log = env.context.log_dir / "t-dhcp.log"
        await async_wait_ready(log)
        leases = [GUEST_IP.search(line) for line in log.read_text(errors="replace").splitlines()]
        (lease,) = [m for m in leases if m]
        assert lease[1] == mac_of(guest, 0)
        assert IPv4Address("192.168.77.100") <= IPv4Address(lease[2]) <= IPv4Address(
            "192.168.77.150")

        assert guest.spec.qemu is not None
        more = dataclasses.replace(guest.spec, qemu=dataclasses.replace(
            guest.spec.qemu, nics=(*guest.spec.qemu.nics, Nic(mode=NicMode.BRIDGE, bridge=BR,
                                                              mac="52:54:00:77:00:02"))))
        await driver.apply_live("t-dhcp", guest.spec, more)
        qmp = driver._tracked["t-dhcp"].qmp
        assert "net1" in await qmp.peripherals()
        await driver.apply_live("t-dhcp", more, guest.spec)  # the guest ejects it (ACPI)
        assert "net1" not in await qmp.peripherals()
        assert ports() == {tap_name("t-dhcp", 0): MTU}
        await driver.destroy("t-dhcp")
        assert ports() == {}
    finally:
        await dnsmasq.stop(config.files)
