"""Which spec changes the lxc driver applies to a running container, and which wait for a restart.

Called by LxcDriver.classify/apply_live (and through them by the reconciler's diff). Pure: it
compares two normalised specs field by field. It never touches a container.

Live: the cgroup limits apply_live rewrites with lxc-cgroup (memory, cpu, `vcpus` as the
cpuset, `lxc.pids_limit` as pids.max), the controller's own settings, and `lxc.delete_policy`
(read when the domain is removed, by release_storage). `lxc.privileged` (an id map is set at
the start), `lxc.image` and the rest wait for a restart; a new image does not rebuild a kept
rootfs (storage.py), the restart says so.

NICs (`lxc.nics`, a list the diff compares element by element when its length is kept, as one
value when not): a NIC's `link_state` is live (its host end set up or down); NICs added or
removed at the end of the list are live when the NICs before them are unchanged but for their
`link_state` (a veth pair made on the host and its peer moved into the container as ethN, or
the host end deleted, which takes the pair away). Everything else about a NIC (its bridge,
network, MAC, static ip; a NIC inserted or removed in the middle, which would rename the ethN
after it) waits for a restart: LXC has no way to change a veth's bridge or a container
interface's identity in place that a guest would not see as a different NIC anyway.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from reconcilers.diff import classify_leaves
from reconcilers.driver import ChangeKind
from reconcilers.model import DomainSpec, Nic

# cgroup limits, rewritten in place by apply_live
CGROUP_FIELDS = frozenset({"memory", "cputune.shares", "cputune.quota", "cputune.period",
                           "vcpus", "lxc.pids_limit"})
# read by the controller, not by the container: a change needs nothing from the driver
CONTROLLER_FIELDS = frozenset({"state", "restart_policy", "update_policy", "shutdown_timeout",
                               "lifecycle.on_poweroff", "lifecycle.on_reboot",
                               "lifecycle.on_crash"})
LIVE_FIELDS = CGROUP_FIELDS | CONTROLLER_FIELDS | {"lxc.delete_policy"}
NICS = "lxc.nics"


@dataclass(frozen=True)
class NicChanges:
    """How the NIC list moves from old to new: what apply_live does, what waits."""

    links: tuple[tuple[int, Nic], ...] = ()  # kept NICs whose link_state changed (new NIC)
    added: tuple[tuple[int, Nic], ...] = ()  # at the end, in index order
    removed: tuple[int, ...] = ()  # from the end, highest index first
    restart: tuple[str, ...] = ()  # changed paths that wait for a restart


def nic_changes(old: tuple[Nic, ...], new: tuple[Nic, ...]) -> NicChanges:
    kept = min(len(old), len(new))
    links = tuple((i, new[i]) for i in range(kept) if old[i].link_state != new[i].link_state)
    restart = tuple(f"{NICS}[{i}].{field.name}" for i in range(kept)
                    for field in dataclasses.fields(Nic)
                    if field.name != "link_state"
                    and getattr(old[i], field.name) != getattr(new[i], field.name))
    if len(old) == len(new):
        return NicChanges(links=links, restart=restart)
    if restart:  # the diff sees one change of the whole list: all of it waits
        return NicChanges(restart=(NICS,))
    return NicChanges(links=links, added=tuple((i, new[i]) for i in range(kept, len(new))),
                      removed=tuple(range(len(old) - 1, kept - 1, -1)))


def classify(old: DomainSpec, new: DomainSpec) -> dict[str, ChangeKind]:
    """Every changed leaf → LIVE (cgroup limits, controller settings, NICs as the module
    docstring says) or RESTART (the rest)."""
    result = classify_leaves(old, new, LIVE_FIELDS)
    if NICS not in result or old.lxc is None or new.lxc is None:
        return result
    del result[NICS]
    before, after = old.lxc.nics, new.lxc.nics
    changes = nic_changes(before, after)
    result.update(dict.fromkeys(changes.restart, ChangeKind.RESTART))
    if len(before) != len(after):
        if not changes.restart:
            result[NICS] = ChangeKind.LIVE
    else:
        result.update({f"{NICS}[{i}].link_state": ChangeKind.LIVE for i, _ in changes.links})
    return result
