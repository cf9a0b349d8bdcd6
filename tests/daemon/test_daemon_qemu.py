"""The real daemon driving qemu from manifests: add, pause, resume, shut off, remove, a killed
process, a start that always fails, an invalid edit (issue D point 9, scenarios 1-7).

One controller for the module; every test uses its own domain names and its own manifest file.
Guests are diskless tcg `pc` VMs: the firmware runs forever and ignores ACPI, so a graceful
shutdown always ends with a destroy after `shutdownTimeout` (2 s here).
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.support.domains import domain, manifest

from .conftest import Controller, alive, condition, controller_on, is_condition

pytestmark = pytest.mark.qemu


def pairs(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["event"], e["detail"]) for e in events]


def start_vm(ctl: Controller, prefix: str, **fields: Any) -> tuple[str, str, dict[str, Any]]:
    """Drop a manifest; wait until the domain runs. (name, file name, status)."""
    name = ctl.name(prefix)
    filename = ctl.apply(domain(name, **fields)).name
    status = ctl.wait_state(name, "running", "booted")
    return name, filename, status


def test_added_manifest_boots_the_vm(controller: Controller) -> None:
    name, _, status = start_vm(controller, "add")
    assert status["desired"] == "running"
    assert status["driver"] == "qemu"
    assert alive(status["pid"]), status
    assert is_condition(status, "Ready", "True")
    assert status["restarts"] == 0
    assert isinstance(status["id"], int) and status["uuid"], status
    got = controller.domctl("get", name, "-o", "json")
    assert got.returncode == 0, got
    shown = json.loads(got.stdout)
    assert (shown["name"], shown["state"], shown["pid"]) == (name, "running", status["pid"])
    events = controller.wait_for(
        lambda: ev if ("started", "booted") in pairs(ev := controller.events(name)) else None,
        "started event", name)
    assert pairs(events)[:2] == [("defined", "added"), ("started", "booted")], events
    assert [e["cause"] for e in events[:2]] == ["manifest", "manifest"]
    assert events[0]["causeDetail"]["generation"] == status["generation"]
    synced = controller.wait_status(name, "Synced", lambda s: is_condition(s, "Synced", "True"))
    assert synced["observedGeneration"] == synced["generation"]


def test_pause_and_resume_through_the_manifest(controller: Controller) -> None:
    name, _, running = start_vm(controller, "pause")
    before = len(controller.events(name))
    controller.apply(domain(name, state="paused"))
    paused = controller.wait_state(name, "paused", "user")
    assert paused["pid"] == running["pid"] and alive(paused["pid"])
    assert paused["desired"] == "paused"
    assert is_condition(paused, "Ready", "True"), paused
    suspended = controller.wait_event(name, "suspended", "paused", after=before)
    assert suspended["cause"] == "manifest"
    assert suspended["causeDetail"]["generation"] == paused["generation"]

    before = len(controller.events(name))
    controller.apply(domain(name, state="running"))
    resumed_status = controller.wait_state(name, "running", "unpaused")
    assert resumed_status["pid"] == running["pid"]
    resumed = controller.wait_event(name, "resumed", "unpaused", after=before)
    assert resumed["state"] == "running"
    assert ("started", "booted") not in pairs(controller.events(name)[before:])


def test_resume_by_a_manifest_edit_is_caused_by_the_manifest(controller: Controller) -> None:
    """DESIGN §4: every event records who caused it. Editing `state: paused` back to `running`
    is the manifest's doing, like the suspend before it, not a drift correction."""
    name, _, _ = start_vm(controller, "cause")
    controller.apply(domain(name, state="paused"))
    controller.wait_state(name, "paused", "user")
    before = len(controller.events(name))
    controller.apply(domain(name, state="running"))
    resumed = controller.wait_event(name, "resumed", "unpaused", after=before)
    assert resumed["cause"] == "manifest", resumed


def test_shutoff_destroys_a_guest_that_ignores_acpi(controller: Controller) -> None:
    name, _, running = start_vm(controller, "off")
    pid = running["pid"]
    before = len(controller.events(name))
    controller.apply(domain(name, state="shutoff"))
    status = controller.wait_state(name, "shutoff", "destroyed")
    assert status["desired"] == "shutoff"
    assert status["pid"] is None and status["id"] is None, status
    controller.wait_for(lambda: not alive(pid), f"qemu {pid} gone", name)
    stopped = controller.wait_event(name, "stopped", "destroyed", after=before)
    assert stopped["cause"] == "manifest"
    audit = controller.audit(name)
    actions = [a["action"] for a in audit]
    assert actions[-2:] == ["shutdown", "destroy"], actions
    destroy = audit[-1]
    assert "shutdownTimeout" in destroy["message"], destroy
    assert is_condition(controller.status(name), "Ready", "True")


def test_removed_manifest_stops_and_undefines(controller: Controller) -> None:
    name, filename, running = start_vm(controller, "rm")
    pid = running["pid"]
    controller.remove_manifest(filename)
    controller.wait_for(lambda: controller.status(name) is None, "status file removed", name)
    assert not alive(pid)
    events = controller.events(name)
    assert ("undefined", "removed") in pairs(events), events
    stop = pairs(events).index(("stopped", "destroyed"))
    undefine = pairs(events).index(("undefined", "removed"))
    assert stop < undefine, events
    assert events[stop]["cause"] == events[undefine]["cause"] == "manifest", events
    got = controller.domctl("get", name)
    assert got.returncode == 1, got
    assert f"no domain named {name}" in got.stderr, got


