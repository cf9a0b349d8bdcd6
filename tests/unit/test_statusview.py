"""The status projection's Ready condition keeps a driver's warning (kvm under nested PVM)."""

from __future__ import annotations

from controller.engine.statusview import Facts, build_status
from reconcilers.driver import Live
from reconcilers.model import DriverName, Reason, State
from reconcilers.qemu.capabilities import PVM_WARNING
from tests.support.domains import domain


def ready(message: str) -> dict[str, str]:
    """The Ready condition of a running domain whose driver says `message`."""
    vm = domain("vm")
    status = build_status(Facts(name="vm", uuid="u", driver=DriverName.QEMU, desired=vm,
                                entry=None, live=Live(State.RUNNING, Reason.BOOTED, pid=1,
                                                      message=message)))
    return next({"status": c.status.value, "message": c.message} for c in status.conditions
                if c.type.value == "Ready")


def test_ready_carries_a_drivers_warning() -> None:
    condition = ready(f"accel kvm; {PVM_WARNING}")
    assert condition["status"] == "True"
    assert condition["message"] == f"running (booted); {PVM_WARNING}"
    assert "guest kernels may not boot" in condition["message"]
    assert ready("accel tcg (kvm unusable: ...)")["message"] == "running (booted)"
