"""Many domains at once, and the mass-prune guard (issue D point 9, scenario 9).

20 manifests (14 busybox containers, 6 diskless tcg VMs of 32 MiB: what this 2-core host runs
without strain) are dropped into the directory at once and must all converge to running. Then
every manifest is removed in one go: more than half of the domains (and more than 2) would be
pruned by one rescan, so the controller must hold the removals (ManifestValid False, reason
PruneHeld) and keep every domain running until `domctl prune --confirm`, after which all of
them are shut down and undefined.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.domains import domain

from .conftest import SLEEPER, Controller, alive, condition, is_condition

pytestmark = [pytest.mark.qemu, pytest.mark.lxc]

CONTAINERS, VMS = 14, 6


def test_twenty_domains_converge_and_mass_removal_is_held_until_confirmed(
        controller: Controller) -> None:
    names = ([controller.name(f"m-ct{i}") for i in range(CONTAINERS)]
             + [controller.name(f"m-vm{i}") for i in range(VMS)])
    domains = [domain(name, "lxc", lxc=SLEEPER) if "-ct" in name
               else domain(name, memory="32Mi") for name in names]
    for each in domains:
        controller.apply(each)

    def statuses() -> dict[str, dict[str, Any]]:
        return {n: s for n in names if (s := controller.status(n)) is not None}

    def all_running() -> dict[str, dict[str, Any]] | None:
        now = statuses()
        return now if len(now) == len(names) and all(
            s["state"] == "running" and is_condition(s, "Ready", "True")
            for s in now.values()) else None

    running = controller.wait_for(all_running, f"all {len(names)} domains running",
                                  timeout=180)
    pids = {n: s["pid"] for n, s in running.items()}
    assert all(alive(pid) for pid in pids.values()), pids
    assert len(set(pids.values())) == len(names)
    ids = [s["id"] for s in running.values()]
    assert len(set(ids)) == len(ids) and None not in ids, ids
    got = controller.domctl("get")
    assert got.returncode == 0 and all(n in got.stdout for n in names), got

    removed = len(controller.log_lines())
    for name in names:  # `rm *.yaml`: one rescan sees them all gone
        controller.remove_manifest(f"{name}.yaml")

    def all_held() -> dict[str, dict[str, Any]] | None:
        now = statuses()
        return now if len(now) == len(names) and all(
            is_condition(s, "ManifestValid", "False", "PruneHeld") for s in now.values()) else None

    held = controller.wait_for(all_held, "every removal held (PruneHeld)", timeout=60)
    assert "prune --confirm" in condition(held[names[0]], "ManifestValid")["message"]
    # each was considered after the removal and left alone, and two rescans (2 s apart, past
    # the 1 s grace) changed nothing
    controller.wait_left_alone(names, after=removed)
    still = statuses()
    for name in names:
        assert is_condition(still[name], "ManifestValid", "False", "PruneHeld"), still[name]
        assert still[name]["state"] == "running" and still[name]["pid"] == pids[name]
        assert alive(pids[name]), f"{name} ({pids[name]}) was pruned without confirmation"
    assert not [e for e in controller.events() if e["domain"] in names
                and e["event"] in ("stopped", "undefined")]

    confirmed = controller.domctl("prune", "--confirm")
    assert confirmed.returncode == 0, confirmed

    controller.wait_for(lambda: all(controller.status(n) is None for n in names),
                        "every status file gone after prune --confirm", names[0], timeout=120)
    controller.wait_for(lambda: not any(alive(pid) for pid in pids.values()),
                        "every process gone", names[0], timeout=30)
    undefined = {e["domain"] for e in controller.events()
                 if (e["event"], e["detail"]) == ("undefined", "removed")}
    assert set(names) <= undefined, set(names) - undefined
    got = controller.domctl("get")
    assert got.returncode == 0 and not any(n in got.stdout for n in names), got