def test_manifest_back_within_the_grace_period_changes_nothing(tmp_path: Path) -> None:
    """DESIGN §5: the removal grace rides out an editor or `git checkout` replacing files.
    Its own controller with a long grace, so that a slow machine cannot make the test racy."""
    with controller_on(tmp_path, ("--removal-grace", "30")) as ctl:
        name, filename, running = start_vm(ctl, "back")
        text = (ctl.manifests / filename).read_text()
        before = len(ctl.events(name))
        ctl.remove_manifest(filename)
        ctl.wait_status(name, "ManifestRemoved",
                        lambda s: is_condition(s, "ManifestValid", "False", "ManifestRemoved"))
        ctl.write_manifest(filename, text)
        back = ctl.wait_status(name, "ManifestValid again",
                               lambda s: is_condition(s, "ManifestValid", "True"))
        assert back["state"] == "running" and back["pid"] == running["pid"], back
        assert alive(running["pid"])
        assert ctl.events(name)[before:] == [], ctl.events(name)[before:]
        assert [a["action"] for a in ctl.audit(name)] == ["start"], ctl.audit(name)


def test_killed_qemu_is_restarted(controller: Controller) -> None:
    name, _, running = start_vm(controller, "kill")
    pid = running["pid"]
    before = len(controller.events(name))
    os.kill(pid, signal.SIGKILL)
    controller.wait_restarted(name, pid, before)


def test_start_failing_in_a_hook_backs_off(controller: Controller) -> None:
    name = controller.name("never")
    hook_dir = controller.hooks / "qemu.d"
    hook_dir.mkdir(exist_ok=True)
    hook = hook_dir / f"50-fail-{name}"
    hook.write_text(f"""#!/bin/sh
cat >/dev/null
if [ "$1" = "{name}" ] && [ "$2" = "prepare" ]; then
    echo "no bridge for {name}: br-missing" >&2
    exit 1
fi
exit 0
""")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    try:
        controller.apply(domain(name))
        first = controller.wait_status(
            name, "Stalled/BackingOff",
            lambda s: is_condition(s, "Stalled", "True", "BackingOff"))
        assert first["state"] == "shutoff" and first["reason"] == "failed", first
        assert first["pid"] is None
        assert first["backoffUntil"] is not None

        def failures(status: dict[str, Any]) -> int:
            match = re.match(r"(\d+) consecutive failure", condition(status, "Stalled")["message"])
            assert match, status
            return int(match.group(1))

        seen = [first]  # every status sampled until the third failure

        def third_failure(status: dict[str, Any]) -> bool:
            seen.append(status)
            return (is_condition(status, "Stalled", "True", "BackingOff")
                    and failures(status) >= 3)

        later = controller.wait_status(name, "a third failure", third_failure)
        backing_off = [s for s in seen if is_condition(s, "Stalled", "True", "BackingOff")]
        assert len(backing_off) == len(seen), [condition(s, "Stalled") for s in seen]
        counts = [failures(s) for s in backing_off]
        assert counts == sorted(counts) and counts[-1] > counts[0], counts
        untils = [s["backoffUntil"] for s in backing_off]
        assert None not in untils and untils == sorted(untils), untils  # RFC 3339 UTC text
        assert untils[-1] > untils[0], untils
        assert later["state"] == "shutoff" and later["reason"] == "failed", later
        # DESIGN §7: the failed start is "shutoff/failed, reported": the hook's words stay in
        # the status all through the backoff, not only until the next pass
        reported = [any("br-missing" in (c.get("message") or "") for c in s["conditions"])
                    for s in seen]
        assert all(reported), [s["conditions"] for s in seen]
        assert not any(e["event"] == "started" for e in controller.events(name))
        failed = [e for e in controller.events(name) if (e["event"], e["detail"])
                  == ("stopped", "failed")]
        assert len(failed) >= 3 and "br-missing" in failed[0]["message"], failed
    finally:
        hook.unlink()
        controller.remove_manifest(f"{name}.yaml")


def test_invalid_edit_keeps_the_domain_running(controller: Controller) -> None:
    name, filename, running = start_vm(controller, "bad")
    pid = running["pid"]
    text = manifest(domain(name)).replace("memory: 64Mi", "memory: lots")
    line = text.splitlines().index("  memory: lots") + 1
    controller.write_manifest(filename, text)
    invalid = controller.wait_status(name, "ManifestValid False",
                                     lambda s: is_condition(s, "ManifestValid", "False"))
    message = condition(invalid, "ManifestValid")["message"]
    assert f"{filename}:{line}" in message, message
    assert "memory" in message, message
    assert invalid["state"] == "running" and invalid["pid"] == pid, invalid
    assert alive(pid)

    controller.apply(domain(name))
    valid = controller.wait_status(name, "ManifestValid True",
                                   lambda s: is_condition(s, "ManifestValid", "True"))
    assert valid["state"] == "running" and valid["pid"] == pid, valid
    assert alive(pid)
    lifecycle = [p for p in pairs(controller.events(name)) if p[0] in ("started", "stopped")]
    assert lifecycle == [("started", "booted")], lifecycle
