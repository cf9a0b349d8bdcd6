"""What the fleet tests share: manifest files and a collector of the snapshots a source hands
out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controller.manifests.source import Snapshot
from tests.support import domains
from tests.support.waiting import async_wait_until


def write(directory: Path, file: str, *names: str, memory: str = "64Mi") -> Path:
    """`file` in `directory`, declaring a small qemu domain per name."""
    directory.mkdir(exist_ok=True)
    path = directory / file
    path.write_text("---\n".join(domains.manifest(domains.domain(name, memory=memory, uuid=None))
                                 for name in names))
    return path


def memory(snapshot: Snapshot) -> dict[str, int]:
    """Each domain's memory, by name: what changes between two publishes in these tests."""
    return {name: d.spec.memory for name, d in snapshot.domains.items()}


class Snapshots:
    """on_change for the tests: every snapshot, in order."""

    def __init__(self) -> None:
        self.seen: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot) -> None:
        self.seen.append(snapshot)

    async def wait_for(self, predicate: Callable[[Snapshot], bool], *,
                       timeout: float = 15.0) -> Snapshot:
        """The latest snapshot, once it satisfies `predicate`."""
        def latest() -> Snapshot | None:
            last = self.seen[-1] if self.seen else None
            return last if last is not None and predicate(last) else None
        return await async_wait_until(latest, "a matching snapshot", timeout=timeout,
                                      explain=lambda: f"last: {self.seen[-1:]}")
