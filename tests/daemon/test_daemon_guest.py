"""The real daemon shutting off a real Linux guest gracefully (tests/support/guest.py).

The diskless guests of test_daemon_qemu.py ignore ACPI, so there a shutoff always ends with a
destroy; this guest powers off on the ACPI power button, so `state: shutoff` must end in a
clean guest shutdown, well within its shutdownTimeout, with no destroy.
"""

from __future__ import annotations

import pytest

from reconcilers.qemu.layout import domain_files
from tests.support.guest import GuestBuild, guest_domain, wait_ready

from .conftest import Controller, alive

pytestmark = [pytest.mark.qemu, pytest.mark.guest]


def test_shutoff_shuts_a_real_guest_down_gracefully(controller: Controller,
                                                    guest_build: GuestBuild) -> None:
    name = controller.name("guest")
    controller.apply(guest_domain(name, guest_build, shutdown_timeout="30s"))
    running = controller.wait_state(name, "running", "booted")
    pid = running["pid"]
    wait_ready(domain_files(controller.runtime, controller.logs, name).log)  # acpid listens
    before = len(controller.events(name))

    controller.apply(guest_domain(name, guest_build, shutdown_timeout="30s", state="shutoff"))
    status = controller.wait_state(name, "shutoff", timeout=60)  # a destroy comes after 30 s
    assert (status["reason"], status["desired"]) == ("shutdown", "shutoff"), status
    assert status["pid"] is None and status["id"] is None, status
    controller.wait_for(lambda: not alive(pid), f"qemu {pid} gone", name)
    stopped = controller.wait_event(name, "stopped", "shutdown", after=before)
    assert stopped["cause"] == "manifest", stopped
    assert ("stopped", "destroyed") not in [(e["event"], e["detail"])
                                            for e in controller.events(name)[before:]]
    actions = [a["action"] for a in controller.audit(name)]
    assert actions[-1] == "shutdown" and "destroy" not in actions, actions
