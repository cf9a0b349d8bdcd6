"""spec.management and spec.dependsOn with the real daemon and real qemu (tiny tcg, diskless).

Observe leaves a killed domain down and a paused one paused while its status reports the
drift, and never acts; switching the manifest to Enforce converges it. A dependsOn chain of
three starts in order (the started events' times). The rules themselves are table-tested in
tests/reconcile/test_decide.py and the engine's ordering in tests/unit/test_ordering.py.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime
from pathlib import Path

import pytest

from reconcilers.model import Domain
from tests.support.domains import domain, manifest

from .conftest import Controller, alive, condition, is_condition

pytestmark = pytest.mark.qemu


def apply(controller: Controller, vm: Domain, extra: str) -> None:
    """`vm`'s manifest with `extra` spec lines (tests/support/domains.py knows none of them)."""
    text = manifest(vm).replace("spec:\n", f"spec:\n{extra}", 1)
    controller.write_manifest(f"{vm.name}.yaml", text)


def test_observe_reports_drift_and_enforce_converges(controller: Controller) -> None:
    name = controller.name("observe")
    controller.apply(domain(name))
    running = controller.wait_state(name, "running", "booted")
    observed = "  management: Observe\n"
    apply(controller, domain(name), observed)
    controller.wait_status(name, "Observe shown", lambda s: s.get("management") == "Observe")
    before = len(controller.events(name))
    os.kill(running["pid"], signal.SIGKILL)
    drift = controller.wait_status(
        name, "the drift of a killed domain",
        lambda s: s["state"] == "shutoff" and is_condition(s, "Ready", "False", "Drift"))
    assert "Drift: state running wanted, shutoff seen" in condition(drift, "Ready")["message"]
    assert is_condition(drift, "Synced", "False", "Drift"), drift
    controller.wait_left_alone([name], controller.last_acted(name))
    assert controller.status(name)["state"] == "shutoff"  # type: ignore[index]
    assert [e["event"] for e in controller.events(name)[before:]] == ["stopped"]

    controller.apply(domain(name))  # Enforce (the default) again: started
    again = controller.wait_state(name, "running", "booted")
    assert alive(again["pid"]) and again["pid"] != running["pid"]

    controller.apply(domain(name, state="paused"))  # paused by the manifest...
    paused = controller.wait_state(name, "paused", "user")
    apply(controller, domain(name), observed)  # ...then running wanted, but only observed
    drift = controller.wait_status(name, "the drift of a paused domain",
                                   lambda s: is_condition(s, "Ready", "False", "Drift"))
    assert "state running wanted, paused seen" in condition(drift, "Ready")["message"]
    controller.wait_left_alone([name], controller.last_acted(name))
    still = controller.status(name)
    assert still is not None and (still["state"], still["pid"]) == ("paused", paused["pid"])

    controller.apply(domain(name))  # Enforce: resumed, the same process
    resumed = controller.wait_state(name, "running")
    assert resumed["pid"] == paused["pid"]
    assert is_condition(resumed, "Ready", "True"), resumed


def test_a_dependency_chain_starts_in_order(controller: Controller) -> None:
    db, app, web = (controller.name(n) for n in ("db", "app", "web"))
    apply(controller, domain(web), f"  dependsOn: [{app}]\n")  # the dependents first
    apply(controller, domain(app), f"  dependsOn: [{db}]\n")
    waiting = controller.wait_status(
        web, "web waiting", lambda s: is_condition(s, "Ready", "False", "WaitingForDependency"))
    assert f"waiting for dependency: {app}" in condition(waiting, "Ready")["message"]
    controller.apply(domain(db))
    for name in (db, app, web):
        controller.wait_state(name, "running", "booted", timeout=120)
    times = [datetime.fromisoformat(controller.wait_event(n, "started", "booted")["time"])
             for n in (db, app, web)]
    assert times == sorted(times), times


def test_priorities_under_a_parallel_bound(tmp_path: Path) -> None:
    """Three domains found at start-up (a host boot), one start at a time: highest
    startPriority first, the others held for a start slot meanwhile."""
    ctl = Controller(tmp_path, ("--max-parallel-starts", "1"))
    try:
        names = {ctl.name("low"): -5, ctl.name("high"): 10, ctl.name("mid"): 3}
        for name, priority in names.items():
            apply(ctl, domain(name), f"  startPriority: {priority}\n")
        ctl.start()
        for name in names:
            ctl.wait_state(name, "running", "booted", timeout=120)
        by_priority = sorted(names, key=lambda n: -names[n])
        lines = ctl.log_lines()
        acting = [(i, line["domain"]) for i, line in enumerate(lines)
                  if line.get("event") == "acting" and line.get("action") == "start"]
        assert [name for _, name in acting] == by_priority, acting
        held = {line["domain"] for line in lines if line.get("event") == "plan"
                and "waiting for a start slot" in line.get("why", "")}
        assert held >= set(by_priority[1:]), held  # four workers, yet one start at a time
        times = [datetime.fromisoformat(ctl.wait_event(n, "started", "booted")["time"])
                 for n in by_priority]
        assert times == sorted(times), times
    finally:
        ctl.cleanup()
