"""updatePolicy through the daemon: Live marks restart-only changes pending, Restart restarts."""

from __future__ import annotations

import pytest

from reconcilers.model import UpdatePolicy
from tests.support.domains import domain

from .conftest import Controller, condition, proc_cmdline


def smp(pid: int) -> str:
    argv = proc_cmdline(pid)
    return argv[argv.index("-smp") + 1]


@pytest.mark.qemu
def test_update_policy_restart_restarts_for_a_restart_only_change(controller: Controller) -> None:
    name = controller.name("upd")
    controller.apply(domain(name, update_policy=UpdatePolicy.RESTART))
    first = controller.wait_state(name, "running")
    assert smp(first["pid"]).startswith("1")
    controller.apply(domain(name, update_policy=UpdatePolicy.RESTART, vcpus=2))
    after = controller.wait_status(name, "restarted with the new spec",
                                   lambda s: s["state"] == "running" and s["pid"] != first["pid"]
                                   and s["observedGeneration"] == s["generation"], timeout=60)
    assert smp(after["pid"]).startswith("2")
    assert after["restarts"] == 1 and after["pending"] == []
    assert condition(after, "PendingRestart").get("status") == "False"
    steps = [(e["event"], e["detail"], e["cause"]) for e in controller.events(name)
             if e["event"] in ("stopped", "started")]
    assert steps == [("started", "booted", "manifest"), ("stopped", "destroyed", "manifest"),
                     ("started", "booted", "controller")], steps


@pytest.mark.qemu
def test_update_policy_live_leaves_restart_only_changes_pending(controller: Controller) -> None:
    name = controller.name("updlive")
    controller.apply(domain(name))
    first = controller.wait_state(name, "running")
    controller.apply(domain(name, vcpus=2))
    status = controller.wait_status(
        name, "PendingRestart", lambda s: condition(s, "PendingRestart").get("status") == "True")
    assert status["pid"] == first["pid"] and [p["field"] for p in status["pending"]] == ["vcpus"]
    controller.apply(domain(name))  # the revert clears it
    status = controller.wait_status(
        name, "no PendingRestart",
        lambda s: condition(s, "PendingRestart").get("status") == "False")
    assert status["pid"] == first["pid"] and status["pending"] == []
