"""The Stalled/BackingOff condition announces only an attempt that will come: never for a
domain deliberately left off (restartPolicy, an API stop), never with a time in the past."""

from __future__ import annotations

import pytest

from controller.engine.statusview import Facts, PassView, _waiting, build_status
from reconcilers.decide import Action, Plan
from reconcilers.driver import Live
from reconcilers.history import ApiAction, ApiRequest
from reconcilers.model import Cause, DriverName, Reason, State
from tests.support.domains import domain

NOW = 1000.0
OFF = Live(State.SHUTOFF, Reason.CRASHED)
WAIT = Plan(Action.NOTHING, Cause.CONTROLLER, "crash-loop backoff", requeue_after=5.0)
LEFT = Plan(Action.REPORT, Cause.CONTROLLER, "restartPolicy Never: ...; left off until the "
                                             "manifest changes")
STOP = ApiRequest(ApiAction.STOP, 0, 1, NOW)


@pytest.mark.parametrize("state, plan, live, until, api, shown", [
    ("running", WAIT, OFF, NOW + 5, None, True),  # waiting for the next attempt
    ("running", Plan(Action.START, Cause.CONTROLLER, "start failed"), OFF, NOW + 5, None,
     True),
    ("running", LEFT, OFF, NOW + 5, None, False),  # deliberately left off: no attempt comes
    ("running", WAIT, OFF, NOW - 1, None, False),  # past: not announced
    ("running", WAIT, OFF, None, None, False),
    ("shutoff", Plan(Action.NOTHING, Cause.CONTROLLER, "as desired"), OFF, NOW + 5, None,
     False),
    ("running", Plan(Action.NOTHING, Cause.CONTROLLER, "as desired"), OFF, NOW + 5, STOP,
     False),  # an API stop holds it off
    ("running", WAIT, Live(State.RUNNING, Reason.BOOTED), NOW + 5, None, False),
])
def test_backoff_is_shown_only_while_an_attempt_will_come(
        state: str, plan: Plan, live: Live, until: float | None, api: ApiRequest | None,
        shown: bool) -> None:
    view = PassView("vm", DriverName.QEMU, domain("vm", state=state), live, plan)
    waiting = _waiting(view, live, until, api, NOW)
    assert (waiting is not None) is shown
    status = build_status(Facts(name="vm", uuid="u", driver=DriverName.QEMU,
                                desired=view.desired, entry=None, live=live, plan=plan,
                                backoff_until=waiting, now=NOW, failures=1))
    stalled = next(c for c in status.conditions if c.type.value == "Stalled")
    assert (stalled.status.value, stalled.reason) == (
        ("True", "BackingOff") if shown else ("False", "NotStalled"))
    assert (status.backoffUntil is not None) is shown
