"""Lifecycle events and the audit log: JSON lines in the state dir, plus live subscribers.

The reconciler calls `EventBus.emit(...)` for every libvirt event a domain goes through (DESIGN
§4), always with its cause; `AuditLog.record(...)` for every action it takes, with who asked.
The API serves `domctl events [--follow]` from `subscribe()` and `describe` from `recent()`.

    {"time": "2026-11-24T17:00:00.000Z", "domain": "web-1", "event": "started",
     "detail": "booted", "state": "running", "reason": "booted", "cause": "manifest",
     "causeDetail": {"generation": "3f2a..."}, "message": ""}

Files (`events.jsonl`, `audit.jsonl`) are opened once in append mode and flushed per line, so a
crash loses at most the line being written; a file about to pass `max_bytes` is renamed to
`<file>.1` (replacing the previous one) and started afresh. A write error is logged and the
event still reaches subscribers: losing a log line must never stop the controller.

Subscribers get their own bounded queue. One that falls `subscriber_queue` events behind is
dropped: it receives what was queued, then one marker record `{"marker": "dropped", ...}`, then
the end of iteration; emit never waits for a reader.

Public surface:
    (EventSettings: controller/settings.py)
    EventBus(state_dir, settings, wall_clock=time.time): emit(...) -> dict,
        subscribe(name_filter=None) -> Subscription, recent(name | None, n=10) -> list[dict],
        close()
    Subscription: async iterator of records; close()
    AuditLog(state_dir, settings, wall_clock=time.time): record(...) -> dict, close()
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from controller.protocol import rfc3339
from controller.settings import EventSettings
from reconcilers.model import (
    DETAILS_BY_EVENT,
    REASONS_BY_STATE,
    Cause,
    EventDetail,
    EventType,
    Reason,
    State,
)

log = structlog.get_logger(__name__)

Record = dict[str, Any]


class _JsonLines:
    """An append-only JSON-lines file with single-generation size rotation."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.rotated = path.with_name(path.name + ".1")
        self._max_bytes = max_bytes
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the daemon's lifetime
        self._size = os.fstat(self._file.fileno()).st_size

    def append(self, record: Record) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            if self._size > 0 and self._size + len(data) > self._max_bytes:
                self._rotate_or_grow()
            self._file.write(data)
            self._file.flush()
            self._size += len(data)
        except OSError as err:
            log.error("could not append to log file; record dropped, continuing",
                      path=str(self.path), error=str(err))

    def _rotate_or_grow(self) -> None:
        # Rename while still open: if the rename fails we keep appending to the current file.
        try:
            os.replace(self.path, self.rotated)
        except OSError as err:
            log.error("could not rotate log file; appending past the limit", path=str(self.path),
                      error=str(err))
            return
        self._file.close()
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def tail(self, domain: str | None, n: int) -> list[Record]:
        """The last `n` records of `domain` (None: of all), oldest first, across the rotated
        file too."""
        last: deque[Record] = deque(maxlen=n)
        for path in (self.rotated, self.path):
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash
                if isinstance(record, dict) and domain in (None, record.get("domain")):
                    last.append(record)
        return list(last)

    def close(self) -> None:
        self._file.close()


_END = object()


class Subscription:
    """Live records for one reader; iterate with `async for`, end with `close()`."""

    def __init__(self, name_filter: str | None, limit: int,
                 unsubscribe: Callable[[Subscription], None], marker: Callable[[], Record]) -> None:
        self.name_filter = name_filter
        self._limit = limit
        # Bounded by offer(), not by maxsize, so the end sentinel always fits.
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._unsubscribe = unsubscribe
        self._marker = marker
        self._ended = False
        self._dropped = False
        self._finished = False

    def offer(self, record: Record) -> None:
        if self._ended or (self.name_filter is not None and record["domain"] != self.name_filter):
            return
        if self._queue.qsize() >= self._limit:
            self._dropped = True
            log.warning("event subscriber fell behind; dropped", limit=self._limit)
            self.close()
            return
        self._queue.put_nowait(record)

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            self._unsubscribe(self)
            self._queue.put_nowait(_END)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Record:
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._finished = True
            if self._dropped:
                return self._marker()
            raise StopAsyncIteration
        assert isinstance(item, dict)
        return item


class EventBus:
    def __init__(self, state_dir: Path, settings: EventSettings = EventSettings(),
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._wall_clock = wall_clock
        self._log = _JsonLines(state_dir / "events.jsonl", settings.max_bytes)
        self._subscribers: list[Subscription] = []

    def emit(self, domain: str, event: EventType, detail: EventDetail, state: State,
             reason: Reason, cause: Cause, cause_detail: Mapping[str, Any] | None = None,
             message: str = "") -> Record:
        """Record one lifecycle event; raises ValueError for a pair libvirt does not have."""
        if detail not in DETAILS_BY_EVENT[event]:
            raise ValueError(f"event {event.value} has no detail {detail.value}")
        if reason not in REASONS_BY_STATE[state]:
            raise ValueError(f"state {state.value} has no reason {reason.value}")
        record: Record = {
            "time": rfc3339(self._wall_clock()), "domain": domain, "event": event.value,
            "detail": detail.value, "state": state.value, "reason": reason.value,
            "cause": cause.value, "causeDetail": dict(cause_detail or {}), "message": message,
        }
        self._log.append(record)
        for subscriber in list(self._subscribers):
            subscriber.offer(record)
        return record

    def subscribe(self, name_filter: str | None = None) -> Subscription:
        """Records emitted from now on (all domains, or only `name_filter`)."""
        subscription = Subscription(name_filter, self._settings.subscriber_queue,
                                    self._subscribers.remove, self._dropped_marker)
        self._subscribers.append(subscription)
        return subscription

    def _dropped_marker(self) -> Record:
        return {"time": rfc3339(self._wall_clock()), "marker": "dropped",
                "message": "subscriber fell behind and was dropped; events were lost"}

    def recent(self, name: str | None, n: int = 10) -> list[Record]:
        return self._log.tail(name, n)

    def close(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.close()
        self._log.close()


class AuditLog:
    """One line per action the controller takes, with who asked for it."""

    def __init__(self, state_dir: Path, settings: EventSettings = EventSettings(),
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._wall_clock = wall_clock
        self._log = _JsonLines(state_dir / "audit.jsonl", settings.max_bytes)

    def record(self, domain: str, action: str, cause: Cause,
               cause_detail: Mapping[str, Any] | None = None, message: str = "") -> Record:
        """`action` is the plan step ("start", "shutdown", ...); `cause_detail` who asked:
        {"generation": ...} for the manifest, {"uid": ...} for the API."""
        record: Record = {
            "time": rfc3339(self._wall_clock()), "domain": domain, "action": action,
            "cause": cause.value, "causeDetail": dict(cause_detail or {}), "message": message,
        }
        self._log.append(record)
        return record

    def recent(self, name: str, n: int = 10) -> list[Record]:
        return self._log.tail(name, n)

    def close(self) -> None:
        self._log.close()
