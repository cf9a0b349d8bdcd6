"""nics.py: a domain's NICs resolved against the networks that are up (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from reconcilers.model import DriverName, LxcSpec, Nic, NicMode
from reconcilers.net.nics import (
    NetworkNotReady,
    check_ready,
    derive_mac,
    networks_used,
    nics_of,
    reservations,
    resolve,
)
from tests.support.domains import TCG_PC, domain

UUID = "0b5e0c1e-6a47-4b8e-9a0c-2f1f1f1f1f1f"
NICS = (Nic(), Nic(mode=NicMode.NETWORK, network="lan", ip="10.0.0.5"),
        Nic(mode=NicMode.BRIDGE, bridge="br0", mac="52:54:00:00:00:aa"))


def test_a_mac_is_stable_distinct_per_index_and_domain_and_unicast() -> None:
    mac = derive_mac(DriverName.QEMU, UUID, 1)
    assert mac == derive_mac(DriverName.QEMU, UUID, 1) and mac.startswith("52:54:00:")
    assert mac != derive_mac(DriverName.QEMU, UUID, 2)
    assert mac != derive_mac(DriverName.QEMU, UUID.replace("0b", "0c"), 1)
    assert derive_mac(DriverName.LXC, UUID, 0).startswith("00:16:3e:")
    assert int(mac.split(":")[0], 16) & 1 == 0


def test_resolution_fills_bridge_and_mac_keeps_user_nics_and_the_generation() -> None:
    vm = domain("web", qemu=dataclasses.replace(TCG_PC, nics=NICS), uuid=UUID)
    resolved = resolve(vm, UUID, {"lan": "dc-lan"})
    user, lan, br0 = nics_of(resolved)
    assert user == Nic()
    assert lan.bridge == "dc-lan" and lan.mac == derive_mac(DriverName.QEMU, UUID, 1)
    assert br0.bridge == "br0" and br0.mac == "52:54:00:00:00:aa"
    assert resolved.generation == vm.generation
    check_ready(resolved)
    assert networks_used(resolved) == {"lan"}
    assert reservations([resolved], "lan") == [("web", lan.mac, "10.0.0.5")]
    assert reservations([resolved], "other") == []


def test_a_network_that_is_not_up_holds_the_start_naming_the_field() -> None:
    ct = domain("ct", DriverName.LXC, uuid=UUID,
                lxc=LxcSpec(nics=(Nic(mode=NicMode.NETWORK, network="lan"),)))
    waiting = resolve(ct, UUID, {})
    with pytest.raises(NetworkNotReady) as raised:
        check_ready(waiting)
    assert raised.value.field == "spec.lxc.nics[0].network" and "'lan'" in str(raised.value)


def test_a_domain_without_tap_nics_is_returned_as_it_is() -> None:
    vm = domain("plain")
    assert resolve(vm, UUID, {"lan": "dc-lan"}) is vm
