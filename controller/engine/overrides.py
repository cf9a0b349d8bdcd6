"""Imperative API requests (`domctl stop NAME`, ...) as overrides of a domain's desired state.

The manifest stays the source of truth: `Controller.request` records an Override under the
current manifest epoch; while the epoch holds, the pass reconciles towards the override's
state and its plans are the API's (cause `api`, the caller's uid); the next manifest change
lifts it. The registry keeps it across controller restarts (registry.ApiOverride).

Public surface:
    API_ACTIONS: action → the desired state it asks for
    Override(action, uid, epoch, at).describe()
    NotRunning(name, action): suspend/resume of a domain that is off
    by_api(override) -> plan adjuster for DomainReconciler.run_pass
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from reconcilers.decide import Action, Plan
from reconcilers.driver import Live
from reconcilers.errors import TerminalError
from reconcilers.model import Cause, DesiredState

# What each imperative API action makes the domain's desired state, until the manifest changes.
API_ACTIONS: Mapping[str, DesiredState] = {
    "start": DesiredState.RUNNING, "resume": DesiredState.RUNNING,
    "stop": DesiredState.SHUTOFF, "suspend": DesiredState.PAUSED,
    "restart": DesiredState.SHUTOFF,  # down first; the start follows once it is off
    "destroy": DesiredState.SHUTOFF,  # at once, interrupting a graceful shutdown
}


@dataclass(frozen=True)
class Override:
    """An imperative request through the API: honoured until the manifest's next change."""

    action: str  # a key of API_ACTIONS
    uid: int  # who asked (SO_PEERCRED)
    epoch: int  # the manifest epoch it belongs to
    at: float  # wall time of the request

    def describe(self) -> str:
        return (f"{self.action} through the API by uid {self.uid}; honoured until the "
                "manifest changes")


class NotRunning(TerminalError):
    """suspend/resume of a domain that is off (virsh refuses them too)."""

    def __init__(self, name: str, action: str) -> None:
        done = {"suspend": "suspended", "resume": "resumed"}.get(action, action)
        super().__init__(f"{name} is not running, so it cannot be {done}; "
                         f"use `domctl start {name}`")


def by_api(override: Override) -> Callable[[Live, Plan], Plan]:
    """Plans made for an API request are the API's: their events and audit lines say so."""
    def adjust(live: Live, plan: Plan) -> Plan:
        if plan.action in (Action.NOTHING, Action.REPORT):
            return plan
        return replace(plan, cause=Cause.API, reason=f"{plan.reason} ({override.describe()})")
    return adjust
