"""Field diff between two DomainSpecs, and how each changed field reaches a running domain.

`field_diff(old, new)` lists changed fields as dotted paths with old and new values in their
plain JSON form (model.to_plain): `memory`, `cputune.shares`, `qemu.disks[0].cache`,
`lxc.mounts`. Records are compared field by field; a list of records that keeps its length is
compared element by element (`qemu.disks[0].cache`); any other list is one value
(`lxc.mounts` when a mount is added, `lxc.init`), since its elements have no identity of their own.

`classify_changes` marks each changed field with how it is applied:
- CONTROLLER: read by the controller only, so a change is applied by reading the new spec,
  without touching the domain: `state`, `restart_policy`, `update_policy`, `shutdown_timeout`,
  `stop_mode`.
  `lifecycle.*` is *not* among them: the qemu driver carries the lifecycle actions out itself
  (`-action reboot=...`, its handling of `-no-shutdown` and panics), so a change of them must
  reach it through classify/apply_live like any other driver field.
- LIVE or RESTART: the driver's classify result. Drivers may classify at another granularity
  than this diff (`qemu.disks` for `qemu.disks[0].cache`), so a path takes the kind of its
  nearest classified ancestor, else of its classified descendants (RESTART if any is), else
  RESTART: a field nobody classified is not assumed to be live.

`pending_restart(persistent, live_spec, classify)` is what the PendingRestart condition and
`domctl diff` show; it is computed from (persistent − live) on every pass and never stored, so
a revert of the manifest clears it. `live_after_apply` is the live spec after apply_live.

Called by decide.py and by the reconciler (reconcilers/domain.py). Pure: never calls a driver
operation other than the pure `classify` it is handed, never touches a domain.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from reconcilers.driver import ChangeKind
from reconcilers.model import DomainSpec, to_plain

Classification = Mapping[str, ChangeKind]
Classifier = Callable[[DomainSpec, DomainSpec], Classification]


class Apply(str, enum.Enum):
    """How a changed field takes effect."""

    CONTROLLER = "controller"  # the controller reads it: nothing to do to the domain
    LIVE = "live"  # the driver's apply_live changes the running domain
    RESTART = "restart"  # takes effect at the next start


CONTROLLER_FIELDS = frozenset({"state", "restart_policy", "update_policy", "shutdown_timeout",
                               "stop_mode", "management", "depends_on", "start_priority",
                               "placement"})

_KIND = {ChangeKind.LIVE: Apply.LIVE, ChangeKind.RESTART: Apply.RESTART}
_STEP = re.compile(r"\.?([A-Za-z_]\w*)|\[(\d+)\]")


@dataclass(frozen=True)
class FieldChange:
    path: str  # dotted path with indexes: "qemu.disks[0].cache"
    old: Any  # plain JSON forms (to_plain)
    new: Any


@dataclass(frozen=True)
class Change(FieldChange):
    apply: Apply


def field_diff(old: DomainSpec, new: DomainSpec) -> tuple[FieldChange, ...]:
    """Every changed field of `new` against `old`, in field order."""
    return tuple(_walk("", to_plain(old), to_plain(new)))


def _walk(path: str, old: Any, new: Any) -> Iterator[FieldChange]:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in dict.fromkeys([*old, *new]):  # ordered union, should a mapping ever differ
            yield from _walk(f"{path}.{key}" if path else key, old.get(key), new.get(key))
    elif _records_of_one_length(old, new):
        for i, (before, after) in enumerate(zip(old, new, strict=True)):
            yield from _walk(f"{path}[{i}]", before, after)
    else:
        yield FieldChange(path, old, new)


def _records_of_one_length(old: Any, new: Any) -> bool:
    return (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and all(isinstance(v, dict) for v in old + new))


def spec_leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf paths of a dataclass tree; tuples and scalars are leaves."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        leaves: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            leaves.update(spec_leaves(getattr(value, f.name), f"{prefix}{f.name}."))
        return leaves
    return {prefix.rstrip("."): value}


def classify_leaves(old: DomainSpec, new: DomainSpec,
                    live_fields: frozenset[str]) -> dict[str, ChangeKind]:
    """What a driver's classify() returns: each changed leaf → LIVE if listed, else RESTART."""
    before, after = spec_leaves(old), spec_leaves(new)
    return {path: ChangeKind.LIVE if path in live_fields else ChangeKind.RESTART
            for path in sorted(before.keys() | after.keys())
            if before.get(path) != after.get(path)}


def classify_changes(old: DomainSpec, new: DomainSpec,
                     classification: Classification) -> tuple[Change, ...]:
    """field_diff(old, new), each change marked with how it is applied (see module docstring)."""
    return tuple(Change(c.path, c.old, c.new, _apply_of(c.path, classification))
                 for c in field_diff(old, new))


def _apply_of(path: str, classification: Classification) -> Apply:
    if _root(path) in CONTROLLER_FIELDS:
        return Apply.CONTROLLER
    for candidate in _self_and_ancestors(path):
        if candidate in classification:
            return _KIND[classification[candidate]]
    below = [kind for p, kind in classification.items() if _is_below(p, path)]
    if below and ChangeKind.RESTART not in below:
        return Apply.LIVE
    return Apply.RESTART


def _root(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _self_and_ancestors(path: str) -> Iterator[str]:
    """"a.b[0].c", "a.b[0]", "a.b", "a"."""
    yield path
    for cut in reversed([m.start() for m in re.finditer(r"[.\[]", path)]):
        yield path[:cut]


def _is_below(candidate: str, path: str) -> bool:
    return candidate.startswith(path) and candidate[len(path):len(path) + 1] in (".", "[")


def outstanding(persistent: DomainSpec, live_spec: DomainSpec | None,
                classify: Classifier) -> tuple[tuple[Change, ...], tuple[Change, ...]]:
    """(restart-only, live) changes between the live spec and the manifest's (persistent)
    spec, from one diff; none when they are equal, or when the domain is not running (None)."""
    if live_spec is None or live_spec == persistent:
        return (), ()
    changes = classify_changes(live_spec, persistent, classify(live_spec, persistent))
    return (tuple(c for c in changes if c.apply is Apply.RESTART),
            tuple(c for c in changes if c.apply is Apply.LIVE))


def pending_restart(persistent: DomainSpec, live_spec: DomainSpec | None,
                    classify: Classifier) -> tuple[Change, ...]:
    """The restart-only changes between the live spec and the manifest's (persistent) spec.

    None as live spec means the domain is not running: nothing waits for a restart.
    """
    return outstanding(persistent, live_spec, classify)[0]


def live_after_apply(live_spec: DomainSpec, persistent: DomainSpec,
                     changes: tuple[Change, ...]) -> DomainSpec:
    """The live spec once `changes` of (live_spec → persistent) have been applied.

    Every change that is not restart-only takes the persistent value; restart-only fields keep
    their live value, so they stay pending until the next start (or a revert).
    """
    result = live_spec
    for change in changes:
        if change.apply is not Apply.RESTART:
            result = _replace(result, _steps(change.path), persistent)
    return result


def _steps(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _STEP.findall(path)]


def _replace(target: Any, steps: list[str | int], source: Any) -> Any:
    """`target` with the value at `steps` taken from `source` (both of the same shape there)."""
    if not steps:
        return source
    step, rest = steps[0], steps[1:]
    if isinstance(step, int):
        items = list(target)
        items[step] = _replace(target[step], rest, source[step])
        return tuple(items)
    return dataclasses.replace(
        target, **{step: _replace(getattr(target, step), rest, getattr(source, step))})
