"""publish: mirror a manifests directory into etcd, all of it in one transaction or nothing.

`domctl publish --manifests DIR --etcd ENDPOINTS` (issue 18) runs `publish()`: the fleet's
desired state is written by one command from one directory (a git checkout, a CI job), never
edited key by key. In two steps, so a test can put another publish between them:

- `plan()` reads and validates every manifest file of the directory with the loader the
  directory source uses, and assembles them as it does (name and bridge conflicts, dependsOn
  cycles): any problem refuses the whole publish (PublishRefused, every problem as
  `file:line:column: field: message`) and nothing is written. A directory that hosts would
  partly reject is never published, unlike a watched directory, where an invalid file keeps
  its domains on their last valid spec: there, nobody is there to be told. It then reads what
  etcd holds, and refuses (PruneHeld) a publish that removes more than half of the published
  domains, and more than `guard_min` of them, unless `confirm_prune` (the mass-prune guard of
  the directory source, asked before anything is written since a publish has a user to ask).
- `commit()` writes the files that changed and deletes the ones gone, with the publish record,
  in ONE transaction that holds only if no manifest key was written since the plan's read and
  the publish record is the one read (a deletion writes it too): a concurrent publish makes it
  fail with PublishConflict, and the caller plans again. Unchanged files are not rewritten, so
  hosts watching see only what changed.

Files are stored by their name in the directory (keys.py: manifests/<file>): hosts load them
under that name, so their file:line errors name the file a user edits. etcd bounds a
transaction (128 operations, 1.5 MiB by default: `--max-txn-ops`, `--max-request-bytes`); a
publish over the bounds is refused by etcd, whole.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from controller.fleet.keys import Keys, ManifestRecord, PublishRecord
from controller.fleet.store import Compare, Delete, EtcdStore, KeyValue, Put
from controller.manifests.errors import Problem
from controller.manifests.loader import (
    MAX_BYTES,
    Documents,
    ManifestError,
    load_documents,
    manifest_files,
    read_manifest_text,
)
from controller.manifests.source import SnapshotAssembler
from controller.protocol import rfc3339
from controller.settings import PruneSettings

log = structlog.get_logger(__name__)


class PublishRefused(Exception):
    """The directory is not valid as a whole: nothing was written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.field))
        super().__init__("\n".join(map(str, self.problems)))


class PruneHeld(Exception):
    """The publish would remove most domains: nothing was written (confirm_prune to pass)."""

    def __init__(self, removing: list[str], published: int) -> None:
        self.removing = removing
        super().__init__(f"this publish removes {len(removing)} of the {published} published "
                         f"domains ({', '.join(removing)}): confirm the prune to publish it")


class PublishConflict(Exception):
    """Another publish was written between this one's read and its write: nothing was
    written; plan again."""


@dataclass(frozen=True)
class Plan:
    directory: Path
    records: Mapping[str, ManifestRecord]  # every file of the directory, by name
    current: Mapping[str, KeyValue]  # what etcd held, by file name
    published: KeyValue | None  # the publish record read
    revision: int  # etcd's revision when read

    @property
    def changed(self) -> list[str]:
        return sorted(name for name, record in self.records.items()
                      if name not in self.current
                      or self.current[name].value != record.encode())

    @property
    def removed(self) -> list[str]:
        return sorted(self.current.keys() - self.records.keys())


@dataclass(frozen=True)
class PublishResult:
    revision: int  # etcd's revision with this publish in it (the read one when unchanged)
    written: tuple[str, ...]
    deleted: tuple[str, ...]


async def publish(directory: Path, store: EtcdStore, keys: Keys, *,
                  confirm_prune: bool = False, max_bytes: int = MAX_BYTES,
                  guard_min: int = PruneSettings.guard_min) -> PublishResult:
    return await commit(await plan(directory, store, keys, confirm_prune=confirm_prune,
                                   max_bytes=max_bytes, guard_min=guard_min),
                        store, keys)


async def plan(directory: Path, store: EtcdStore, keys: Keys, *, confirm_prune: bool = False,
               max_bytes: int = MAX_BYTES, guard_min: int = PruneSettings.guard_min) -> Plan:
    """What a publish of `directory` would write (PublishRefused, PruneHeld: see above)."""
    records = _validated(Path(directory), max_bytes)
    listing = await store.get_prefix(keys.manifests)
    current = {keys.file_of(kv.key): kv for kv in listing.kvs}
    published = await store.get(keys.published)
    result = Plan(Path(directory), records, current, published, listing.revision)
    before = _published_domains(current)
    after = {name for record in records.values() for name in record.domains}
    removing = sorted(before - after)
    if not confirm_prune and len(removing) > guard_min and len(removing) > len(before) / 2:
        raise PruneHeld(removing, len(before))
    return result


async def commit(plan: Plan, store: EtcdStore, keys: Keys) -> PublishResult:
    """Write the plan in one transaction (PublishConflict when etcd changed since its read)."""
    changed, removed = plan.changed, plan.removed
    if not changed and not removed:
        return PublishResult(plan.revision, (), ())
    record = PublishRecord(source=f"{socket.gethostname()}:{plan.directory}",
                           files=len(plan.records), at=rfc3339(time.time()))
    operations: list[Put | Delete] = [Put(keys.manifest(name), plan.records[name].encode())
                                      for name in changed]
    operations += [Delete(keys.manifest(name)) for name in removed]
    operations.append(Put(keys.published, record.encode()))
    published = plan.published.mod_revision if plan.published is not None else 0
    answer = await store.txn([Compare.unchanged_since(keys.manifests, plan.revision),
                              Compare.mod_revision(keys.published, published)], operations)
    if not answer.succeeded:
        raise PublishConflict("another publish was written meanwhile; nothing was written")
    log.info("published", directory=str(plan.directory), revision=answer.revision,
             written=changed, deleted=removed)
    return PublishResult(answer.revision, tuple(changed), tuple(removed))


def _validated(directory: Path, max_bytes: int) -> dict[str, ManifestRecord]:
    """Every manifest file of the directory as a record, or PublishRefused with every problem
    (the files', then conflicts and cycles as the directory source finds them)."""
    if not directory.is_dir():
        raise PublishRefused([Problem(str(directory), 1, 1, "(directory)",
                                      "not a directory")])
    texts: dict[str, str] = {}
    loaded: dict[str, Documents | ManifestError] = {}
    for path in manifest_files([directory]):
        try:
            texts[path.name] = read_manifest_text(path, max_bytes)
            loaded[str(path)] = load_documents(texts[path.name], str(path))
        except ManifestError as err:
            loaded[str(path)] = err
    snapshot = SnapshotAssembler().assemble(loaded)
    problems = [p for found in snapshot.problems.values() for p in found]
    problems += [p for found in (*snapshot.conflicts.values(),
                                 *snapshot.network_conflicts.values()) for p in found]
    if problems:
        raise PublishRefused(problems)
    return {Path(path).name: ManifestRecord(
                file=Path(path).name, text=texts[Path(path).name],
                domains=tuple(d.name for d in result.domains),
                networks=tuple(n.name for n in result.networks))
            for path, result in loaded.items() if isinstance(result, Documents)}


def _published_domains(current: Mapping[str, KeyValue]) -> set[str]:
    names: set[str] = set()
    for kv in current.values():
        try:
            names.update(ManifestRecord.decode(kv.key, kv.value).domains)
        except ValueError:
            continue  # not ours: counted as no domain, and replaced by this publish
    return names
