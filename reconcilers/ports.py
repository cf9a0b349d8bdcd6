"""What the reconciler needs from the engine, typed: job kinds, hook ops and the port protocols.

`reconcilers` is the lower layer and never imports `controller`, yet a pass must take the
domain's job lock, run hooks, emit events and write the audit log. Those services live in
the engine (controller/engine/jobs.py, hooks.py; controller/state/events.py), which implement
these protocols and import the enums from here, so no string is ever turned back into an enum.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from reconcilers.model import Cause, DriverName, EventDetail, EventType, Reason, State


class JobKind(str, enum.Enum):
    """libvirt's per-domain jobs: `query` needs no lock; the others take it, one at a time."""

    QUERY = "query"
    MODIFY = "modify"
    SUSPEND = "suspend"
    DESTROY = "destroy"  # may interrupt an interruptible job (a graceful shutdown)


class HookOp(str, enum.Enum):
    """libvirt's hook operations, in the order of a domain's life."""

    PREPARE = "prepare"
    START = "start"
    STARTED = "started"
    STOPPED = "stopped"
    RELEASE = "release"
    RECONNECT = "reconnect"

    @property
    def subop(self) -> str:
        """libvirt's `$3`: "end" for the ops that follow a stop, "begin" for the rest."""
        return "end" if self in (HookOp.STOPPED, HookOp.RELEASE) else "begin"


class JobPort(Protocol):
    def acquire(self, name: str, kind: JobKind, owner: str,
                interruptible: bool = False) -> AbstractAsyncContextManager[None]: ...


class HookPort(Protocol):
    async def run(self, driver: DriverName, name: str, op: HookOp, spec: object,
                  extra: str = "-") -> object: ...


class EventPort(Protocol):
    def emit(self, domain: str, event: EventType, detail: EventDetail, state: State,
             reason: Reason, cause: Cause, cause_detail: Mapping[str, Any] | None = None,
             message: str = "") -> object: ...


class AuditPort(Protocol):
    def record(self, domain: str, action: str, cause: Cause,
               cause_detail: Mapping[str, Any] | None = None, message: str = "") -> object: ...


class IntentPort(Protocol):
    async def begin(self, name: str, driver: DriverName) -> str:
        """Record durably that a start of `name` is about to spawn; its token. Raises
        (nothing is spawned) when the record cannot be written."""
        ...


@dataclass(frozen=True)
class Ports:
    """The engine's services a pass uses, handed to DomainReconciler once."""

    jobs: JobPort
    hooks: HookPort
    events: EventPort
    audit: AuditPort
    intents: IntentPort
