"""NICs without qemu: the argv of tap NICs (golden files), which NIC changes are live and how
`domctl diff` names them, and what the guest agent's interface list becomes.

Golden inputs are built here, resolved as the engine resolves them (reconcilers/net/nics.py):
the manifest loader does not know `network:`/`bridge:` NICs yet. Regenerate after an intended
change with `DOMCTL_REGEN_GOLDEN=1 pytest tests/qemu/test_nics.py` and review the diff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest

from reconcilers.diff import Apply, classify_changes, live_after_apply
from reconcilers.driver import AgentState, ChangeKind
from reconcilers.model import Accel, Domain, DomainSpec, LinkState, Nic, NicMode, QemuSpec
from reconcilers.net.nics import resolve
from reconcilers.qemu.agent import AgentError, guest_interfaces, parse_interfaces
from reconcilers.qemu.argv import build_argv
from reconcilers.qemu.changes import classify
from reconcilers.qemu.layout import domain_files
from tests.support.domains import domain

GOLDEN = Path(__file__).parent.parent / "golden" / "qemu" / "nics"
USER = Nic(mac="52:54:00:12:34:56")
ON_LAN = Nic(mode=NicMode.NETWORK, network="lan", model="e1000")
ON_BR0 = Nic(mode=NicMode.BRIDGE, bridge="br0", mac="52:54:00:aa:00:01",
             link_state=LinkState.DOWN)


def with_nics(*nics: Nic, machine: str = "pc") -> Domain:
    vm = domain("nics", qemu=QemuSpec(machine=machine, accel=Accel.TCG, nics=nics))
    assert vm.metadata.uuid is not None
    return resolve(vm, vm.metadata.uuid, {"lan": "dc-lan"})


@pytest.mark.parametrize("vhost", [False, True], ids=["taps", "taps-vhost"])
def test_golden_argv_of_tap_nics(vhost: bool) -> None:
    vm = with_nics(USER, ON_LAN, ON_BR0)
    files = domain_files(Path("/run/domctl"), Path("/var/log/domctl"), vm.name)
    argv = build_argv(vm, "qemu-system-x86_64", Accel.TCG, files, vhost=vhost)
    golden = GOLDEN / f"{'taps-vhost' if vhost else 'taps'}.argv"
    if os.environ.get("DOMCTL_REGEN_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text("\n".join(argv) + "\n")
    assert argv == golden.read_text().splitlines()


def spec(*nics: Nic, machine: str = "pc") -> DomainSpec:
    return with_nics(*nics, machine=machine).spec


def test_link_state_is_live_any_other_change_of_a_kept_nic_waits_for_a_restart() -> None:
    old = spec(USER, ON_LAN)
    new = spec(dataclasses.replace(USER, link_state=LinkState.DOWN),
               dataclasses.replace(ON_LAN, model="virtio-net-pci", network="dmz"))
    assert classify(old, new) == {"qemu.nics[0].link_state": ChangeKind.LIVE,
                                  "qemu.nics[1].bridge": ChangeKind.RESTART,
                                  "qemu.nics[1].model": ChangeKind.RESTART,
                                  "qemu.nics[1].network": ChangeKind.RESTART}
    shown = {c.path: c.apply for c in classify_changes(old, new, classify(old, new))}
    assert shown == {"qemu.nics[0].link_state": Apply.LIVE, "qemu.nics[1].model": Apply.RESTART,
                     "qemu.nics[1].network": Apply.RESTART, "qemu.nics[1].bridge": Apply.RESTART}
    after = live_after_apply(old, new, classify_changes(old, new, classify(old, new)))
    assert after.qemu is not None and new.qemu is not None and old.qemu is not None
    assert after.qemu.nics == (new.qemu.nics[0], old.qemu.nics[1])  # the model change waits


@pytest.mark.parametrize(("old", "new", "kind"), [
    ((USER,), (USER, ON_LAN), ChangeKind.LIVE),  # added at the end
    ((USER, ON_LAN, ON_BR0), (USER,), ChangeKind.LIVE),  # removed from the end
    ((USER,), (dataclasses.replace(USER, link_state=LinkState.DOWN), ON_BR0),
     ChangeKind.LIVE),  # and a kept NIC's link state
    ((USER, ON_LAN), (ON_LAN,), ChangeKind.RESTART),  # removed from the front: indexes move
    ((USER,), (dataclasses.replace(USER, model="e1000"), ON_LAN), ChangeKind.RESTART),
])
def test_nics_added_or_removed_at_the_end_are_hotplugged(old: tuple[Nic, ...],
                                                         new: tuple[Nic, ...],
                                                         kind: ChangeKind) -> None:
    assert classify(spec(*old), spec(*new)) == {"qemu.nics": kind}
    changes = classify_changes(spec(*old), spec(*new), classify(spec(*old), spec(*new)))
    assert [(c.path, c.apply.value) for c in changes] == [("qemu.nics", kind.value)]


def test_no_hotplug_on_q35() -> None:
    assert classify(spec(USER, machine="q35"), spec(USER, ON_LAN, machine="q35")) == {
        "qemu.nics": ChangeKind.RESTART}


REPLY = [
    {"name": "lo", "hardware-address": "00:00:00:00:00:00",
     "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]},
    {"name": "eth0", "hardware-address": "52:54:00:AA:00:01",
     "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "192.168.122.50", "prefix": 24},
                      {"ip-address-type": "ipv6", "ip-address": "fe80::5054:ff:feaa:1",
                       "prefix": 64},
                      {"ip-address-type": "ipv4", "ip-address": "1.2.3.4\nforged", "prefix": 8},
                      {"ip-address-type": "ipv4", "ip-address": "10.0.0.1"}],
     "statistics": {"rx-bytes": 1}},
    {"name": "eth0.5", "hardware-address": "52:54:00:aa:00:01",  # a VLAN on the same MAC
     "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.5.0.2", "prefix": 16}]},
    {"name": "dummy", "hardware-address": "not a mac\n"},
    {"name": "eth1", "hardware-address": "52:54:00:aa:00:02"},  # no addresses yet
    "garbage",
]


def test_guest_network_get_interfaces_is_keyed_by_mac_and_untrusted_text_is_dropped() -> None:
    assert parse_interfaces(REPLY) == {
        "52:54:00:aa:00:01": ("192.168.122.50/24", "fe80::5054:ff:feaa:1/64", "10.5.0.2/16"),
        "52:54:00:aa:00:02": ()}
    with pytest.raises(AgentError):
        parse_interfaces({"return": []})


async def test_an_answering_agent_is_connected_and_a_stale_reply_is_skipped(
        tmp_path: Path) -> None:
    """A scripted agent on the channel's socket: an earlier session's sync reply still queued
    before this one's, then the interfaces."""
    async def agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sync = json.loads((await reader.readline()).lstrip(b"\xff"))
        token = sync["arguments"]["id"]
        writer.write(b'\xff{"return": %d}\n\xff{"return": %d}\n' % (token + 1, token))
        assert json.loads(await reader.readline())["execute"] == "guest-network-get-interfaces"
        writer.write(json.dumps({"return": REPLY}).encode() + b"\n")
        await writer.drain()
        writer.close()

    socket = tmp_path / "qga"
    server = await asyncio.start_unix_server(agent, path=str(socket))
    async with server:
        seen = await guest_interfaces(socket)
    assert seen.agent is AgentState.CONNECTED and seen.addresses == parse_interfaces(REPLY)
    gone = await guest_interfaces(tmp_path / "missing")
    assert gone.agent is AgentState.NOT_RESPONDING and "guest agent:" in gone.agent_message
