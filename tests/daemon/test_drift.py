"""Drift that raises no event is corrected: converged domains are re-observed every resync."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.domains import domain

from .conftest import SLEEPER, Controller


@pytest.mark.lxc
def test_a_container_frozen_behind_the_controllers_back_is_thawed(
        controller: Controller) -> None:
    """Freezing a container through LXC's own tools emits nothing the controller hears; the
    periodic re-observation finds it paused and the drift correction resumes it."""
    name = controller.name("frozen")
    controller.apply(domain(name, "lxc", lxc=SLEEPER))
    controller.wait_state(name, "running", "booted", timeout=60)
    before = len(controller.events(name))
    subprocess.run(["lxc-freeze", "-P", str(controller.state / "lxc"), "-n", name],
                   check=True, timeout=30)
    resumed = controller.wait_event(name, "resumed", "unpaused", after=before, timeout=30)
    assert resumed["cause"] == "controller", resumed  # drift correction, nobody asked
    controller.wait_state(name, "running", timeout=30)
