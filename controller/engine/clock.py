"""Time for the controller's machinery: one injectable clock (RFC 3339 stamps are in protocol.py).

The work queue (delayed requeue) and the backoff tracker read time only through `Clock`, so
tests drive them with `ManualClock.advance()` and assert exact sequences without sleeping.
`LoopClock` is the production clock: the running asyncio loop's monotonic time and timers.

Public surface:
    Clock (protocol): now() -> float; call_later(delay, callback) -> Timer
    LoopClock(), ManualClock(start=0.0).advance(seconds)

Never reads the wall clock for durations: monotonic time only; wall time is for display.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds and one-shot timers on the controller's event loop."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The running asyncio loop's clock; must be used from inside that loop."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class _ManualTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to; timers fire, in due order, inside `advance()`."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._seq = itertools.count()  # ties fire in scheduling order
        self._timers: list[tuple[float, int, _ManualTimer, Callable[[], None]]] = []

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer()
        heapq.heappush(self._timers, (self._now + max(delay, 0.0), next(self._seq), timer,
                                      callback))
        return timer

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            due, _, timer, callback = heapq.heappop(self._timers)
            self._now = max(self._now, due)
            if not timer.cancelled:
                callback()
        self._now = target
