"""ManifestSource: watch the manifests directory and hand complete snapshots of it to the loop.

Called by the daemon, which builds one `ManifestSource(directory, on_change, settings)`, awaits
`start()` (a first full scan, delivered to `on_change`) and `stop()` at shutdown. Every snapshot
is a full re-listing of the directory (DESIGN §1, notes/libraries.md §1): inotify events are only
hints that something changed. A watchdog observer (non-recursive watch on the directory) pokes
the loop with `call_soon_threadsafe`; pokes are coalesced by a trailing debounce, so the transient
states of an editor save, `sed -i` or `git checkout` (a file briefly missing or renamed) are never
seen; a full rescan also runs every `resync` seconds, which covers lost events (queue overflow),
a dead observer thread and a deleted or replaced directory (the watch is then re-created).

A file that vanished or became empty (holds no document) while it declared domains or networks
is not taken as their removal at once: the snapshot keeps its last result and the file is read
again after `recheck` seconds; only if it is still gone or empty then do they drop out. An in-place
rewrite (`truncate`, then `write`, as `>` in a shell or many editors do) read between the two
steps therefore never reaches the caller as a removal.

Loading runs in an executor thread, one scan at a time, and each file is bounded (regular files
only, at most `max_manifest_bytes`, limited nesting and aliases: loader.py and yamlsource.py),
so a huge or hostile file neither blocks the loop (the API, the domains' passes) nor holds up
the other files' changes for long.

A Snapshot carries the valid, non-conflicting domains; the problems of invalid files with, for
each, the names it declared at its last valid load (so the caller keeps those domains on their
last valid spec with ManifestValid=False); name conflicts; and `readable`, False when the
directory is missing or unreadable, in which case the caller must prune nothing.

Networks (`kind: Network`, in the same files) are carried whole rather than left to the
caller's memory: `networks` holds the valid, non-conflicting ones and also, for a file that is
invalid now, the networks it declared at its last valid load, on that spec (listed by file in
`network_names_by_file`), so an invalid edit never tears a network down. A network in a
conflict (its name, or its bridge, declared twice) is in `network_conflicts` and not in
`networks`, like a domain: the caller keeps it as it is while the conflict lasts. What the
source cannot know is a file that has been invalid since it started: its networks are absent
(the caller decides, as for domains).

Never acts on one event, never raises out of the observer thread (an exception there would kill
it silently), never blocks the loop on the observer's join, never writes to the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from controller.manifests.errors import ManifestError, Problem
from controller.manifests.loader import (
    Documents,
    dependency_cycles,
    is_manifest_name,
    load_file_documents,
    name_conflicts,
    network_conflicts,
)
from controller.settings import SourceSettings
from reconcilers.model import Domain
from reconcilers.net.model import Network

log = structlog.get_logger(__name__)

# Our own reads raise opened/closed-no-write events: leaving them out keeps a scan from
# scheduling the next one.
_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileAttribEvent, FileClosedEvent,
           FileMovedEvent, FileDeletedEvent, DirCreatedEvent, DirMovedEvent, DirDeletedEvent]

_FileKey = tuple[int, int, int, int]  # st_dev, st_ino, st_mtime_ns, st_size
_Loaded = Documents | ManifestError


@dataclass(frozen=True)
class Snapshot:
    domains: Mapping[str, Domain] = field(default_factory=dict)
    problems: Mapping[str, list[Problem]] = field(default_factory=dict)  # by file path
    names_by_file: Mapping[str, frozenset[str]] = field(default_factory=dict)  # invalid files
    conflicts: Mapping[str, list[Problem]] = field(default_factory=dict)  # by domain name
    readable: bool = True
    # valid and kept networks (see the module docstring), by name
    networks: Mapping[str, Network] = field(default_factory=dict)
    # invalid files: the networks each declared at its last valid load (kept in `networks`)
    network_names_by_file: Mapping[str, frozenset[str]] = field(default_factory=dict)
    network_conflicts: Mapping[str, list[Problem]] = field(default_factory=dict)  # by name


# The kernel's "this file is complete" signals (IN_CLOSE_WRITE, IN_MOVED_TO/FROM, IN_DELETE):
# a rescan may run at once. A file that vanished meanwhile is kept until re-checked, so a
# rename-away-then-back (vim) or a `git checkout` is never taken as a removal.
_COMPLETE = (FileClosedEvent, FileMovedEvent, FileDeletedEvent, DirMovedEvent, DirDeletedEvent)


class _Forward(FileSystemEventHandler):
    """Runs on the observer thread: one thread-safe poke, and nothing may escape it."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 poke: Callable[[bool], None]) -> None:
        self._loop = loop
        self._poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        with contextlib.suppress(Exception):  # a closed loop at shutdown, above all
            self._loop.call_soon_threadsafe(self._poke, isinstance(event, _COMPLETE))


