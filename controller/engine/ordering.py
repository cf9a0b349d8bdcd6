"""Start ordering across domains (#16): spec.dependsOn, spec.startPriority and
`--max-parallel-starts`.

What decide() needs to order starts is read here, before each pass, and handed to it in
History: the dependencies that are not Ready (`waiting_for`), the removed dependents still up
(`dependents_up`: they stop first) and whether a start slot is free (`start_slot`). The rules
are decide()'s; this module only gathers the facts and keeps the slots. A slot is taken for the
pass of a domain the manifest wants up and that is not running, and given back when the pass
ends; a domain refused one waits with its priority, and the waiting are requeued, highest
priority first, when a slot comes free. A domain's status change requeues its dependents (a
dependency became Ready), and a removed domain's pass requeues its dependencies (a dependent
went down). A dependency counts as Ready only once a pass of this controller has observed it:
the status documents left by the previous controller (before a host boot) may be stale.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.engine.desired import DesiredStore
from controller.state.registry import Registry
from controller.state.status import ConditionStatus, ConditionType, StatusStore
from reconcilers.model import DesiredState, Domain


class StartSlots:
    """At most `limit` starts in flight (None: no bound); higher priorities first."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._held: set[str] = set()
        self._waiting: dict[str, int] = {}  # name → startPriority

    def take(self, name: str, priority: int) -> bool:
        """A slot for `name`'s pass, unless all are taken or a higher priority waits."""
        if self._limit is None or name in self._held:
            return True
        higher = any(p > priority for n, p in self._waiting.items() if n != name)
        if len(self._held) < self._limit and not higher:
            self._held.add(name)
            self._waiting.pop(name, None)
            return True
        self._waiting[name] = priority
        return False

    def withdraw(self, name: str) -> None:
        """`name` no longer waits to start (it runs, or its manifest wants it down)."""
        self._waiting.pop(name, None)

    def give_back(self, name: str) -> list[str]:
        """`name`'s pass ended: the waiting to requeue, highest priority first."""
        if name not in self._held:
            return []
        self._held.discard(name)
        return sorted(self._waiting, key=lambda n: (-self._waiting[n], n))


class Ordering:
    """The cross-domain facts of one pass, read from the desired store, the records and the
    status documents."""

    def __init__(self, store: DesiredStore, registry: Registry, statuses: StatusStore,
                 limit: int | None) -> None:
        self._store, self._registry, self._statuses = store, registry, statuses
        self.slots = StartSlots(limit)
        self._seen: set[str] = set()  # domains a pass of this controller has observed

    def waiting_for(self, desired: Domain | None) -> tuple[str, ...]:
        """The dependencies of `desired` that are not Ready, each with why."""
        if desired is None:
            return ()
        return tuple(why for why in map(self._not_ready, desired.spec.depends_on) if why)

    def _not_ready(self, name: str) -> str:
        if self._store.desired(name) is None:
            return f"{name}: no such domain"
        if name not in self._seen:  # a status from before a restart (a host boot) is stale
            return f"{name}: not observed yet"
        status = self._statuses.read(name)
        ready = None if status is None else next(
            (c for c in status.conditions if c.type is ConditionType.READY), None)
        if ready is None:
            return f"{name}: not Ready yet"
        if ready.status is not ConditionStatus.TRUE:
            return f"{name}: not Ready ({status.state.value if status else 'unknown'})"
        return ""

    def dependents_up(self, name: str) -> tuple[str, ...]:
        """Removed domains that depend on `name` and are still running."""
        return tuple(other for other in self._registry.names()
                     if name in self._last_depends_on(other)
                     and self._store.desired(other) is None
                     and self._running(other))

    def _running(self, name: str) -> bool:
        record = self._registry.get(name)
        return record is not None and record.runtime is not None

    def _last_depends_on(self, name: str) -> tuple[str, ...]:
        record = self._registry.get(name)
        if record is None or record.desired is None:
            return ()
        return record.desired.spec.depends_on

    def start_slot(self, name: str, desired: Domain | None, waiting: bool) -> bool:
        """A slot for the pass, when the manifest wants the domain up and it is not running
        (and waits for no dependency); else nothing is taken and it waits for none."""
        if desired is None or waiting or desired.spec.state is DesiredState.SHUTOFF \
                or self._running(name):
            self.slots.withdraw(name)
            return True
        return self.slots.take(name, desired.spec.start_priority)

    def before_pass(self, name: str, desired: Domain | None) -> tuple[str, ...]:
        """What after_pass needs from before the pass (an undefine forgets the record): the
        dependencies of a removed domain."""
        return self._last_depends_on(name) if desired is None else ()

    def after_pass(self, name: str, ready_changed: bool, dependencies: tuple[str, ...],
                   requeue: Callable[[str], None]) -> None:
        """Requeue whom the pass concerns: the slot's waiters, the dependents of a domain whose
        Ready changed, the `dependencies` of a removed one (before_pass)."""
        if name not in self._seen:
            self._seen.add(name)
            ready_changed = True  # its dependents wait for this first pass
        for waiter in self.slots.give_back(name):
            requeue(waiter)
        if ready_changed:
            for other in self._store.names():
                domain = self._store.desired(other)
                if domain is not None and name in domain.spec.depends_on:
                    requeue(other)
        for dependency in dependencies:
            requeue(dependency)

    def ready(self, name: str) -> ConditionStatus | None:
        status = self._statuses.read(name)
        return None if status is None else next(
            (c.status for c in status.conditions if c.type is ConditionType.READY), None)

    def by_priority(self, names: list[str]) -> list[str]:
        """`names` highest startPriority first (the order in which they are queued)."""
        def priority(name: str) -> int:
            domain = self._store.desired(name)
            if domain is None:
                record = self._registry.get(name)
                domain = record.desired if record is not None else None
            return domain.spec.start_priority if domain is not None else 0
        return sorted(names, key=lambda n: (-priority(n), n))
