"""Which spec changes the lxc driver applies to a running container, and which wait for a restart.

Called by LxcDriver.classify/apply_live (and through them by the reconciler's diff). Pure: it
compares two normalised specs field by field. It never touches a container.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reconcilers.driver import ChangeKind
from reconcilers.model import DomainSpec

# cgroup limits, rewritten in place by apply_live
CGROUP_FIELDS = frozenset({"memory", "cputune.shares", "cputune.quota", "cputune.period"})
# read by the controller, not by the container: a change needs nothing from the driver
CONTROLLER_FIELDS = frozenset({"state", "restart_policy", "update_policy", "shutdown_timeout",
                               "lifecycle.on_poweroff", "lifecycle.on_reboot",
                               "lifecycle.on_crash"})
LIVE_FIELDS = CGROUP_FIELDS | CONTROLLER_FIELDS


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf paths of a dataclass tree; tuples and scalars are leaves."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        leaves: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            leaves.update(flatten(getattr(value, f.name), f"{prefix}{f.name}."))
        return leaves
    return {prefix.rstrip("."): value}


def classify(old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
    """Every changed leaf → LIVE (cgroup limits, controller settings) or RESTART (the rest)."""
    before, after = flatten(old), flatten(new)
    changed = sorted(path for path in before.keys() | after.keys()
                     if before.get(path) != after.get(path))
    return {path: ChangeKind.LIVE if path in LIVE_FIELDS else ChangeKind.RESTART
            for path in changed}
