"""`domctl destroy` interrupts a graceful shutdown in progress (libvirt's destroy job)."""

from __future__ import annotations

import pytest

from tests.support.domains import domain

from .conftest import Controller, alive


@pytest.mark.qemu
def test_destroy_cuts_a_graceful_shutdown_short(controller: Controller) -> None:
    name = controller.name("cut")
    controller.apply(domain(name, shutdown_timeout="300s"))
    pid = controller.wait_state(name, "running")["pid"]
    # the firmware ignores ACPI: this shutdown would wait the whole 300 s before destroying
    controller.apply(domain(name, state="shutoff", shutdown_timeout="300s"))
    controller.wait_status(name, "the graceful shutdown to begin",
                           lambda s: any(a["action"] == "shutdown" and a["domain"] == name
                                         for a in controller.audit(name)))
    result = controller.domctl("destroy", name)
    assert result.returncode == 0, result.stderr
    status = controller.wait_state(name, "shutoff", "destroyed")  # long before 300 s
    assert not alive(pid)
    stops = [e for e in controller.events(name) if e["event"] == "stopped"]
    assert [(e["detail"], e["cause"]) for e in stops] == [("destroyed", "api")]
    # the destroy asked for the state the manifest asks for: it overrides nothing
    overridden = [c for c in status["conditions"] if c["type"] == "Overridden"]
    assert [(c["status"], c["reason"]) for c in overridden] == [("False", "FollowsManifest")]
