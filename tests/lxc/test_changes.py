"""classify(old, new): cgroup limits (vcpus and the pids limit among them), controller
settings, the delete policy, NIC link states and NICs added or removed at the end live,
everything else restart."""

from __future__ import annotations

import dataclasses

import pytest

from reconcilers.diff import Apply, classify_changes
from reconcilers.driver import ChangeKind
from reconcilers.lxc.changes import NicChanges, classify, nic_changes
from reconcilers.model import (
    CpuTune,
    DeletePolicy,
    DesiredState,
    DomainSpec,
    LinkState,
    LxcSpec,
    Mount,
    Nic,
    NicMode,
)
from tests.support.domains import MiB, domain

BASE = domain("c", "lxc").spec


def test_nothing_changed() -> None:
    assert classify(BASE, BASE) == {}


def test_limits_are_live_the_rest_restart() -> None:
    assert BASE.lxc is not None
    new = dataclasses.replace(
        BASE, memory=128 * MiB, cputune=CpuTune(shares=10, quota=1000, period=10000),
        state=DesiredState.PAUSED, vcpus=4,
        lxc=LxcSpec(rootfs="/srv/r", init=("/bin/sh",), mounts=(Mount("/a", "/b"),),
                    pids_limit=100, privileged=True, image="/srv/img.tar.xz",
                    delete_policy=DeletePolicy.DELETE))
    assert classify(BASE, new) == {
        "memory": ChangeKind.LIVE, "cputune.shares": ChangeKind.LIVE,
        "cputune.quota": ChangeKind.LIVE, "cputune.period": ChangeKind.LIVE,
        "state": ChangeKind.LIVE, "vcpus": ChangeKind.LIVE, "lxc.pids_limit": ChangeKind.LIVE,
        "lxc.delete_policy": ChangeKind.LIVE, "lxc.privileged": ChangeKind.RESTART,
        "lxc.image": ChangeKind.RESTART, "lxc.rootfs": ChangeKind.RESTART,
        "lxc.init": ChangeKind.RESTART, "lxc.mounts": ChangeKind.RESTART,
    }


LAN = Nic(NicMode.NETWORK, network="lan", bridge="dc-lan", mac="00:16:3e:00:00:01")
HOST = Nic(NicMode.BRIDGE, bridge="br0", mac="00:16:3e:00:00:02")
DOWN = LinkState.DOWN


def with_nics(*nics: Nic) -> DomainSpec:
    return dataclasses.replace(BASE, lxc=LxcSpec(nics=nics))


@pytest.mark.parametrize("old, new, expected", [
    # the link state of a kept NIC: live; anything else about it waits for a restart
    ((LAN, HOST), (LAN, dataclasses.replace(HOST, link_state=DOWN)),
     {"lxc.nics[1].link_state": ChangeKind.LIVE}),
    ((LAN,), (dataclasses.replace(LAN, bridge="dc-other", link_state=DOWN),),
     {"lxc.nics[0].bridge": ChangeKind.RESTART, "lxc.nics[0].link_state": ChangeKind.LIVE}),
    ((LAN,), (dataclasses.replace(LAN, mac="00:16:3e:00:00:09", ip="10.0.0.9"),),
     {"lxc.nics[0].mac": ChangeKind.RESTART, "lxc.nics[0].ip": ChangeKind.RESTART}),
    # added or removed at the end: live, with the link state of the NICs before them
    ((LAN,), (LAN, HOST), {"lxc.nics": ChangeKind.LIVE}),
    ((), (LAN, HOST), {"lxc.nics": ChangeKind.LIVE}),
    ((LAN, HOST), (dataclasses.replace(LAN, link_state=DOWN),), {"lxc.nics": ChangeKind.LIVE}),
    # inserted or removed before another NIC (its ethN would change), or with another change
    ((HOST,), (LAN, HOST), {"lxc.nics": ChangeKind.RESTART}),
    ((LAN, HOST), (HOST,), {"lxc.nics": ChangeKind.RESTART}),
    ((LAN,), (dataclasses.replace(LAN, mac="00:16:3e:00:00:09"), HOST),
     {"lxc.nics": ChangeKind.RESTART}),
])
def test_nics(old: tuple[Nic, ...], new: tuple[Nic, ...],
              expected: dict[str, ChangeKind]) -> None:
    assert classify(with_nics(*old), with_nics(*new)) == expected


def test_nic_changes_say_what_apply_live_does() -> None:
    assert nic_changes((LAN, HOST), (dataclasses.replace(LAN, link_state=DOWN),)) == NicChanges(
        links=((0, dataclasses.replace(LAN, link_state=DOWN)),), removed=(1,))
    assert nic_changes((), (LAN, HOST)) == NicChanges(added=((0, LAN), (1, HOST)))
    assert nic_changes((LAN, HOST, HOST), (LAN,)).removed == (2, 1)
    assert nic_changes((HOST,), (LAN, HOST)) == NicChanges(restart=("lxc.nics",))


def test_a_diff_takes_the_kinds_of_classify() -> None:
    """What `domctl diff` and apply_live's bookkeeping see: a link state and an added NIC are
    live, a NIC's new bridge is pending until the restart."""
    old = with_nics(LAN)
    new = with_nics(dataclasses.replace(LAN, bridge="dc-x", link_state=DOWN))
    kinds = {c.path: c.apply for c in classify_changes(old, new, classify(old, new))}
    assert kinds == {"lxc.nics[0].bridge": Apply.RESTART, "lxc.nics[0].link_state": Apply.LIVE}
    grown = with_nics(LAN, HOST)
    assert [(c.path, c.apply) for c in classify_changes(old, grown, classify(old, grown))] == [
        ("lxc.nics", Apply.LIVE)]
