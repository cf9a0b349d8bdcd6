"""The real daemon driving an LXC busybox container (issue D point 9, scenario 11)."""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.domains import domain

from .conftest import SLEEPER, Controller, alive, is_condition, proc_cmdline

pytestmark = pytest.mark.lxc


def test_container_runs_and_is_restarted_after_its_init_is_killed(
        controller: Controller) -> None:
    name = controller.name("ct")
    controller.apply(domain(name, "lxc", lxc=SLEEPER))
    running = controller.wait_state(name, "running", "booted", timeout=60)
    assert running["driver"] == "lxc"
    assert is_condition(running, "Ready", "True")
    pid = running["pid"]
    assert alive(pid), running
    assert "sleep" in " ".join(proc_cmdline(pid)), proc_cmdline(pid)  # the container's init
    events = controller.events(name)
    assert [(e["event"], e["detail"], e["cause"]) for e in events[:2]] == [
        ("defined", "added", "manifest"), ("started", "booted", "manifest")], events

    before = len(events)
    os.kill(pid, signal.SIGKILL)
    controller.wait_restarted(name, pid, before)
