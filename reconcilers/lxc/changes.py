"""Which spec changes the lxc driver applies to a running container, and which wait for a restart.

Called by LxcDriver.classify/apply_live (and through them by the reconciler's diff). Pure: it
compares two normalised specs field by field. It never touches a container.
"""

from __future__ import annotations

from reconcilers.diff import classify_leaves
from reconcilers.driver import ChangeKind
from reconcilers.model import DomainSpec

# cgroup limits, rewritten in place by apply_live
CGROUP_FIELDS = frozenset({"memory", "cputune.shares", "cputune.quota", "cputune.period"})
# read by the controller, not by the container: a change needs nothing from the driver
CONTROLLER_FIELDS = frozenset({"state", "restart_policy", "update_policy", "shutdown_timeout",
                               "lifecycle.on_poweroff", "lifecycle.on_reboot",
                               "lifecycle.on_crash"})
LIVE_FIELDS = CGROUP_FIELDS | CONTROLLER_FIELDS


def classify(old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
    """Every changed leaf → LIVE (cgroup limits, controller settings) or RESTART (the rest)."""
    return classify_leaves(old, new, LIVE_FIELDS)
