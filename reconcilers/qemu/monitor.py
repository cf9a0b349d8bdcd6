"""The QMP connection of one qemu domain: the only module that imports qemu.qmp.

Used by QemuDriver (one Monitor per running domain) and by capabilities.py (a short-lived
Monitor on a `-machine none` probe process); commands go through commands.py, which names
each one and types its reply. Every call has a timeout; qemu.qmp's errors are translated into
MonitorError here and never leave this module raw.

Events go straight from qemu.qmp's reader to a callback: the library's default listener, whose
history grows without bound (libraries.md §2), is muted, and our listener keeps no history and
no queue. The callback runs on the event loop and must not block.

It must never decide anything about a domain's state: it only carries commands and events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, QMPClient, QMPError
from qemu.qmp.message import Message

DEFAULT_TIMEOUT = 5.0  # seconds for a connect or a command

EventCallback = Callable[[str, Mapping[str, Any]], None]


class MonitorError(Exception):
    """A QMP command failed, timed out, or the connection is gone; `message` says which."""

    def __init__(self, command: str, message: str) -> None:
        self.command = command
        self.message = message
        super().__init__(f"{command}: {message}")


class _CallbackListener(EventListener):
    """Hands each event to a callback; keeps neither history nor a queue."""

    def __init__(self, callback: EventCallback) -> None:
        super().__init__()
        self._callback = callback

    async def put(self, event: Message) -> None:
        data = event.get("data", {})
        self._callback(str(event["event"]), data if isinstance(data, Mapping) else {})


class Monitor:
    """One QMP client for one domain, on the controller's event loop."""

    def __init__(self, name: str, on_event: EventCallback | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self._client = QMPClient(f"vm:{name}")
        self._client.events.event_filter = lambda _event: False  # mute the unbounded default
        if on_event is not None:
            self._client.register_listener(_CallbackListener(on_event))
        self.timeout = timeout
        self._passing = asyncio.Lock()

    async def connect(self, socket: Path) -> None:
        try:
            await asyncio.wait_for(self._client.connect(str(socket)), self.timeout)
        except TimeoutError as exc:
            await self.close()
            raise MonitorError("connect", f"{socket}: no greeting within {self.timeout} s") from exc
        except (QMPError, OSError) as exc:
            await self.close()
            raise MonitorError("connect", f"{socket}: {exc}") from exc

    async def connect_path(self, socket: str) -> None:
        """`connect` for a path read from a record, which may be empty."""
        if not socket:
            raise MonitorError("connect", "no QMP socket recorded")
        await self.connect(Path(socket))

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None,
                      timeout: float | None = None) -> Any:
        """Run one command; MonitorError on a QMP error, a timeout or a lost connection."""
        try:
            return await asyncio.wait_for(
                self._client.execute(command, dict(arguments) if arguments else None),
                timeout or self.timeout)
        except TimeoutError as exc:
            raise MonitorError(command, f"no reply within {timeout or self.timeout} s") from exc
        except (QMPError, OSError, EOFError) as exc:
            raise MonitorError(command, str(exc) or type(exc).__name__) from exc

    async def execute_with_fd(self, command: str, arguments: Mapping[str, object], fd: int,
                              timeout: float | None = None) -> Any:
        """`execute` with `fd` passed over the socket first (SCM_RIGHTS), for the command that
        takes it (getfd); one at a time, so no other passed fd comes between the two."""
        async with self._passing:
            try:
                self._client.send_fd_scm(fd)
            except (QMPError, OSError) as exc:
                raise MonitorError(command, f"cannot pass fd: {exc}") from exc
            return await self.execute(command, arguments, timeout)

    async def close(self) -> None:
        """Disconnect; qemu keeps running. Safe to call twice and after qemu died."""
        with contextlib.suppress(QMPError, OSError, EOFError):
            await self._client.disconnect()
