"""reconcilers/qemu/hotplug.py's deletion of a released disk's block node: qemu may still hold
the node for a moment after the guest released the device (seen in CI: "Node libvirt-2-format
is in use"), so "in use" is tried again until NODE_RELEASE_TIMEOUT; any other error is not."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from reconcilers.qemu import hotplug
from reconcilers.qemu.monitor import MonitorError


class Qmp:
    """blockdev-del answering from a script of outcomes (an error message, or None: done)."""

    def __init__(self, *outcomes: str | None) -> None:
        self.outcomes = list(outcomes)
        self.tries = 0

    async def blockdev_del(self, node: str) -> None:
        self.tries += 1
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise MonitorError("blockdev-del", outcome)


def running(qmp: Qmp) -> Any:
    return SimpleNamespace(qmp=qmp)


async def test_a_node_still_in_use_is_deleted_once_qemu_lets_go() -> None:
    qmp = Qmp("Node libvirt-2-format is in use", "Node libvirt-2-format is in use", None)
    await hotplug._delete_node(running(qmp), "libvirt-2-format")
    assert qmp.tries == 3


async def test_a_node_already_gone_is_no_error_and_another_error_is_raised_at_once() -> None:
    await hotplug._delete_node(running(Qmp("Failed to find node with node-name='x'")), "x")
    broken = Qmp("Permission denied")
    with pytest.raises(MonitorError, match="Permission denied"):
        await hotplug._delete_node(running(broken), "x")
    assert broken.tries == 1


async def test_a_node_held_past_the_bound_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hotplug, "NODE_RELEASE_TIMEOUT", 0.2)
    held = Qmp(*["Node x is in use"] * 100)
    with pytest.raises(MonitorError, match="in use"):
        await hotplug._delete_node(running(held), "x")
    assert 2 <= held.tries < 100
