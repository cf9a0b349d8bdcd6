"""Managed save, restore and host shutdown under the real daemon, with real qemu (issue 15).

libvirt 9.0's vocabulary (../shared/notes/libvirt-semantics.md, issue 15): a save of a running
guest is suspended/paused then stopped/saved, shutoff/saved; a restore started/restored then
resumed/from_snapshot, running/restored; an image saved paused comes back with
started/restored, suspended/restored. The real guest with `guest.ticks=1` (its README) tells a
restored guest from a rebooted one: a restored guest goes on with the next GUEST-TICK and
prints no second GUEST-READY. Where no guest has to run (a discarded image, a forced boot, a
host shutdown), the diskless tcg VM of tests/support/domains.py is saved: its firmware idles.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from reconcilers.model import CpuTopology, Domain, StopMode
from tests.support.domains import domain
from tests.support.guest import GuestBuild, guest_domain

from .conftest import SLEEPER, Controller, condition, controller_on

pytestmark = pytest.mark.qemu

TICKS = "console=ttyS0 panic=0 guest.mode=idle guest.ticks=1"
TICK = re.compile(r"^GUEST-TICK (\d+) ")
SAVE = StopMode.SAVE


def ticking(name: str, build: GuestBuild, **fields: Any) -> Domain:
    """The real guest printing a tick every second, saved when shut off."""
    return guest_domain(name, build, cmdline=TICKS, **{"stop_mode": SAVE, **fields})


def log_lines(controller: Controller, name: str) -> list[str]:
    try:
        return (controller.logs / f"{name}.log").read_bytes().decode(errors="replace") \
            .splitlines()
    except FileNotFoundError:
        return []


def last_tick(controller: Controller, name: str) -> int:
    return max((int(m.group(1)) for line in log_lines(controller, name)
                if (m := TICK.match(line.strip()))), default=0)


def readies(controller: Controller, name: str) -> int:
    return sum(line.strip() == "GUEST-READY" for line in log_lines(controller, name))


def pairs(controller: Controller, name: str, after: int) -> list[tuple[str, str, str]]:
    return [(e["event"], e["detail"], e["cause"]) for e in controller.events(name)[after:]]


def saved(controller: Controller, name: str, reason: str = "saved") -> dict[str, Any]:
    status = controller.wait_state(name, "shutoff", reason, timeout=120)
    assert status["saved"] is not None and status["saved"]["size"] > 0, status
    return status


@pytest.mark.guest
def test_a_saved_guest_comes_back_with_its_memory(controller: Controller,
                                                  guest_build: GuestBuild) -> None:
    """stopMode save, then running again: the ticks go on, no second boot; saved paused
    (after a `domctl suspend`, by `domctl save`), it comes back paused, then resumes."""
    name = controller.name("saved-guest")
    controller.apply(ticking(name, guest_build))
    controller.wait_state(name, "running", "booted", timeout=120)
    controller.wait_for(lambda: last_tick(controller, name) >= 2, "GUEST-TICK 2", name, 120)
    before = len(controller.events(name))
    controller.apply(ticking(name, guest_build, state="shutoff"))
    saved(controller, name)
    assert pairs(controller, name, before)[-2:] == [("suspended", "paused", "manifest"),
                                                    ("stopped", "saved", "manifest")]
    listed = controller.domctl("get", name)
    assert listed.returncode == 0 and "saved image" in listed.stdout, listed
    ticked = last_tick(controller, name)
    before = len(controller.events(name))
    controller.apply(ticking(name, guest_build))
    controller.wait_state(name, "running", "restored", timeout=120)
    assert pairs(controller, name, before)[-2:] == [("started", "restored", "manifest"),
                                                    ("resumed", "from_snapshot", "manifest")]
    controller.wait_for(lambda: last_tick(controller, name) >= ticked + 2,
                        f"GUEST-TICK {ticked + 2} after the restore", name, 60)
    assert readies(controller, name) == 1  # restored, not rebooted
    assert controller.status(name)["saved"] is None  # type: ignore[index]
    # saved paused, restored paused
    assert controller.domctl("suspend", name).returncode == 0
    done = controller.domctl("save", name, timeout=120)
    assert done.returncode == 0 and "save done: shutoff (saved)" in done.stdout, done
    assert saved(controller, name)["saved"]["paused"] is True
    ticked, before = last_tick(controller, name), len(controller.events(name))
    controller.apply(ticking(name, guest_build, state="paused"))
    controller.wait_state(name, "paused", "user", timeout=120)
    assert pairs(controller, name, before)[-2:] == [("started", "restored", "manifest"),
                                                    ("suspended", "restored", "manifest")]
    controller.apply(ticking(name, guest_build))
    controller.wait_state(name, "running", timeout=60)
    controller.wait_for(lambda: last_tick(controller, name) > ticked, "a tick after resuming",
                        name, 60)
    assert readies(controller, name) == 1
    controller.apply(ticking(name, guest_build, state="shutoff", stop_mode=StopMode.SHUTDOWN))
    controller.wait_state(name, "shutoff", timeout=60)


def test_an_image_is_discarded_by_a_restart_only_edit_or_a_forced_boot(
        controller: Controller) -> None:
    name = controller.name("discard")
    vm = domain(name)
    controller.apply(vm)
    controller.wait_state(name, "running", "booted", timeout=60)
    done = controller.domctl("save", name, timeout=120)
    assert done.returncode == 0 and "image" in done.stdout, done
    saved(controller, name)
    controller.restart()  # nothing to re-attach: the image on disk says it is saved
    controller.wait_left_alone({name}, 0)
    status = saved(controller, name)
    overridden = condition(status, "Overridden")
    assert overridden["status"] == "True" and "save through the API" in overridden["message"]
    before = len(controller.events(name))
    edited = dataclasses.replace(vm, spec=dataclasses.replace(
        vm.spec, cpu=CpuTopology(model="qemu64")))  # restart-only: the image cannot take it
    controller.apply(edited)
    controller.wait_state(name, "running", "booted", timeout=60)
    started = controller.wait_event(name, "started", "booted", after=before)
    assert "saved image discarded: restart-only changes since the save (cpu.model)" \
        in started["message"], started
    # a forced boot
    assert controller.domctl("save", name, timeout=120).returncode == 0
    saved(controller, name)
    before = len(controller.events(name))
    booted = controller.domctl("start", "--force-boot", name, timeout=120)
    assert booted.returncode == 0 and "start done: running (booted)" in booted.stdout, booted
    started = controller.wait_event(name, "started", "booted", after=before)
    assert "forced boot (domctl start --force-boot by uid 0)" in started["message"], started
    assert controller.status(name)["saved"] is None  # type: ignore[index]
    shutoff = controller.domctl("save", name, timeout=120)
    assert shutoff.returncode == 0
    controller.remove_manifest(f"{name}.yaml")  # undefined, its image discarded
    controller.wait_for(lambda: controller.status(name) is None, f"{name} undefined", name, 60)


@pytest.mark.lxc
def test_a_container_cannot_be_saved(controller: Controller) -> None:
    name = controller.name("nosave")
    controller.apply(domain(name, "lxc", lxc=SLEEPER))
    pid = controller.wait_state(name, "running", timeout=60)["pid"]
    refused = controller.domctl("save", name)
    assert refused.returncode == 1, refused
    assert refused.stderr == "error: managed save is not supported by the lxc driver\n"
    # the refused request is dropped; the next projection of the domain says so
    status = controller.wait_status(name, "no request holding it", lambda s: condition(
        s, "Overridden").get("status") == "False")
    assert status["pid"] == pid and status["state"] == "running"
    off = controller.domctl("save", controller.name("ghost"))
    assert off.returncode == 1 and "no domain named" in off.stderr
    controller.apply(domain(name, "lxc", lxc=SLEEPER, state="shutoff", shutdown_timeout="1s"))
    controller.wait_state(name, "shutoff", timeout=60)
    again = controller.domctl("save", name)
    assert again.returncode == 1 and f"{name} is not running" in again.stderr, again


def test_host_shutdown_saves_three_in_parallel_and_the_next_controller_restores_them(
        tmp_path: Path) -> None:
    with controller_on(tmp_path) as controller:
        names = [controller.name(f"host-{i}") for i in range(3)]
        paused = names[2]
        for name in names:
            controller.apply(domain(name))
        for name in names:
            controller.wait_state(name, "running", timeout=60)
        # paused once it ran (one started paused has never run: qemu's prelaunch, not saved)
        assert controller.domctl("suspend", paused).returncode == 0
        done = controller.domctl("host-shutdown", "--parallel", "3", timeout=300)
        assert done.returncode == 0, done
        for name in names:
            assert re.search(rf"^{name}\s+save\s+saved$", done.stdout, re.M), done.stdout
            saved(controller, name)
        record = json.loads((controller.state / "host-shutdown.json").read_text())
        assert sorted(d["name"] for d in record["domains"]) == sorted(names)
        saves = [e for e in controller.audit() if e.get("action") == "save"]
        assert len(saves) >= 3
        # held down: a pass after the rescan does not restart them
        controller.wait_left_alone(set(names), len(controller.log_lines()))
        assert all(controller.status(n)["state"] == "shutoff" for n in names)  # type: ignore[index]
        controller.restart()  # the host booted: the next controller brings them back
        for name in names:
            controller.wait_state(name, "paused" if name == paused else "running",
                                  "user" if name == paused else "restored", timeout=120)
        assert not (controller.state / "host-shutdown.json").exists()
        back = [e for e in controller.audit() if e.get("action") == "host-return"]
        assert back and all(n in back[-1]["message"] for n in names), back
        for name in names:
            started = [e for e in controller.events(name) if e["event"] == "started"][-1]
            assert (started["detail"], started["cause"]) == ("restored", "controller"), started
