"""Which spec changes the qemu driver applies to a running domain, and which wait for a restart.

Called by QemuDriver.classify and apply_live. Pure: it compares two normalised specs leaf by
leaf. Live: the balloon target (currentMemory), cputune (cgroup cpu shares, quota, period and
vCPU/emulator pinning), the lifecycle actions (set-action, or the driver's own handling) and the
settings only the controller reads. Everything else (memory size, vCPUs, devices, machine, ...)
takes effect at the next start.
"""

from __future__ import annotations

from reconcilers.diff import classify_leaves
from reconcilers.driver import ChangeKind
from reconcilers.model import DomainSpec

LIVE_FIELDS = frozenset({
    "current_memory", "cputune.shares", "cputune.quota", "cputune.period", "cputune.vcpupin",
    "cputune.emulatorpin", "lifecycle.on_poweroff", "lifecycle.on_reboot", "lifecycle.on_crash",
    # read by the controller only
    "state", "restart_policy", "update_policy", "shutdown_timeout",
})


def classify(old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
    return classify_leaves(old, new, LIVE_FIELDS)
