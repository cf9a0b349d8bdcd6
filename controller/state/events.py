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

Crash-only start-up (issue 11 point 3): a file whose last line is torn (a crash mid-write, a
full disk) is reported and the next record starts on a new line, so the torn line is the only
one lost and every record written after it reads back; readers skip a line that is not a JSON
object. A log path that cannot be a log (a directory, a symlink, a FIFO, unopenable) is moved
aside (fsutil.quarantine) and a fresh file started; if even that fails the controller runs
without the file (records still reach subscribers; each lost write is logged). A reader never
loads more than the last `max_bytes` of a file, however large a planted one is.

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
import errno
import json
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from controller.protocol import rfc3339
from controller.settings import EventSettings
from controller.state.fsutil import quarantine
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

NETWORK_DETAILS: Mapping[EventType, frozenset[str]] = {
    EventType.DEFINED: frozenset({"added", "updated"}),
    EventType.UNDEFINED: frozenset({"removed"}),
    EventType.STARTED: frozenset({"created", "repaired"}),
    EventType.STOPPED: frozenset({"removed", "broken"}),
}


def subject(record: Record) -> Any:
    """The name a record is about: a domain's, or a network's."""
    return record.get("domain", record.get("network"))


class _JsonLines:
    """An append-only JSON-lines file with single-generation size rotation."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.rotated = path.with_name(path.name + ".1")
        self._max_bytes = max_bytes
        self._fd: int | None = None
        self._size = 0
        self._new_line = False  # the file does not end with a newline: start a line first
        self._open()

    def _open(self) -> None:
        """Open (creating) the log for appending; a path that cannot be one is moved aside."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
            except OSError as err:
                why = "a symlink" if err.errno == errno.ELOOP else err.strerror or str(err)
                if err.errno in (errno.EINTR, errno.EMFILE, errno.ENFILE, errno.ENOMEM) \
                        or quarantine(self.path, f"log file unusable: {why}") is None:
                    break
                continue
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                if quarantine(self.path, "log file is not a regular file") is None:
                    break
                continue
            self._fd, self._size = fd, st.st_size
            self._new_line = self._size > 0 and os.pread(fd, 1, self._size - 1) != b"\n"
            if self._new_line:
                log.warning("log file's last line is torn; it is skipped and new records start "
                            "on a new line", path=str(self.path))
            return
        log.error("log file cannot be opened; running without it (records still reach "
                  "subscribers)", path=str(self.path))

    def append(self, record: Record) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            if self._size > 0 and self._size + len(data) > self._max_bytes:
                self._rotate_or_grow()
            if self._fd is None:
                raise OSError(errno.EBADF, "log file not open")
            if self._new_line:
                data = b"\n" + data
            written = os.write(self._fd, data)
            self._size += written
            if written < len(data):  # a full disk mid-line: the next record starts afresh
                self._new_line = True
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            self._new_line = False
        except OSError as err:
            self._new_line = True  # whatever reached the file, the next record gets a new line
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
        self.close()
        self._size, self._new_line = 0, False
        self._open()

    def tail(self, domain: str | None, n: int) -> list[Record]:
        """The last `n` records of `domain` (None: of all), oldest first, across the rotated
        file too; lines that are no JSON object (torn by a crash, garbage) are skipped."""
        last: deque[Record] = deque(maxlen=n)
        for path in (self.rotated, self.path):
            for line in self._last_lines(path):
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    continue  # a line torn by a crash
                if isinstance(record, dict) and domain in (None, subject(record)):
                    last.append(record)
        return list(last)

    def _last_lines(self, path: Path) -> list[bytes]:
        """The complete lines in the last `max_bytes` of `path` ([] if it cannot be read)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as err:
            log.warning("log file unreadable; skipped", path=str(path), error=str(err))
            return []
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - self._max_bytes)
            data = os.pread(fd, size - start, start) if stat.S_ISREG(os.fstat(fd).st_mode) \
                else b""
        except OSError as err:
            log.warning("log file unreadable; skipped", path=str(path), error=str(err))
            return []
        finally:
            os.close(fd)
        lines = data.split(b"\n")
        return lines[1:] if start > 0 else lines  # the first may be the end of a cut line

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
        if self._ended or (self.name_filter is not None and subject(record) != self.name_filter):
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
        return self._publish(record)

    def emit_network(self, network: str, event: EventType, detail: str, cause: Cause,
                     cause_detail: Mapping[str, Any] | None = None,
                     message: str = "") -> Record:
        """Record one event of a managed network: defined/added|updated, started/created|
        repaired, stopped/removed|broken, undefined/removed. A network has no state reason,
        so its records carry `network` and `kind` where a domain's carry `domain`, state and
        reason."""
        if event not in NETWORK_DETAILS or detail not in NETWORK_DETAILS[event]:
            raise ValueError(f"a network has no event {event.value}/{detail}")
        record: Record = {
            "time": rfc3339(self._wall_clock()), "kind": "Network", "network": network,
            "event": event.value, "detail": detail, "cause": cause.value,
            "causeDetail": dict(cause_detail or {}), "message": message,
        }
        return self._publish(record)

    def _publish(self, record: Record) -> Record:
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
