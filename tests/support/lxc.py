"""Real LXC for the driver tier and the contract tests: one busybox host per session.

An LxcHost is a state dir (the private lxcpath, the cached busybox rootfs) and a log dir;
every container name it hands out is recorded, so the test that asked for it can sweep it away
afterwards, also when the test failed. `in_scratch` puts one where unprivileged containers (the
default) can run: LXC requires their root, a mapped id, to search every directory above the
lxcpath, and pytest's own temporary directories are 0700 (and reset so at each session start).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from reconcilers.driver import DriverContext, RuntimeEvent
from reconcilers.lxc import rootfs
from tests.support.cleanup import scratch_dir, sweep


@dataclass
class LxcHost:
    """The session's state/log dirs and every container name handed out."""

    state_dir: Path
    log_dir: Path
    names: list[str] = field(default_factory=list)

    @classmethod
    def with_busybox(cls, base: Path) -> LxcHost:
        """A host under `base` with the busybox rootfs built (and cached there) once."""
        host = cls(state_dir=base / "state", log_dir=base / "log")
        rootfs.busybox_rootfs(host.state_dir / "lxc-rootfs")
        return host

    @classmethod
    @contextlib.contextmanager
    def in_scratch(cls, kind: str) -> Iterator[LxcHost]:
        """A busybox host in a new scratch dir any id may search (mode 0711); its containers
        and the dir are removed at the end."""
        base = scratch_dir(kind, 0o711)
        host = cls.with_busybox(base)
        try:
            yield host
        finally:
            host.sweep(host.names)
            sweep(remove=[base])

    @property
    def lxcpath(self) -> Path:
        return self.state_dir / "lxc"

    def context(self, on_event: Callable[[RuntimeEvent], None]) -> DriverContext:
        return DriverContext(runtime_dir=self.state_dir / "run", state_dir=self.state_dir,
                             log_dir=self.log_dir, on_event=on_event)

    def name(self, prefix: str) -> str:
        name = f"t-{prefix}-{uuid.uuid4().hex[:6]}"
        self.names.append(name)
        return name

    def sweep(self, names: list[str]) -> None:
        """Stop and delete the containers `names` (handed out by this host)."""
        sweep(lxcpath=self.lxcpath, containers=names)
