"""Where the lxc driver keeps each container's files, and the few reads and writes on them.

Used by LxcDriver and storage.py. Layout under the driver's state dir: `lxc/<name>/config`
(rewritten atomically at every start), `lxc/<name>/lxc.log` (LXC's own log, emptied at every
start so it describes one init), `lxc/<name>/storage/` (what domctl made for the container:
`rootfs`, an unpacked image; `delta`, a busybox container's overlay upper dir, and LXC's
overlay work dir beside it), `lxc/<name>/storage.json` (where the rootfs came from),
`lxc-rootfs/busybox-*` (the shared busybox trees), `lxc-idmap-bin` (the newuidmap stand-ins of
idmap.py). Console output goes to `<log_dir>/<name>.log`.

Modes: the lxcpath and `lxc/<name>` are 0711 and the config and LXC's log 0600, since an
unprivileged container's root reaches its tree from inside its user namespace; `storage/` is
0700, owned by the container's root (a mapped id, or the host's root), since no other host
user may reach a rootfs: it holds the container's setuid files (one run by a host user would
give that user the container's ids). Only storage.py deletes anything here, when a removed
domain's storage is released: the storage dir with deletePolicy Delete, and always LXC's config
and log, then `lxc/<name>` itself once nothing retained is left in it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path


class ContainerFiles:
    """Paths and file I/O for containers under one state dir."""

    def __init__(self, state_dir: Path, log_dir: Path) -> None:
        self.lxcpath = state_dir / "lxc"
        self.rootfs_cache = state_dir / "lxc-rootfs"
        self.idmap_bin = state_dir / "lxc-idmap-bin"
        self.log_dir = log_dir

    def directory(self, name: str) -> Path:
        return self.lxcpath / name

    def ensure_directory(self, name: str) -> Path:
        """`lxc/<name>` in the lxcpath, both mode 0711 (see the module docstring)."""
        directory = self.directory(name)
        for path in (self.lxcpath, directory):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o711)
        return directory

    def storage(self, name: str) -> Path:
        return self.directory(name) / "storage"

    def storage_record(self, name: str) -> Path:
        return self.directory(name) / "storage.json"

    def delta(self, name: str) -> Path:
        return self.storage(name) / "delta"

    def rootfs(self, name: str) -> Path:
        return self.storage(name) / "rootfs"

    def forget(self, name: str) -> None:
        """A removed container: its config and LXC's log go, and its directory with them
        unless retained storage is left in it."""
        directory = self.directory(name)
        for leftover in ("config", ".config.tmp", "lxc.log"):
            (directory / leftover).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError, OSError):
            directory.rmdir()  # OSError ENOTEMPTY: a retained rootfs stays, with its record

    def lxc_log(self, name: str) -> Path:
        return self.directory(name) / "lxc.log"

    def console_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def write_config(self, name: str, text: str, init: Sequence[str]) -> None:
        """Install the config, empty LXC's log, and note the start in the domain log."""
        directory = self.ensure_directory(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        tmp = directory / ".config.tmp"
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_text(text)
        tmp.replace(directory / "config")
        self.reset_lxc_log(name)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.console_log(name).open("a") as out:
            out.write(f"{stamp} domctl: lxc-start {name} -- {json.dumps(list(init))}\n")

    def reset_lxc_log(self, name: str) -> None:
        """Empty LXC's log so that it describes one init (LXC appends to it, so this is safe);
        mode 0600, like the config: the directory is searchable by anyone (module docstring)."""
        log = self.lxc_log(name)
        log.touch(mode=0o600)
        log.chmod(0o600)
        log.write_text("")

    def read_lxc_log(self, name: str) -> str:
        try:
            return self.lxc_log(name).read_text(errors="replace")
        except OSError:
            return ""

    def lxc_errors(self, name: str, lines: int = 8) -> str:
        """The last ERROR lines of LXC's log: LXC's own reason for a failed start."""
        errors = [line for line in self.read_lxc_log(name).splitlines() if " ERROR " in line]
        return "LXC log: " + (" | ".join(errors[-lines:]) or "no errors recorded")
