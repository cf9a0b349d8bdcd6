"""The work queue: domain names waiting to be reconciled (client-go's workqueue, in asyncio).

Event handlers (manifest watcher, driver runtime events, API requests, resync) call `add(name)`;
N worker tasks loop on `name = await queue.get()`, reconcile, then call `queue.done(name)`.
Items are names only, never events: the reconciler re-reads desired and live state each time.

Guarantees (the `dirty` and `processing` sets of client-go):
- a name is queued at most once, however often it is added;
- a name is never handed to two workers at once: added while being processed, it is held back
  and queued again by `done(name)`, so it runs exactly once more afterwards;
- `add_after(name, delay)` requeues later; two delayed adds of one name keep the earliest;
  an immediate `add` does not cancel a pending delayed one (an extra pass is harmless);
- `shutdown()` drops what is queued and makes every `get()` raise `ShutDown`.

Public surface:
    WorkQueue(clock: Clock | None = None)      # default: LoopClock
    add(name), add_after(name, delay), await get() -> str, done(name), forget(name),
    shutdown(), len(queue), is_processing(name), idle()
    ShutDown

Rate limiting is not here: the caller asks controller.backoff for the delay and passes it to
`add_after`. Never call into a driver from here; the queue holds no locks across awaits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from controller.engine.clock import Clock, LoopClock, Timer


class ShutDown(Exception):
    """The queue was shut down: the worker should exit."""


@dataclass
class _Delayed:
    due: float
    timer: Timer


class WorkQueue:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or LoopClock()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()  # wants a (further) pass: queued, or held while processing
        self._processing: set[str] = set()
        self._delayed: dict[str, _Delayed] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._shutting_down = False

    def __len__(self) -> int:
        """Names ready to be handed out now (not those held back or delayed)."""
        return len(self._queue)

    def is_processing(self, name: str) -> bool:
        return name in self._processing

    def idle(self) -> bool:
        """Nothing ready and nothing being processed (delayed requeues may still be pending)."""
        return not self._queue and not self._processing

    async def wait_idle(self) -> None:
        """Return once nothing is ready or being processed (woken by `done`, never polled)."""
        while not self.idle():
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._idle_waiters:
                    self._idle_waiters.remove(waiter)

    def add(self, name: str) -> None:
        if self._shutting_down or name in self._dirty:
            return
        self._dirty.add(name)
        if name in self._processing:
            return  # done(name) queues it again
        self._queue.append(name)
        self._wake()

    def add_after(self, name: str, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(name)
            return
        due = self._clock.now() + delay
        pending = self._delayed.get(name)
        if pending is not None:
            if pending.due <= due:
                return
            pending.timer.cancel()
        self._delayed[name] = _Delayed(due, self._clock.call_later(delay, lambda: self._fire(name)))

    def _fire(self, name: str) -> None:
        self._delayed.pop(name, None)
        self.add(name)

    async def get(self) -> str:
        """The next name to reconcile; the caller must call `done(name)` when finished."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        name = self._queue.popleft()
        self._dirty.discard(name)
        self._processing.add(name)
        return name

    def done(self, name: str) -> None:
        self._processing.discard(name)
        if name in self._dirty and not self._shutting_down:
            self._queue.append(name)
            self._wake()
        if self.idle():
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()

    def forget(self, name: str) -> None:
        """Cancel a pending delayed requeue of `name` (e.g. the domain was removed)."""
        pending = self._delayed.pop(name, None)
        if pending is not None:
            pending.timer.cancel()

    def shutdown(self) -> None:
        self._shutting_down = True
        for pending in self._delayed.values():
            pending.timer.cancel()
        self._delayed.clear()
        self._queue.clear()
        self._dirty.clear()
        self._wake()

    def _wake(self) -> None:
        # Every waiter re-checks the queue, so a getter cancelled after being woken cannot
        # strand an item (the lost-wakeup race of waking exactly one).
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
