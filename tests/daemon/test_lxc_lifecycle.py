"""libvirt's lifecycle for real containers under the real daemon: how an init's end is reported,
a start whose init is missing, a container frozen while the controller was away.

libvirt 9.0's LXC driver reports any init exit as shutoff/shutdown with stopped/shutdown;
domctl tells an init that failed (non-zero status) from one that exited 0
(docs/architecture.md, "Decisions that differ"). A start that fails is shutoff/failed.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from reconcilers.model import LxcSpec, RestartPolicy
from tests.support.domains import domain

from .conftest import SLEEPER, Controller, condition

pytestmark = pytest.mark.lxc


def pairs(controller: Controller, name: str, after: int = 0) -> list[tuple[str, str, str]]:
    return [(e["event"], e["detail"], e["cause"]) for e in controller.events(name)[after:]]


def test_an_init_that_exits_0_is_a_shutdown(controller: Controller) -> None:
    name = controller.name("exit0")
    init = LxcSpec(init=("/bin/sh", "-c", "sleep 1; exit 0"))
    controller.apply(domain(name, "lxc", lxc=init, restart_policy=RestartPolicy.ON_FAILURE))
    status = controller.wait_state(name, "shutoff", timeout=60)
    assert status["reason"] == "shutdown", status
    controller.wait_left_alone({name}, len(controller.log_lines()))
    assert pairs(controller, name)[1:] == [
        ("started", "booted", "manifest"), ("shutdown", "guest", "guest"),
        ("stopped", "shutdown", "guest")], controller.events(name)
    assert "status 0" in controller.events(name)[-1]["message"]


def test_an_init_that_fails_is_a_failure(controller: Controller) -> None:
    name = controller.name("exit3")
    init = LxcSpec(init=("/bin/sh", "-c", "sleep 1; exit 3"))
    controller.apply(domain(name, "lxc", lxc=init, restart_policy=RestartPolicy.NEVER))
    status = controller.wait_state(name, "shutoff", timeout=60)
    assert status["reason"] == "crashed", status
    controller.wait_left_alone({name}, len(controller.log_lines()))
    assert pairs(controller, name)[1:] == [
        ("started", "booted", "manifest"), ("stopped", "failed", "guest")]
    assert "status 3" in controller.events(name)[-1]["message"]
    # deliberately left off: no backoff is announced for a start that will not come
    assert condition(controller.status(name), "Stalled")["status"] == "False"


def test_a_missing_init_binary_is_a_failed_start(controller: Controller) -> None:
    name = controller.name("noinit")
    init = LxcSpec(init=("/nonexistent-init", "x"))
    controller.apply(domain(name, "lxc", lxc=init, restart_policy=RestartPolicy.NEVER))
    status = controller.wait_state(name, "shutoff", "failed", timeout=60)
    synced = condition(status, "Synced")
    assert 'Failed to exec "/nonexistent-init"' in synced["message"], status
    stopped = controller.wait_event(name, "stopped", "failed")
    assert (stopped["state"], stopped["reason"]) == ("shutoff", "failed"), stopped
    assert 'Failed to exec "/nonexistent-init"' in stopped["message"], stopped


def test_a_container_frozen_while_the_controller_was_away(controller: Controller) -> None:
    """The pause nobody reported is emitted at the re-attach (suspended/paused, cause
    external); resuming it is the controller's drift correction (cause controller)."""
    name = controller.name("frozen-away")
    controller.apply(domain(name, "lxc", lxc=SLEEPER))
    pid = controller.wait_state(name, "running", "booted", timeout=60)["pid"]
    before = len(controller.events(name))
    assert controller.kill(signal.SIGTERM) == 0
    subprocess.run(["lxc-freeze", "-P", str(controller.state / "lxc"), "-n", name],
                   check=True, timeout=30)
    controller.start()
    resumed = controller.wait_event(name, "resumed", "unpaused", after=before)
    assert resumed["cause"] == "controller", resumed
    assert pairs(controller, name, before) == [("suspended", "paused", "external"),
                                               ("resumed", "unpaused", "controller")]
    status = controller.wait_state(name, "running")
    assert status["pid"] == pid, status