class SnapshotAssembler:
    """What each file declares (or its error), by file, into a Snapshot: conflicts, dependency
    cycles, and each file's names at its last valid load, which an invalid file keeps.

    Shared by ManifestSource and the fleet's EtcdSource (controller/fleet/source.py), so a
    directory and etcd give the engine the same snapshots of the same files."""

    def __init__(self) -> None:
        self.last_names: dict[str, frozenset[str]] = {}  # file → its domains, last valid
        self.last_networks: dict[str, tuple[Network, ...]] = {}  # file → its networks, idem

    def assemble(self, loaded: Mapping[str, _Loaded]) -> Snapshot:
        """The snapshot of every file's result in `loaded` (files absent from it are
        forgotten)."""
        self.last_names = {f: n for f, n in self.last_names.items() if f in loaded}
        self.last_networks = {f: n for f, n in self.last_networks.items() if f in loaded}
        problems: dict[str, list[Problem]] = {}
        names_by_file: dict[str, frozenset[str]] = {}
        network_names_by_file: dict[str, frozenset[str]] = {}
        domains: list[Domain] = []
        networks: list[Network] = []
        for path, result in loaded.items():
            if isinstance(result, ManifestError):
                problems[path] = list(result.problems)
                names_by_file[path] = self.last_names.get(path, frozenset())
                kept = self.last_networks.get(path, ())
                network_names_by_file[path] = frozenset(n.name for n in kept)
                networks.extend(kept)
            else:
                domains.extend(result.domains)
                networks.extend(result.networks)
                self.last_names[path] = frozenset(d.name for d in result.domains)
                self.last_networks[path] = result.networks
        clashing = name_conflicts(domains)
        named = {(p.file, p.line) for p in clashing}
        clashing += dependency_cycles(d for d in domains
                                      if (d.source.file, d.source.line) not in named)
        conflicts = _by_name(clashing, domains)
        valid = {d.name: d for d in domains if d.name not in conflicts}
        clashes = _by_name(network_conflicts(networks), networks)
        kept_networks = {n.name: n for n in networks if n.name not in clashes}
        return Snapshot(domains=MappingProxyType(valid), problems=MappingProxyType(problems),
                        names_by_file=MappingProxyType(names_by_file),
                        conflicts=MappingProxyType(conflicts), readable=True,
                        networks=MappingProxyType(kept_networks),
                        network_names_by_file=MappingProxyType(network_names_by_file),
                        network_conflicts=MappingProxyType(clashes))


