"""Settings of the qemu driver and where each domain's files live.

Built once by whoever constructs QemuDriver (the controller's wiring, or a test) and passed
down; nothing here touches the file system except `DomainFiles.prepare`, which creates the
runtime directory. Paths come only from the DriverContext directories, the storage pool's
directory and a domain name the manifest loader has already checked against
`[a-z0-9][a-z0-9_.-]{0,62}` (and reconcilers/storage/pool.py again): never from any other
manifest value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconcilers.storage.firmware import Ovmf
from reconcilers.storage.pool import DomainPool


@dataclass(frozen=True)
class QemuSettings:
    """How the qemu driver runs qemu on this host."""

    binary: str = "qemu-system-x86_64"
    """The emulator, a PATH name or an absolute path."""
    cgroup_parent: str = "domctl.qemu"
    """Directory created under each cgroup hierarchy; each domain gets `<parent>/<name>`."""
    vnc_port_min: int = 5900
    """First TCP port tried for `vnc.port: auto`."""
    vnc_port_max: int = 5999
    """Last TCP port tried for `vnc.port: auto`."""
    monitor_timeout: float = 5.0
    """Seconds for one QMP command or connect."""
    start_timeout: float = 15.0
    """Seconds for qemu to write its pidfile and answer on its QMP socket."""
    kill_grace: float = 3.0
    """Seconds between SIGTERM and SIGKILL on destroy."""
    pool_dir: Path | None = None
    """The storage pool (`--pool`): the volumes, seeds and UEFI variables domctl makes,
    `<pool>/<domain>/...` (reconcilers/storage/pool.py); None: `<state dir>/pool`."""


@dataclass(frozen=True)
class DomainFiles:
    """The files of one domain under the DriverContext directories."""

    runtime: Path  # <runtime_dir>/qemu
    log_dir: Path
    name: str
    pool: DomainPool | None = None  # <pool>/<name>: its volumes, seed, UEFI variables
    ovmf: Ovmf | None = None  # the host's OVMF, found by the host check of a uefi domain

    @property
    def qmp(self) -> Path:
        return self.runtime / f"{self.name}.qmp"

    @property
    def pidfile(self) -> Path:
        return self.runtime / f"{self.name}.pid"

    @property
    def serial(self) -> Path:
        return self.runtime / f"{self.name}.serial"

    @property
    def agent(self) -> Path:
        return self.runtime / f"{self.name}.qga"

    @property
    def stderr(self) -> Path:
        """qemu's stderr once it has daemonized (`-D`): its last words if it dies."""
        return self.runtime / f"{self.name}.stderr"

    @property
    def vnc_secret(self) -> Path:
        return self.runtime / f"{self.name}.vnc-secret"

    @property
    def spec(self) -> Path:
        """The running domain's spec with the live changes applied since (livespec.py)."""
        return self.runtime / f"{self.name}.spec.json"

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def stale(self) -> tuple[Path, ...]:
        """What a previous run may have left behind; removed before a launch."""
        return (self.qmp, self.pidfile, self.serial, self.agent, self.vnc_secret, self.stderr,
                self.spec)

    def prepare(self) -> None:
        self.runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True)


def domain_files(runtime_dir: Path, log_dir: Path, name: str) -> DomainFiles:
    return DomainFiles(runtime=runtime_dir / "qemu", log_dir=log_dir, name=name)
