"""A running domain whose manifest is invalid when the controller (re)starts keeps running on
its last valid spec (the README's promise), instead of being taken as removed."""

from __future__ import annotations

import pytest

from tests.support.domains import domain

from .conftest import Controller, alive, is_condition


@pytest.mark.qemu
def test_an_invalid_manifest_at_restart_keeps_the_domain_running(
        controller: Controller) -> None:
    name = controller.name("keep")
    path = controller.apply(domain(name))
    running = controller.wait_state(name, "running", "booted")
    assert controller.stop() == 0
    path.write_text(path.read_text().replace("memory:", "memroy:"))  # invalid from now on
    controller.start()
    after = len(controller.log_lines())
    invalid = controller.wait_status(
        name, "ManifestValid=False naming the typo",
        lambda s: is_condition(s, "ManifestValid", "False") and "memroy" in str(s))
    controller.wait_left_alone({name}, after)  # past the 1 s removal grace, and two rescans
    status = controller.status(name)
    assert status is not None and status["pid"] == running["pid"] and alive(running["pid"])
    assert status["state"] == "running", status
    assert "running on the last valid spec" in str(invalid)
