"""When a domain is reconciled next: `schedule(facts, settings) -> Next`, a pure function.

controller-runtime's reconcileHandler is the model: a pass ends with a result or an error,
and one small function turns that into "requeue after N seconds", "retry with backoff" or
"wait for the next event". The engine loop (controller/engine/controller.py) calls it at the
end of every pass and after a pass that crashed, with the numbers the backoffs give now; it
never reads a clock or a file.

| pass ended with                      | next pass                                          |
|--------------------------------------|----------------------------------------------------|
| success                              | the plan's requeue_after, else after `resync` s:   |
|                                      | a converged domain is re-observed (silent drift)   |
| a failed start (transient)           | when the crash-loop backoff allows the next start  |
| a host validation error (terminal)   | after `resync` s: the host may be fixed            |
| any other terminal error             | none: the manifest must change                     |
| any other transient error, a crash   | the per-name error backoff's delay                 |
| ... and the domain runs after failures | at the latest after `stable_after` s, to reset   |
|                                      | the crash-loop count once it proved stable         |

The result word ("ok", "error", "requeue") is for the reconcile-duration metric: "requeue"
only when the plan asked to come back (a periodic re-observation is "ok").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Ending(str, enum.Enum):
    """How a pass ended, as far as scheduling is concerned."""

    OK = "ok"
    FAILED_START = "failed-start"  # a start failed with a transient error
    HOST = "host"  # a host validation error (terminal, re-checked)
    TERMINAL = "terminal"  # any other terminal error
    ERROR = "error"  # any other transient error, or the pass crashed


class PassResult(str, enum.Enum):
    OK = "ok"
    ERROR = "error"
    REQUEUE = "requeue"


@dataclass(frozen=True)
class Facts:
    ending: Ending
    requeue_after: float | None = None  # the plan's own (None: no plan, or none asked)
    running: bool = False  # the domain runs after the pass
    failures: int = 0  # the crash-loop count after the pass
    crash_remaining: float = 0.0  # seconds until the crash-loop backoff allows a start
    error_delay: float = 0.0  # the error backoff's delay for this error (ERROR only)


@dataclass(frozen=True)
class Timing:
    """The settings schedule() reads (seconds)."""

    resync: float
    stable_after: float


@dataclass(frozen=True)
class Next:
    delay: float | None  # reconcile again after this many seconds; None: on the next event
    result: PassResult


def schedule(facts: Facts, timing: Timing) -> Next:
    asked = facts.ending is Ending.OK and facts.requeue_after is not None
    delay = {
        Ending.OK: facts.requeue_after if asked else timing.resync,
        Ending.FAILED_START: facts.crash_remaining,
        Ending.HOST: timing.resync,
        Ending.TERMINAL: None,
        Ending.ERROR: facts.error_delay,
    }[facts.ending]
    if facts.running and facts.failures:
        delay = timing.stable_after if delay is None else min(delay, timing.stable_after)
    if facts.ending is not Ending.OK:
        return Next(delay, PassResult.ERROR)
    return Next(delay, PassResult.REQUEUE if asked else PassResult.OK)