class ManifestSource:
    def __init__(self, directory: Path, on_change: Callable[[Snapshot], None],
                 settings: SourceSettings | None = None) -> None:
        self.directory = Path(directory)
        self._on_change = on_change
        self._settings = settings or SourceSettings()
        self._cache: dict[str, tuple[_FileKey, _Loaded]] = {}
        self._assembler = SnapshotAssembler()
        self._shown: dict[str, _Loaded] = {}  # what the last snapshot took from each file
        self._suspects: dict[str, float] = {}  # file → when it was first seen gone or empty
        self._recheck: asyncio.TimerHandle | None = None
        self._observer: BaseObserver | None = None
        self._watched: tuple[int, int] | None = None  # st_dev, st_ino of the watched directory
        self._scan_lock = asyncio.Lock()
        self._debounce: asyncio.TimerHandle | None = None
        self._cycle_due = False  # a rescan is queued and has not begun: more pokes join it
        self._tasks: set[asyncio.Task[None]] = set()
        self._resync_task: asyncio.Task[None] | None = None
        self._stopped = True

    async def start(self) -> None:
        """Watch, then deliver a first full snapshot, then rescan every `resync` seconds."""
        self._stopped = False
        await self._ensure_watch()
        await self.rescan()
        self._resync_task = asyncio.create_task(self._resync_forever())

    async def stop(self) -> None:
        self._stopped = True
        for timer in (self._debounce, self._recheck):
            if timer is not None:
                timer.cancel()
        tasks = [*self._tasks, *([self._resync_task] if self._resync_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._unwatch()

    async def rescan(self) -> Snapshot:
        """Re-list and load the directory now; the snapshot goes to on_change and is returned."""
        async with self._scan_lock:
            loop = asyncio.get_running_loop()
            snapshot, recheck = await loop.run_in_executor(None, self._scan)
            if recheck and not self._stopped:
                if self._recheck is not None:
                    self._recheck.cancel()
                self._recheck = loop.call_later(self._settings.recheck, self._poke, True)
            log.debug("manifests scanned", directory=str(self.directory),
                      domains=len(snapshot.domains), networks=len(snapshot.networks),
                      invalid=len(snapshot.problems),
                      conflicts=len(snapshot.conflicts) + len(snapshot.network_conflicts),
                      readable=snapshot.readable)
            self._on_change(snapshot)
            return snapshot

    # -- loop side of the watch ---------------------------------------------------------------

    def _poke(self, complete: bool) -> None:
        """Something changed. A complete write (closed, moved in, deleted) is rescanned at
        once; any other event (a write still open) only after `debounce` seconds of quiet,
        for writers that never close (an mmap, a process holding the file). Pokes while a
        rescan is queued join it; one during a scan queues exactly one more."""
        if self._stopped:
            return
        if self._debounce is not None:
            self._debounce.cancel()
            self._debounce = None
        if complete:
            self._spawn_cycle()
        else:
            self._debounce = asyncio.get_running_loop().call_later(
                self._settings.debounce, self._spawn_cycle)

    def _spawn_cycle(self) -> None:
        self._debounce = None
        if self._cycle_due:
            return
        self._cycle_due = True
        task = asyncio.create_task(self._cycle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.resync)
            await self._cycle()

    async def _cycle(self) -> None:
        """Repair the watch if needed, then rescan; a failure is logged and the next one retried."""
        self._cycle_due = False  # from here on a new poke queues another rescan
        try:
            await self._ensure_watch()
            await self.rescan()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("manifest rescan failed", directory=str(self.directory))

    async def _ensure_watch(self) -> None:
        """Re-create the observer if it died, lost its watch, or the directory was replaced."""
        identity = _dir_identity(self.directory)
        if self._observer is not None and self._watch_healthy(identity):
            return
        if self._observer is not None:
            log.warning("manifest watch lost, re-creating it", directory=str(self.directory))
            await self._unwatch()
        if identity is None:
            return  # the directory is missing: the next resync tries again
        observer = Observer()
        try:
            observer.schedule(_Forward(asyncio.get_running_loop(), self._poke),
                              str(self.directory), recursive=False, event_filter=_EVENTS)
            observer.start()
        except OSError as err:
            log.warning("cannot watch manifests directory", directory=str(self.directory),
                        error=str(err))
            return
        self._observer, self._watched = observer, identity

    def _watch_healthy(self, identity: tuple[int, int] | None) -> bool:
        observer = self._observer
        assert observer is not None
        return (identity == self._watched and observer.is_alive()
                and bool(observer.emitters) and all(e.is_alive() for e in observer.emitters))

    async def _unwatch(self) -> None:
        observer, self._observer, self._watched = self._observer, None, None
        if observer is None:
            return

        def stop_and_join() -> None:
            observer.stop()
            if observer.is_alive():
                observer.join()

        await asyncio.get_running_loop().run_in_executor(None, stop_and_join)

    # -- the scan, run in an executor thread, one at a time (scan lock) --------------------------

    def _scan(self) -> tuple[Snapshot, bool]:
        """The snapshot, and whether a file must be read again (a suspected removal)."""
        try:
            with os.scandir(self.directory) as entries:
                # not only regular files: a FIFO or device named *.yaml is reported, not skipped
                paths = sorted(str(self.directory / e.name) for e in entries
                               if is_manifest_name(e.name) and not e.is_dir())
        except OSError as err:
            log.warning("manifests directory unreadable: nothing will be pruned",
                        directory=str(self.directory), error=str(err))
            return Snapshot(readable=False), False
        loaded = {path: result for path in paths if (result := self._load(path)) is not None}
        recheck = self._hold_suspects(loaded)
        self._shown = dict(loaded)
        for stale in self._cache.keys() - loaded.keys():
            del self._cache[stale]
        return self._assembler.assemble(loaded), recheck

    def _hold_suspects(self, loaded: dict[str, _Loaded]) -> bool:
        """Keep the last result of a file that declared domains or networks and is now gone
        or empty, until it has been so for `recheck` seconds; True while any file is held."""
        now, held = time.monotonic(), False
        for path, previous in self._shown.items():
            current = loaded.get(path)
            domains = self._assembler.last_names.get(path, frozenset())
            networks = self._assembler.last_networks.get(path, ())
            if not (domains or networks) or (current is not None and current != Documents()):
                self._suspects.pop(path, None)
                continue
            since = self._suspects.setdefault(path, now)
            if now - since < self._settings.recheck:
                loaded[path] = previous
                held = True
                log.info("manifest file gone or empty: read again before what it declared "
                         "counts as removed", file=path, names=sorted(domains),
                         networks=sorted(n.name for n in networks))
            else:
                del self._suspects[path]
        for path in self._suspects.keys() - self._shown.keys():
            del self._suspects[path]
        return held

    def _load(self, path: str) -> _Loaded | None:
        """What a file declares or its error, from the cache while unchanged; None if it
        vanished."""
        try:
            st = os.stat(path)  # follows symlinks: a ConfigMap `..data` swap changes the inode
        except FileNotFoundError:
            return None
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            result: _Loaded = load_file_documents(path, self._settings.max_manifest_bytes)
        except ManifestError as err:
            if _vanished(path):
                return None
            result = err
        self._cache[path] = (key, result)
        return result


def _by_name(clashes: list[Problem],
             declared: list[Domain] | list[Network]) -> dict[str, list[Problem]]:
    """The problems of a conflict check, by the name of the document each one is about."""
    names_at = {(d.source.file, d.source.line): d.name for d in declared}
    by_name: dict[str, list[Problem]] = {}
    for problem in clashes:
        by_name.setdefault(names_at[(problem.file, problem.line)], []).append(problem)
    return by_name


def _dir_identity(directory: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _vanished(path: str) -> bool:
    """True when the file is gone now (removed between listing and reading)."""
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ENOENT
    return False
