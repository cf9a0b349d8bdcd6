"""Tell the network engine when dnsmasq rewrites a lease file, so new addresses show at once.

A guest's DHCP lease arrives seconds after its domain's pass ended; without this, its address
would reach the status only at the next resync. dnsmasq rewrites `<network>.leases` in place
on every lease change (truncate and write, the file kept open: so modifications count, not
only closes); inotify (watchdog, the library the manifest source uses) reports the write, and
`on_change(network)` runs on the event loop. Never reads the files (the network pass does),
never raises out of the observer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = structlog.get_logger(__name__)

SUFFIX = ".leases"


class _Handler(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[str], None]) -> None:
        self._loop = loop
        self._on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = event.dest_path if isinstance(event, FileMovedEvent) else event.src_path
        name = Path(str(path)).name
        if name.endswith(SUFFIX) and not name.startswith("."):
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._on_change, name[:-len(SUFFIX)])


class LeaseWatch:
    """Watches `directory` (dnsmasq's files) until `close()`."""

    def __init__(self, directory: Path, on_change: Callable[[str], None]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._observer = Observer()
        handler = _Handler(asyncio.get_running_loop(), on_change)
        self._observer.schedule(handler, str(directory), recursive=False,
                                event_filter=[FileCreatedEvent, FileModifiedEvent,
                                              FileClosedEvent, FileMovedEvent])
        self._observer.daemon = True
        self._observer.start()

    def close(self) -> None:
        self._observer.stop()  # not joined: the thread is a daemon and ends by itself
