"""The desired store: the last valid spec of every domain, and what keeps a domain from pruning.

The controller feeds it every `Snapshot` of the manifests directory (controller/manifests/source.py)
and reads, per name, what the reconciler should aim for (`desired(name)`) and what the status must
say about the manifest (`entry(name)`). DESIGN §3 and §5:

- A valid document replaces the domain's spec; its file and generation come with it.
- A name in an invalid file (by the names that file declared when it was last valid, or, after
  a controller restart, by the file its last valid spec came from) or in a name conflict
  keeps its last valid spec; the problems are reported (ManifestValid=False). A removal is
  only ever a file that is gone or holds no document of that name.
- A name that disappeared is kept for `grace` seconds (an editor save, a `git checkout` of
  another branch), then its desired spec becomes None: the reconciler stops and undefines it.
- A snapshot of a missing or unreadable directory prunes nothing.
- If the removals of the last `window` seconds are more than half of the known domains, and
  more than `guard_min` of them, those still pending are held and reported until
  `confirm_prune()` (`domctl prune --confirm`) or until the manifests come back.

Never touches a domain and never reads the file system: it is bookkeeping over the snapshots,
with an injected clock (monotonic seconds).

Public surface:
    Entry, DesiredStore(clock, settings)
    DesiredStore.apply(snapshot) -> set[str], seed(last_valid), desired(name), entry(name),
        names(), source_files(), removal_in(name), held(), confirm_prune() -> list[str],
        forget(name)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from controller.manifests.errors import Problem
from controller.manifests.source import Snapshot
from controller.settings import PruneSettings
from reconcilers.model import Domain

log = structlog.get_logger(__name__)


@dataclass
class Entry:
    """What the manifests say about one domain name."""

    domain: Domain | None = None  # the last valid spec (None: only known from the registry)
    problems: list[Problem] = field(default_factory=list)  # its file is invalid now
    conflicts: list[Problem] = field(default_factory=list)  # another document has its name
    missing_since: float | None = None  # no manifest declares it since then
    held: bool = False  # its removal waits for `domctl prune --confirm`


class DesiredStore:
    def __init__(self, clock: Callable[[], float],
                 settings: PruneSettings = PruneSettings()) -> None:
        self._clock = clock
        self._settings = settings
        self._entries: dict[str, Entry] = {}
        self._removed_at: dict[str, float] = {}  # names gone within the window, and when

    def seed(self, last_valid: Mapping[str, Domain | None]) -> None:
        """Domains known from an earlier run, with their last valid spec, before the first
        scan: a manifest that is invalid when the controller starts keeps its domain on it."""
        for name, domain in last_valid.items():
            self._entries.setdefault(name, Entry(domain=domain))

    def apply(self, snapshot: Snapshot) -> set[str]:
        """Take a new snapshot; the names whose desired view changed."""
        if not snapshot.readable:
            return set()
        changed: set[str] = set()
        declared = self._declared(snapshot) | self._kept_by_invalid_files(snapshot)
        for name, entry in self._entries.items():
            if name not in declared and entry.missing_since is None:
                changed.add(name)
        newly_missing = {n for n in changed if n not in declared}
        self._mark_missing(newly_missing)
        for name in declared:
            entry = self._entries.setdefault(name, Entry())
            before = (entry.domain, entry.problems, entry.conflicts, entry.missing_since)
            entry.domain = snapshot.domains.get(name, entry.domain)
            entry.problems = self._file_problems(snapshot, name, entry.domain)
            entry.conflicts = list(snapshot.conflicts.get(name, []))
            entry.missing_since, entry.held = None, False
            self._removed_at.pop(name, None)
            if before != (entry.domain, entry.problems, entry.conflicts, entry.missing_since):
                changed.add(name)
        return changed

    def _declared(self, snapshot: Snapshot) -> set[str]:
        """Every name some manifest declares, valid or not."""
        names = set(snapshot.domains) | set(snapshot.conflicts)
        for file_names in snapshot.names_by_file.values():
            names |= file_names
        return names

    def _kept_by_invalid_files(self, snapshot: Snapshot) -> set[str]:
        """Names whose last valid spec came from a file that is still there but invalid, and
        of which the source knows no names (it has not seen the file valid since it started)."""
        return {name for name, entry in self._entries.items()
                if entry.domain is not None and entry.domain.source.file in snapshot.problems
                and not snapshot.names_by_file.get(entry.domain.source.file)}

    @staticmethod
    def _file_problems(snapshot: Snapshot, name: str, domain: Domain | None) -> list[Problem]:
        files = {path for path, names in snapshot.names_by_file.items() if name in names}
        if domain is not None and not snapshot.names_by_file.get(domain.source.file):
            files.add(domain.source.file)
        return [problem for path in sorted(files) for problem in snapshot.problems.get(path, [])]

    def _mark_missing(self, names: set[str]) -> None:
        now = self._clock()
        for name in names:
            self._entries[name].missing_since = now
            self._removed_at[name] = now
        self._removed_at = {n: t for n, t in self._removed_at.items()
                            if now - t <= self._settings.window}
        recent = set(self._removed_at)
        total = len(set(self._entries) | recent)
        if len(recent) > self._settings.guard_min and len(recent) > total / 2:
            pending = sorted(n for n in recent if n in self._entries
                             and self._entries[n].missing_since is not None)
            log.warning("mass removal held: run `domctl prune --confirm` to remove them",
                        removing=len(recent), of=total, within=self._settings.window,
                        domains=pending)
            for name in pending:
                self._entries[name].held = True

    def desired(self, name: str) -> Domain | None:
        """The spec to reconcile towards; None once the domain is to be removed."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry.missing_since is not None and not entry.held and self.removal_in(name) <= 0:
            return None
        return entry.domain

    def removal_in(self, name: str) -> float:
        """Seconds until a vanished domain is removed (0 when due; inf when not vanishing)."""
        entry = self._entries.get(name)
        if entry is None or entry.missing_since is None or entry.held:
            return float("inf")
        return max(0.0, entry.missing_since + self._settings.grace - self._clock())

    def entry(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def source_files(self) -> set[str]:
        """The files the known domains' last valid specs came from."""
        return {e.domain.source.file for e in self._entries.values() if e.domain is not None}

    def held(self) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.held)

    def confirm_prune(self) -> list[str]:
        """Release every held removal now (the operator confirmed); the names released."""
        released = self.held()
        past = self._clock() - self._settings.grace
        for name in released:
            entry = self._entries[name]
            entry.held, entry.missing_since = False, past
            self._removed_at.pop(name, None)  # confirmed: no longer counts for the guard
        return released

    def forget(self, name: str) -> None:
        """The domain was undefined: drop it (a manifest adding it again starts afresh)."""
        self._entries.pop(name, None)
