"""libvirt's lifecycle with the real test guest (tests/support/guest.py) under the real daemon:
a guest panic under onCrash destroy and restart, a guest restarted in place, a kill -9 and a
SIGTERM to qemu from outside.

libvirt 9.0 (../shared/notes/libvirt-semantics.md): a panic with on_crash=destroy is
crashed/panicked, then stopped/crashed, shutoff/crashed, and counts as a failure for the restart
policy; on_crash applies to guest panics only (a kill -9 is shutoff/crashed, stopped/failed and
a failure); a SIGTERM to qemu is shutdown/host, then stopped/shutdown, shutoff/shutdown.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

import pytest

from reconcilers.model import Domain, Lifecycle, LifecycleAction, RestartPolicy
from tests.support.guest import GuestBuild, guest_domain

from .conftest import Controller, alive

pytestmark = [pytest.mark.qemu, pytest.mark.guest]


def guest(name: str, build: GuestBuild, mode: str = "idle", **fields: Any) -> Domain:
    """The real guest in `mode` (its README: idle, poweroff, reboot, panic after 1 s), with a
    pvpanic device."""
    domain = guest_domain(name, build, cmdline=f"console=ttyS0 panic=0 guest.mode={mode} "
                                               "guest.delay=1", **fields)
    assert domain.spec.qemu is not None
    qemu = dataclasses.replace(domain.spec.qemu, panic=True)
    return dataclasses.replace(domain, spec=dataclasses.replace(domain.spec, qemu=qemu))


def pairs(controller: Controller, name: str, after: int = 0) -> list[tuple[str, str, str]]:
    return [(e["event"], e["detail"], e["cause"]) for e in controller.events(name)[after:]]


def plans(controller: Controller, name: str) -> list[tuple[str, str]]:
    return [(line["action"], line.get("why", "")) for line in controller.log_lines()
            if line.get("event") == "plan" and line.get("domain") == name]


def test_a_panic_with_on_crash_destroy_under_never_stays_off(controller: Controller,
                                                              guest_build: GuestBuild) -> None:
    """The driver's own quit and the pass's destroy both act on the panic: whichever ends
    it, the stop is the guest's crash, and restartPolicy Never keeps it off."""
    name = controller.name("panic")
    controller.apply(guest(name, guest_build, "panic", restart_policy=RestartPolicy.NEVER,
                           lifecycle=Lifecycle(on_crash=LifecycleAction.DESTROY)))
    status = controller.wait_state(name, "shutoff", timeout=120)
    assert status["reason"] == "crashed", status
    controller.wait_left_alone({name}, len(controller.log_lines()))
    assert pairs(controller, name)[1:] == [
        ("started", "booted", "manifest"), ("crashed", "panicked", "guest"),
        ("stopped", "crashed", "guest")], controller.events(name)
    stopped = controller.events(name)[-1]
    assert (stopped["state"], stopped["reason"]) == ("shutoff", "crashed"), stopped
    assert controller.status(name)["restarts"] == 0  # type: ignore[index]


@pytest.mark.parametrize("mode, lifecycle, event", [
    ("panic", Lifecycle(on_crash=LifecycleAction.RESTART), ("crashed", "panicked")),
    ("poweroff", Lifecycle(on_poweroff=LifecycleAction.RESTART), ("shutdown", "guest")),
])
def test_an_in_place_restart_keeps_the_guest_running(controller: Controller,
                                                     guest_build: GuestBuild, mode: str,
                                                     lifecycle: Lifecycle,
                                                     event: tuple[str, str]) -> None:
    """onCrash/onPoweroff restart reset the guest in its process (even under restartPolicy
    Never): no stop, no destroy, and the status never shows it left for the operator."""
    name = controller.name(f"inplace-{mode}")
    controller.apply(guest(name, guest_build, mode, restart_policy=RestartPolicy.NEVER,
                           lifecycle=lifecycle))
    pid = controller.wait_state(name, "running", "booted", timeout=60)["pid"]
    controller.wait_for(lambda: pairs(controller, name).count((*event, "guest")) >= 2,
                        f"two {event} restarted in place", name, timeout=120)
    status = controller.wait_state(name, "running", "booted")
    assert status["pid"] == pid and alive(pid), status
    events = pairs(controller, name)
    assert ("started", "booted", "guest") in events, events
    assert not [e for e in events if e[0] == "stopped"], events
    acted = [(action, why) for action, why in plans(controller, name)
             if action != "nothing" or "operator" in why]
    assert acted == [("start", acted[0][1])], acted  # the first start only
    controller.apply(guest(name, guest_build, restart_policy=RestartPolicy.NEVER,
                           lifecycle=lifecycle, state="shutoff", shutdown_timeout="1s"))
    controller.wait_state(name, "shutoff", timeout=60)


def test_a_kill_9_is_a_failure_not_an_on_crash(controller: Controller,
                                               guest_build: GuestBuild) -> None:
    """onCrash restart does not apply to a kill -9 (libvirt: guest panics only): under
    restartPolicy Never it stays off, shutoff/crashed with stopped/failed."""
    name = controller.name("kill9")
    controller.apply(guest(name, guest_build, restart_policy=RestartPolicy.NEVER,
                           lifecycle=Lifecycle(on_crash=LifecycleAction.RESTART)))
    pid = controller.wait_state(name, "running", "booted", timeout=60)["pid"]
    before = len(controller.events(name))
    os.kill(pid, signal.SIGKILL)
    status = controller.wait_state(name, "shutoff", "crashed")
    controller.wait_left_alone({name}, len(controller.log_lines()))
    assert pairs(controller, name, before) == [("stopped", "failed", "external")]
    assert status["restarts"] == 0, status


def test_a_sigterm_from_outside_is_a_host_shutdown(controller: Controller,
                                                   guest_build: GuestBuild) -> None:
    """libvirt: shutdown/host, stopped/shutdown, shutoff/shutdown. No failure, so
    restartPolicy OnFailure leaves it off."""
    name = controller.name("sigterm")
    controller.apply(guest(name, guest_build, restart_policy=RestartPolicy.ON_FAILURE))
    pid = controller.wait_state(name, "running", "booted", timeout=60)["pid"]
    before = len(controller.events(name))
    os.kill(pid, signal.SIGTERM)
    controller.wait_state(name, "shutoff", "shutdown")
    controller.wait_left_alone({name}, len(controller.log_lines()))
    assert pairs(controller, name, before) == [("shutdown", "host", "external"),
                                               ("stopped", "shutdown", "external")]
