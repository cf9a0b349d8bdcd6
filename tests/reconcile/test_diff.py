"""reconcilers/diff.py: field paths, live/restart/controller marking, pending restart and revert."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconcilers.diff import (
    Apply,
    Change,
    FieldChange,
    classify_changes,
    field_diff,
    live_after_apply,
    pending_restart,
)
from reconcilers.driver import ChangeKind
from reconcilers.model import (
    CpuTune,
    DesiredState,
    Disk,
    DiskCache,
    DomainSpec,
    DriverName,
    Lifecycle,
    LifecycleAction,
    LxcSpec,
    Mount,
    QemuSpec,
    RestartPolicy,
    StopMode,
    UpdatePolicy,
    VcpuPin,
    Vnc,
    to_plain,
)

LIVE, RESTART = ChangeKind.LIVE, ChangeKind.RESTART
MiB = 1024 * 1024

ROOT, DATA = Disk("root", "/img/root.qcow2"), Disk("data", "/img/data.raw")
QEMU_SPEC = QemuSpec(disks=(ROOT, DATA))
LXC_SPEC = LxcSpec(mounts=(Mount("/srv", "/srv"),))
QEMU = DomainSpec(driver=DriverName.QEMU, qemu=QEMU_SPEC)
LXC = DomainSpec(driver=DriverName.LXC, lxc=LXC_SPEC)


def qemu(**changes: Any) -> DomainSpec:
    return dataclasses.replace(QEMU, qemu=dataclasses.replace(QEMU_SPEC, **changes))


def lxc(**changes: Any) -> DomainSpec:
    return dataclasses.replace(LXC, lxc=dataclasses.replace(LXC_SPEC, **changes))


def spec(base: DomainSpec = QEMU, **changes: Any) -> DomainSpec:
    return dataclasses.replace(base, **changes)


SECOND_DISK_WRITEBACK = (ROOT, dataclasses.replace(DATA, cache=DiskCache.WRITEBACK))

# (old, new, expected [(path, old, new)])
DIFFS = {
    "same": (QEMU, QEMU, []),
    "memory": (QEMU, spec(memory=1024 * MiB), [("memory", 512 * MiB, 1024 * MiB)]),
    "state-enum-as-string": (QEMU, spec(state=DesiredState.PAUSED),
                             [("state", "running", "paused")]),
    "cputune-shares": (QEMU, spec(cputune=CpuTune(shares=2048)),
                       [("cputune.shares", None, 2048)]),
    "vcpupin-added-whole-list": (QEMU, spec(cputune=CpuTune(vcpupin=(VcpuPin(0, "0"),))),
                                 [("cputune.vcpupin", [], [{"vcpu": 0, "cpuset": "0"}])]),
    "disk-cache-by-index": (QEMU, qemu(disks=SECOND_DISK_WRITEBACK),
                            [("qemu.disks[1].cache", "none", "writeback")]),
    "disk-removed-whole-list": (QEMU, qemu(disks=(ROOT,)),
                                [("qemu.disks", to_plain([ROOT, DATA]), to_plain([ROOT]))]),
    "vnc-appears-whole-record": (QEMU, qemu(vnc=Vnc()),
                                 [("qemu.vnc", None,
                                   {"listen": "127.0.0.1", "port": None, "password": None})]),
    "lxc-mount-added": (LXC, lxc(mounts=(Mount("/srv", "/srv"), Mount("/a", "/b"))),
                        [("lxc.mounts", [{"source": "/srv", "target": "/srv", "readonly": False}],
                          [{"source": "/srv", "target": "/srv", "readonly": False},
                           {"source": "/a", "target": "/b", "readonly": False}])]),
    "lxc-mount-readonly": (LXC, lxc(mounts=(Mount("/srv", "/srv", readonly=True),)),
                           [("lxc.mounts[0].readonly", False, True)]),
    "lxc-init-list-of-strings-whole": (LXC, lxc(init=("/bin/sh", "-c", "sleep 1")),
                                       [("lxc.init", ["/sbin/init"],
                                         ["/bin/sh", "-c", "sleep 1"])]),
    "several-in-field-order": (QEMU, spec(vcpus=2, memory=1024 * MiB,
                                          update_policy=UpdatePolicy.RESTART),
                               [("update_policy", "Live", "Restart"),
                                ("memory", 512 * MiB, 1024 * MiB), ("vcpus", 1, 2)]),
}


@pytest.mark.parametrize(("old", "new", "expected"), DIFFS.values(), ids=DIFFS.keys())
def test_field_diff(old: DomainSpec, new: DomainSpec,
                    expected: list[tuple[str, Any, Any]]) -> None:
    assert field_diff(old, new) == tuple(FieldChange(*row) for row in expected)


ON_CRASH_PRESERVE = Lifecycle(on_crash=LifecycleAction.PRESERVE)

# (new spec against QEMU, the driver's classification, expected [(path, apply)])
MARKING = {
    "driver-says-live": (spec(memory=1024 * MiB), {"memory": LIVE}, [("memory", Apply.LIVE)]),
    "driver-says-restart": (spec(vcpus=4), {"vcpus": RESTART}, [("vcpus", Apply.RESTART)]),
    "unclassified-is-restart": (spec(vcpus=4), {}, [("vcpus", Apply.RESTART)]),
    "controller-state": (spec(state=DesiredState.SHUTOFF), {"state": RESTART},
                         [("state", Apply.CONTROLLER)]),
    "controller-policies": (spec(restart_policy=RestartPolicy.NEVER, shutdown_timeout=5.0,
                                 stop_mode=StopMode.SAVE), {},
                            [("restart_policy", Apply.CONTROLLER),
                             ("shutdown_timeout", Apply.CONTROLLER),
                             ("stop_mode", Apply.CONTROLLER)]),
    "lifecycle-is-the-drivers": (spec(lifecycle=ON_CRASH_PRESERVE),
                                 {"lifecycle.on_crash": LIVE},
                                 [("lifecycle.on_crash", Apply.LIVE)]),
    "lifecycle-unclassified-is-restart": (spec(lifecycle=ON_CRASH_PRESERVE), {},
                                          [("lifecycle.on_crash", Apply.RESTART)]),
    "coarser-driver-path-applies": (qemu(disks=SECOND_DISK_WRITEBACK), {"qemu.disks": LIVE},
                                    [("qemu.disks[1].cache", Apply.LIVE)]),
    "nearest-ancestor-wins": (qemu(disks=SECOND_DISK_WRITEBACK),
                              {"qemu": RESTART, "qemu.disks[1]": LIVE},
                              [("qemu.disks[1].cache", Apply.LIVE)]),
    "finer-driver-paths-all-live": (spec(cputune=CpuTune(shares=1, quota=5)),
                                    {"cputune.shares": LIVE, "cputune.quota": LIVE},
                                    [("cputune.shares", Apply.LIVE),
                                     ("cputune.quota", Apply.LIVE)]),
    "finer-driver-path-restart-wins": (qemu(vnc=Vnc()), {"qemu.vnc.listen": LIVE,
                                                         "qemu.vnc.port": RESTART},
                                       [("qemu.vnc", Apply.RESTART)]),
    "prefix-is-not-a-parent": (spec(memory=1024 * MiB), {"memory_extra": LIVE},
                               [("memory", Apply.RESTART)]),
}


@pytest.mark.parametrize(("new", "classification", "expected"), MARKING.values(),
                         ids=MARKING.keys())
def test_classify_changes(new: DomainSpec, classification: dict[str, ChangeKind],
                          expected: list[tuple[str, Apply]]) -> None:
    assert [(c.path, c.apply) for c in classify_changes(QEMU, new, classification)] == expected


def by_paths(live: set[str]) -> Any:
    """A driver-like classifier: the given top-level fields are live, everything else restart."""
    def classify(old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
        return {c.path: LIVE if c.path.split(".")[0].split("[")[0] in live else RESTART
                for c in field_diff(old, new)}
    return classify


CLASSIFY = by_paths({"memory", "cputune"})


def test_pending_restart_lists_restart_only_changes() -> None:
    persistent = spec(memory=1024 * MiB, vcpus=4, state=DesiredState.PAUSED)
    assert pending_restart(persistent, QEMU, CLASSIFY) == (
        Change("vcpus", 1, 4, Apply.RESTART),)


def test_pending_restart_of_a_stopped_domain_is_empty() -> None:
    assert pending_restart(spec(vcpus=4), None, CLASSIFY) == ()


def test_revert_clears_pending_restart() -> None:
    edited = spec(vcpus=4)
    assert pending_restart(edited, QEMU, CLASSIFY)
    assert pending_restart(QEMU, QEMU, CLASSIFY) == ()


def test_live_after_apply_takes_live_and_controller_values_only() -> None:
    persistent = qemu(disks=SECOND_DISK_WRITEBACK)
    persistent = spec(persistent, memory=2048 * MiB, restart_policy=RestartPolicy.NEVER)
    changes = classify_changes(QEMU, persistent, {"memory": LIVE})
    live = live_after_apply(QEMU, persistent, changes)
    assert live == spec(memory=2048 * MiB, restart_policy=RestartPolicy.NEVER)
    assert [c.path for c in pending_restart(persistent, live, CLASSIFY)] == ["qemu.disks[1].cache"]


# --- properties ------------------------------------------------------------------------

disks = st.builds(Disk, name=st.sampled_from(["a", "b"]), source=st.sampled_from(["/x", "/y"]),
                  readonly=st.booleans(), cache=st.sampled_from(DiskCache))
qemu_specs = st.builds(QemuSpec, machine=st.sampled_from(["pc", "q35"]),
                       disks=st.lists(disks, max_size=3).map(tuple),
                       vnc=st.none() | st.builds(Vnc, port=st.none() | st.integers(5900, 5910)))
mounts = st.builds(Mount, source=st.sampled_from(["/a", "/b"]), target=st.sampled_from(["/c"]),
                   readonly=st.booleans())
lxc_specs = st.builds(LxcSpec, init=st.sampled_from([("/sbin/init",), ("/bin/sh",)]),
                      mounts=st.lists(mounts, max_size=2).map(tuple))
common = {
    "state": st.sampled_from(DesiredState), "restart_policy": st.sampled_from(RestartPolicy),
    "memory": st.sampled_from([256 * MiB, 512 * MiB]), "vcpus": st.integers(1, 3),
    "cputune": st.builds(CpuTune, shares=st.none() | st.integers(1, 3)),
    "lifecycle": st.builds(Lifecycle, on_crash=st.sampled_from(LifecycleAction)),
}
qemu_domain_specs = st.builds(DomainSpec, driver=st.just(DriverName.QEMU), qemu=qemu_specs,
                              **common)
lxc_domain_specs = st.builds(DomainSpec, driver=st.just(DriverName.LXC), lxc=lxc_specs, **common)
pairs = (st.tuples(qemu_domain_specs, qemu_domain_specs)
         | st.tuples(lxc_domain_specs, lxc_domain_specs))


@given(qemu_domain_specs | lxc_domain_specs)
def test_nothing_differs_from_itself(x: DomainSpec) -> None:
    assert field_diff(x, x) == ()
    assert pending_restart(x, x, CLASSIFY) == ()


@given(pairs)
def test_applying_every_change_gives_the_new_spec(pair: tuple[DomainSpec, DomainSpec]) -> None:
    old, new = pair
    everything_live = {c.path: LIVE for c in field_diff(old, new)}
    assert live_after_apply(old, new, classify_changes(old, new, everything_live)) == new


@given(pairs)
def test_after_apply_only_restart_changes_are_left(pair: tuple[DomainSpec, DomainSpec]) -> None:
    live, persistent = pair
    changes = classify_changes(live, persistent, CLASSIFY(live, persistent))
    applied = live_after_apply(live, persistent, changes)
    left = classify_changes(applied, persistent, CLASSIFY(applied, persistent))
    assert left == tuple(c for c in changes if c.apply is Apply.RESTART)
    assert pending_restart(persistent, applied, CLASSIFY) == left


@given(pairs)
def test_a_revert_clears_pending_restart(pair: tuple[DomainSpec, DomainSpec]) -> None:
    """Edit, apply what is live, then put the old manifest back: nothing waits for a restart."""
    running, edited = pair
    applied = live_after_apply(running, edited,
                               classify_changes(running, edited, CLASSIFY(running, edited)))
    assert pending_restart(running, applied, CLASSIFY) == ()
