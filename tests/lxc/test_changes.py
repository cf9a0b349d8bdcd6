"""classify(old, new): cgroup limits and controller settings live, everything else restart."""

from __future__ import annotations

import dataclasses

from reconcilers.driver import ChangeKind
from reconcilers.lxc.changes import classify
from reconcilers.model import CpuTune, DesiredState, LxcSpec, Mount
from tests.support.domains import MiB, domain

BASE = domain("c", "lxc").spec


def test_nothing_changed() -> None:
    assert classify(BASE, BASE) == {}


def test_limits_are_live_the_rest_restart() -> None:
    assert BASE.lxc is not None
    new = dataclasses.replace(
        BASE, memory=128 * MiB, cputune=CpuTune(shares=10, quota=1000, period=10000),
        state=DesiredState.PAUSED, vcpus=4,
        lxc=LxcSpec(rootfs="/srv/r", init=("/bin/sh",), mounts=(Mount("/a", "/b"),)))
    assert classify(BASE, new) == {
        "memory": ChangeKind.LIVE, "cputune.shares": ChangeKind.LIVE,
        "cputune.quota": ChangeKind.LIVE, "cputune.period": ChangeKind.LIVE,
        "state": ChangeKind.LIVE, "vcpus": ChangeKind.RESTART,
        "lxc.rootfs": ChangeKind.RESTART, "lxc.init": ChangeKind.RESTART,
        "lxc.mounts": ChangeKind.RESTART,
    }
