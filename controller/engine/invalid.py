"""The invalid manifests no domain stands for: what `get`, `describe`, `wait` and metrics show.

An invalid file that declared domains when it was last valid shows through those domains'
status (ManifestValid=False, DesiredStore). A file that has been invalid ever since the
controller first saw it (a new VM pushed with a typo) names no domain: without this view it
would be visible in the controller's log only. `InvalidManifests` keeps, from every Snapshot,
those files and their problems, and names each after its file (`web.yaml` -> `web`): the name
inside a document that fails validation is not known to the controller (the loader gives the
problems only), and `NAME.yaml` is the convention `domctl wait NAME` already relies on.

It also counts the problems of every manifest file the snapshot knows (0 for a file of valid
domains) for the `domctl_manifest_problems{file}` gauge. Bookkeeping only: no file system.

Public surface:
    InvalidManifest(file, problems): name, message, to_dict()
    InvalidManifests(): apply(snapshot, kept_files), all(), named(name), problem_counts()
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import structlog

from controller.manifests.errors import Problem
from controller.manifests.source import Snapshot
from controller.protocol import INVALID_KIND

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class InvalidManifest:
    """An invalid manifest file that stands for no domain, with its problems in file order."""

    file: str
    problems: tuple[Problem, ...]

    @property
    def name(self) -> str:
        return PurePath(self.file).stem

    @property
    def message(self) -> str:
        """The first problem as `file:line:column: field: message`, and how many follow."""
        more = len(self.problems) - 1
        return str(self.problems[0]) + (f" (and {more} more)" if more > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": INVALID_KIND, "name": self.name, "file": self.file, "state": "-",
                "message": self.message, "problems": [p.to_dict() for p in self.problems]}


class InvalidManifests:
    def __init__(self) -> None:
        self._invalid: dict[str, InvalidManifest] = {}  # by file
        self._counts: dict[str, int] = {}

    def apply(self, snapshot: Snapshot, kept_files: Set[str]) -> None:
        """Take a snapshot; `kept_files` are the files some domain's last valid spec came
        from (their problems show in that domain's status). A new problem is logged once."""
        if not snapshot.readable:
            return
        invalid = {path: InvalidManifest(path, tuple(problems))
                   for path, problems in sorted(snapshot.problems.items())
                   if problems and path not in kept_files
                   and not snapshot.names_by_file.get(path)
                   and not snapshot.network_names_by_file.get(path)}
        seen = {str(p) for manifest in self._invalid.values() for p in manifest.problems}
        for manifest in invalid.values():
            for problem in manifest.problems:
                if str(problem) not in seen:
                    log.warning("invalid manifest", name=manifest.name, problem=str(problem))
        self._invalid = invalid
        counts = {domain.source.file: 0 for domain in snapshot.domains.values()}
        counts |= {network.source.file: 0 for network in snapshot.networks.values()}
        self._counts = counts | {path: len(found) for path, found in snapshot.problems.items()}

    def all(self) -> list[InvalidManifest]:
        return list(self._invalid.values())

    def named(self, name: str) -> list[InvalidManifest]:
        """The invalid manifests that go by `name` (`a.yaml` and `a.yml` both would)."""
        return [m for m in self._invalid.values() if m.name == name]

    def problem_counts(self) -> dict[str, int]:
        """Problems by manifest file: 0 for a valid one."""
        return dict(self._counts)
