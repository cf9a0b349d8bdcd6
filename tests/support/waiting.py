"""The one poll-until of the test suite, for conditions that announce themselves no other way.

`wait_until(check, what)` calls `check` until it returns something truthy and returns that;
`async_wait_until` is the same on an event loop. Past the deadline, or at once when `abort`
returns a reason, it fails with what it waited for, the last value `check` returned and
whatever `explain` adds (a status document, a process's stderr). Tests wait for a positive
signal this way, never for time to pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _nothing() -> str:
    return ""


class _Poll:
    """The deadline and the failure message shared by both waits."""

    def __init__(self, what: str, timeout: float, explain: Callable[[], str],
                 abort: Callable[[], str]) -> None:
        self.what, self.timeout = what, timeout
        self.explain, self.abort = explain, abort
        self.deadline = time.monotonic() + timeout

    def check(self, result: object) -> None:
        """Raise AssertionError when it is time to give up on the falsy `result`."""
        reason = self.abort()
        if not reason and time.monotonic() < self.deadline:
            return
        because = reason or f"timed out after {self.timeout:g} s"
        parts = [f"{because} waiting for {self.what}; last check returned {result!r}",
                 self.explain()]
        raise AssertionError("\n".join(part for part in parts if part))


def wait_until(check: Callable[[], T | None], what: str, *, timeout: float = 10.0,
               interval: float = 0.05, explain: Callable[[], str] = _nothing,
               abort: Callable[[], str] = _nothing) -> T:
    """The first truthy result of `check`, polled every `interval` s for up to `timeout` s."""
    poll = _Poll(what, timeout, explain, abort)
    while not (result := check()):
        poll.check(result)
        time.sleep(interval)
    return result


async def async_wait_until(check: Callable[[], T | None], what: str, *, timeout: float = 10.0,
                           interval: float = 0.02, explain: Callable[[], str] = _nothing,
                           abort: Callable[[], str] = _nothing) -> T:
    """`wait_until` on the running event loop: it sleeps with asyncio, so the loop runs."""
    poll = _Poll(what, timeout, explain, abort)
    while not (result := check()):
        poll.check(result)
        await asyncio.sleep(interval)
    return result
