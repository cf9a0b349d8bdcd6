"""libvirt's lifecycle for real containers under the real daemon: how an init's end is reported,
a start whose init is missing, a container frozen while the controller was away.

libvirt 9.0's LXC driver reports any init exit as shutoff/shutdown with stopped/shutdown;
domctl tells an init that failed (non-zero status) from one that exited 0
(docs/architecture.md, "Decisions that differ"). A start that fails is shutoff/failed.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
from pathlib import Path

import pytest

from controller.manifests.loader import load_text
from reconcilers.model import DesiredState, LxcSpec, RestartPolicy
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


EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


@pytest.mark.parametrize("example, document", [("busybox-ct.yaml", 0), ("pair.yaml", 1)])
def test_the_example_containers_stop_gracefully(controller: Controller, example: str,
                                                document: int) -> None:
    sample = load_text((EXAMPLES / example).read_text(), example)[document]
    name = controller.name(sample.name)
    spec = dataclasses.replace(sample.spec, state=DesiredState.RUNNING, shutdown_timeout=60.0)
    example_domain = dataclasses.replace(
        sample, metadata=dataclasses.replace(sample.metadata, name=name, uuid=None), spec=spec)
    controller.apply(example_domain)
    controller.wait_state(name, "running", timeout=60)
    before = len(controller.events(name))
    controller.apply(dataclasses.replace(example_domain, spec=dataclasses.replace(
        spec, state=DesiredState.SHUTOFF)))
    status = controller.wait_state(name, "shutoff", timeout=30)  # well within its 60 s
    assert status["reason"] == "shutdown", status
    assert pairs(controller, name, before) == [("defined", "updated", "manifest"),
                                               ("shutdown", "finished", "manifest"),
                                               ("stopped", "shutdown", "manifest")]
    assert not controller.logged("container init ignores its halt signal", domain=name)


def test_an_init_deaf_to_the_halt_signal_is_named_at_start(controller: Controller) -> None:
    """`exec sleep infinity` as PID 1 has no handler for SIGPWR, so the kernel drops it: the
    start names the container in a warning (log and Ready), and a stop destroys it at once
    instead of waiting out its shutdownTimeout."""
    name = controller.name("deaf")
    controller.apply(domain(name, "lxc", lxc=SLEEPER, shutdown_timeout="60s"))
    controller.wait_state(name, "running", timeout=60)
    controller.wait_for(lambda: controller.logged("container init ignores its halt signal",
                                                  domain=name), "the warning", name)
    ready = controller.wait_status(
        name, "Ready naming the halt signal",
        lambda s: "no handler for its halt signal SIGPWR" in condition(s, "Ready")["message"])
    assert condition(ready, "Ready")["status"] == "True", ready
    before = len(controller.events(name))
    controller.apply(domain(name, "lxc", lxc=SLEEPER, shutdown_timeout="60s", state="shutoff"))
    status = controller.wait_state(name, "shutoff", timeout=20)  # not after 60 s
    assert status["reason"] == "destroyed", status
    assert pairs(controller, name, before) == [("defined", "updated", "manifest"),
                                               ("stopped", "destroyed", "manifest")]
