"""The built-in `busybox` rootfs: built once from the host's busybox-static, then cached.

Called by storage.py before the driver renders a config for `rootfs: busybox`. The tree lives
under the driver's state dir, one directory per busybox binary and id map
(`busybox-<sha256 prefix>` owned by the host's root for privileged containers,
`busybox-<sha256 prefix>-<uid>-<gid>` shifted to a map's ids for unprivileged ones: shift.py),
and is the shared lower layer of every busybox container's overlay (each container writes to
its own upper dir, never here). The cache dir is mode 0755: an unprivileged container's root
reaches its lower layer from inside its user namespace. A tree is built in a temporary
directory renamed into place, and rebuilt when it is missing or no longer holds the binary its
stamp names. A tree is never deleted, since running containers may still have it mounted: a
broken one is only renamed aside. It never touches a user's rootfs directory.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import structlog

from reconcilers.lxc.idmap import IdMap
from reconcilers.lxc.shift import shift_tree

HOST_BUSYBOX = Path("/bin/busybox")  # Debian package busybox-static
STAMP = ".domctl-rootfs"
DIRS = ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root")
INITTAB = """\
# domctl built-in busybox rootfs: init waits; SIGPWR (lxc.signal.halt) powers off
::sysinit:/bin/echo "domctl busybox: up"
::shutdown:/bin/echo "domctl busybox: halting"
"""

log = structlog.get_logger(__name__)


class RootfsError(RuntimeError):
    """The busybox rootfs cannot be built (busybox-static missing, disk full, ...)."""


def busybox_rootfs(cache_dir: Path, busybox: Path = HOST_BUSYBOX, idmap: IdMap | None = None
                   ) -> Path:
    """The path of a complete busybox rootfs under `cache_dir` owned by the root of `idmap`
    (None: the host's), building it if needed."""
    digest = _digest(busybox)
    owner = "" if idmap is None else f"-{idmap.uid}-{idmap.gid}"
    target = cache_dir / f"busybox-{digest[:16]}{owner}"
    if _stamp(target) == digest:
        return target
    log.info("building busybox rootfs", path=str(target), reason="missing or stale")
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.chmod(0o755)
    staging = Path(tempfile.mkdtemp(prefix=".busybox.", dir=cache_dir))
    try:
        _build(staging, busybox, digest)
        shift_tree(staging, None, idmap)
        if target.exists():  # a directory cannot be replaced by one rename: move it aside
            target.rename(cache_dir / f".{target.name}.broken.{time.time_ns()}")
        staging.rename(target)
    except OSError as exc:
        raise RootfsError(f"cannot build the busybox rootfs in {cache_dir}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _digest(busybox: Path) -> str:
    try:
        return hashlib.sha256(busybox.read_bytes()).hexdigest()
    except OSError as exc:
        raise RootfsError(f"{busybox} is unusable ({exc.strerror}): install busybox-static") \
            from exc


def _stamp(target: Path) -> str | None:
    """The digest the tree was built from, if the tree still holds that very binary."""
    try:
        recorded = (target / STAMP).read_text().strip()
        binary = target / "bin" / "busybox"
        if hashlib.sha256(binary.read_bytes()).hexdigest() != recorded:
            return None
        if not (target / "sbin" / "init").is_symlink() or not (target / "etc/inittab").is_file():
            return None
    except OSError:
        return None
    return recorded


def _build(root: Path, busybox: Path, digest: str) -> None:
    for name in DIRS:
        (root / name).mkdir(exist_ok=True)
    root.chmod(0o755)
    shutil.copy2(busybox, root / "bin" / "busybox")
    try:
        applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                                 check=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise RootfsError(f"{busybox} --list failed: {exc}") from exc
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            (root / "bin" / applet).symlink_to("busybox")
    (root / "sbin" / "init").symlink_to("../bin/busybox")
    (root / "etc" / "inittab").write_text(INITTAB)
    (root / "etc" / "hostname").write_text("busybox\n")
    (root / STAMP).write_text(digest + "\n")  # written last: marks the tree complete
