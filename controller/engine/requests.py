"""Imperative API requests (`domctl stop NAME`, ...): recorded in the ledger, carried out by a pass.

The manifest stays the source of truth: a request is an `ApiRequest` recorded under the
current manifest epoch, and `decide()` drives the domain to the state it asks for while that
epoch holds (the next manifest change lifts it). The ledger keeps it across controller
restarts. `destroy` also acts at once, outside the work queue (libvirt's `virsh destroy`):
its destroy job cuts a graceful shutdown in progress short.

Called by the API backend (controller/api/backend.py) through the engine loop's `request`,
`destroy` and `save`. Refuses what virsh refuses: suspend/resume/save of a domain that is off.
`save` also acts at once (libvirt's managedsave), and `start --force-boot` discards a saved
image.
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
    """suspend/resume/save of a domain that is off (virsh refuses them too)."""

    def __init__(self, name: str, action: ApiAction, seen: str = "") -> None:
        done = {ApiAction.SUSPEND: "suspended", ApiAction.RESUME: "resumed",
                ApiAction.SAVE: "saved"}.get(action, action.value)
        hint = "" if action is ApiAction.SAVE else f"; use `domctl start {name}`"
        super().__init__(f"{name} is not running{f' ({seen})' if seen else ''}, so it "
                         f"cannot be {done}{hint}")


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

    def record(self, name: str, action: ApiAction, uid: int,
               force_boot: bool = False) -> ApiRequest:
        """Check and record a request; the caller queues the name for a pass. `force_boot`
        (start only): a managed-save image is discarded, the domain boots afresh."""
        record = self._ledger.get(name)
        if record is None:  # never defined (a pass defines every manifest's domain)
            raise NoSuchDomain(name)
        off = record.state in (None, State.SHUTOFF)
        if action in (ApiAction.SUSPEND, ApiAction.RESUME, ApiAction.SAVE) and off:
            seen = f"{record.state.value} ({record.reason.value})" if (
                record.state is not None and record.reason is not None) else ""
            raise NotRunning(name, action, seen)
        request = ApiRequest(action, uid, record.epoch, self._wall(),
                             force_boot and action is ApiAction.START)
        self._ledger.set_request(name, request)
        if action is ApiAction.START:  # an explicit start tries at once, with a fresh count
            self._ledger.crash.forget(name)
        self._audit.record(name, f"request-{action.value}", Cause.API, {"uid": uid},
                           request.describe())
        log.info("API request", domain=name, action=action.value, uid=uid)
        return request
