"""schedule(facts, timing) as a table: when a domain is reconciled next, and the pass's result."""

from __future__ import annotations

import pytest

from controller.engine.schedule import Ending, Facts, Next, PassResult, Timing, schedule

TIMING = Timing(resync=30.0, stable_after=60.0)
OK, ERROR, REQUEUE = PassResult.OK, PassResult.ERROR, PassResult.REQUEUE

ROWS: dict[str, tuple[Facts, Next]] = {
    "converged-is-re-observed-after-resync": (Facts(Ending.OK), Next(30.0, OK)),
    "plan-asks-for-a-requeue": (Facts(Ending.OK, requeue_after=0.0), Next(0.0, REQUEUE)),
    "plan-waits-out-a-backoff": (Facts(Ending.OK, requeue_after=40.0), Next(40.0, REQUEUE)),
    "failed-start-waits-for-the-crash-loop-backoff": (
        Facts(Ending.FAILED_START, crash_remaining=12.5, failures=1), Next(12.5, ERROR)),
    "host-validation-is-rechecked": (Facts(Ending.HOST), Next(30.0, ERROR)),
    "terminal-error-waits-for-the-manifest": (Facts(Ending.TERMINAL), Next(None, ERROR)),
    "transient-error-uses-the-error-backoff": (Facts(Ending.ERROR, error_delay=2.0),
                                               Next(2.0, ERROR)),
    "running-after-failures-is-re-observed-before-the-count-resets": (
        Facts(Ending.OK, running=True, failures=3), Next(30.0, OK)),
    "running-after-failures-comes-back-to-reset-the-count": (
        Facts(Ending.OK, requeue_after=90.0, running=True, failures=3), Next(60.0, REQUEUE)),
    "running-after-failures-keeps-a-sooner-requeue": (
        Facts(Ending.OK, requeue_after=5.0, running=True, failures=3), Next(5.0, REQUEUE)),
    "running-without-failures-is-re-observed": (Facts(Ending.OK, running=True),
                                                Next(30.0, OK)),
    "running-after-an-error-with-failures": (
        Facts(Ending.ERROR, error_delay=120.0, running=True, failures=1), Next(60.0, ERROR)),
}


@pytest.mark.parametrize(("facts", "expected"), ROWS.values(), ids=ROWS.keys())
def test_schedule(facts: Facts, expected: Next) -> None:
    assert schedule(facts, TIMING) == expected


def test_every_ending_has_a_row() -> None:
    assert {facts.ending for facts, _ in ROWS.values()} == set(Ending)
