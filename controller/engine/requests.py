"""Imperative API requests (`domctl stop NAME`, ...): recorded in the ledger, carried out by a pass.

The manifest stays the source of truth: a request is an `ApiRequest` recorded under the
current manifest epoch, and `decide()` drives the domain to the state it asks for while that
epoch holds (the next manifest change lifts it). The ledger keeps it across controller
restarts. `destroy` also acts at once, outside the work queue (libvirt's `virsh destroy`):
its destroy job cuts a graceful shutdown in progress short.

Called by the API backend (controller/api/backend.py) through the engine loop's `request`
and `destroy`. Refuses what virsh refuses: suspend/resume of a domain that is off.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from controller.engine.ledger import Ledger
from controller.state.events import AuditLog
from controller.state.status import NoSuchDomain
from reconcilers.errors import TerminalError
from reconcilers.history import ApiAction, ApiRequest
from reconcilers.model import Cause, State

log = structlog.get_logger(__name__)


class NotRunning(TerminalError):
    """suspend/resume of a domain that is off (virsh refuses them too)."""

    def __init__(self, name: str, action: ApiAction) -> None:
        done = {ApiAction.SUSPEND: "suspended", ApiAction.RESUME: "resumed"}.get(
            action, action.value)
        super().__init__(f"{name} is not running, so it cannot be {done}; "
                         f"use `domctl start {name}`")


def parse_action(action: str) -> ApiAction:
    """The request named on the wire; ValueError naming the choices for anything else."""
    try:
        return ApiAction(action)
    except ValueError:
        choices = ", ".join(a.value for a in ApiAction)
        raise ValueError(f"unknown action {action!r}; one of {choices}") from None


class Requests:
    def __init__(self, ledger: Ledger, audit: AuditLog, wall: Callable[[], float]) -> None:
        self._ledger = ledger
        self._audit = audit
        self._wall = wall

    def record(self, name: str, action: ApiAction, uid: int) -> ApiRequest:
        """Check and record a request; the caller queues the name for a pass."""
        record = self._ledger.get(name)
        if record is None:  # never defined (a pass defines every manifest's domain)
            raise NoSuchDomain(name)
        off = record.state in (None, State.SHUTOFF)
        if action in (ApiAction.SUSPEND, ApiAction.RESUME) and off:
            raise NotRunning(name, action)
        request = ApiRequest(action, uid, record.epoch, self._wall())
        self._ledger.set_request(name, request)
        if action is ApiAction.START:  # an explicit start tries at once, with a fresh count
            self._ledger.crash.forget(name)
        self._audit.record(name, f"request-{action.value}", Cause.API, {"uid": uid},
                           request.describe())
        log.info("API request", domain=name, action=action.value, uid=uid)
        return request
