"""Many domains at once, and the mass-prune guard (issue D point 9, scenario 9).

20 manifests (14 busybox containers, 6 diskless tcg VMs of 32 MiB: what this 2-core host runs
without strain) are dropped into the directory at once and must all converge to running. Then
every manifest is removed in one go: more than half of the domains (and more than 2) would be
pruned by one rescan, so the controller must hold the removals (ManifestValid False, reason
PruneHeld) and keep every domain running until `domctl prune --confirm`, after which all of
them are shut down and undefined.
"""

from __future__ import annotations

import time

import pytest

from .conftest import Controller, alive, condition, is_condition, lxc_manifest, qemu_manifest

pytestmark = [pytest.mark.qemu, pytest.mark.lxc]

CONTAINERS, VMS = 14, 6
HOLD_OBSERVED = 5.0  # seconds the held removals are watched: grace (1 s) + 2 rescans (2 s)


def test_twenty_domains_converge_and_mass_removal_is_held_until_confirmed(
        controller: Controller) -> None:
    names = ([controller.name(f"m-ct{i}") for i in range(CONTAINERS)]
             + [controller.name(f"m-vm{i}") for i in range(VMS)])
    texts = {name: (lxc_manifest(name) if "-ct" in name
                    else qemu_manifest(name, memory="32Mi")) for name in names}
    for name in names:
        controller.write_manifest(f"{name}.yaml", texts[name])

    def all_running() -> dict[str, dict] | None:
        statuses = {n: controller.status(n) for n in names}
        if all(s is not None and s["state"] == "running" and is_condition(s, "Ready", "True")
               for s in statuses.values()):
            return statuses  # type: ignore[return-value]
        return None

    running = controller.wait_for(all_running, f"all {len(names)} domains running",
                                  timeout=180)
    pids = {n: s["pid"] for n, s in running.items()}
    assert all(alive(pid) for pid in pids.values()), pids
    assert len(set(pids.values())) == len(names)
    ids = [s["id"] for s in running.values()]
    assert len(set(ids)) == len(ids) and None not in ids, ids
    got = controller.domctl("get")
    assert got.returncode == 0 and all(n in got.stdout for n in names), got

    for name in names:  # `rm *.yaml`: one rescan sees them all gone
        controller.remove_manifest(f"{name}.yaml")

    def all_held() -> dict[str, dict] | None:
        statuses = {n: controller.status(n) for n in names}
        if all(is_condition(s, "ManifestValid", "False", "PruneHeld")
               for s in statuses.values()):
            return statuses  # type: ignore[return-value]
        return None

    held = controller.wait_for(all_held, "every removal held (PruneHeld)", timeout=60)
    assert "prune --confirm" in condition(held[names[0]], "ManifestValid")["message"]
    time.sleep(HOLD_OBSERVED)  # the grace period and two rescans pass: nothing may be pruned
    still = {n: controller.status(n) for n in names}
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
