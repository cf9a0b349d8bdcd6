"""Where the lxc driver keeps each container's files, and the few reads and writes on them.

Used by LxcDriver only. Layout under the driver's state dir: `lxc/<name>/config` (rewritten
atomically at every start), `lxc/<name>/lxc.log` (LXC's own log, emptied at every start so it
describes one init), `lxc/<name>/delta` (the overlay upper dir of a busybox container: its
writable layer, kept across restarts), `lxc-rootfs/busybox` (the shared cache). Console output
goes to `<log_dir>/<name>.log`. It never deletes a container's files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path


class ContainerFiles:
    """Paths and file I/O for containers under one state dir."""

    def __init__(self, state_dir: Path, log_dir: Path) -> None:
        self.lxcpath = state_dir / "lxc"
        self.rootfs_cache = state_dir / "lxc-rootfs"
        self.log_dir = log_dir

    def directory(self, name: str) -> Path:
        return self.lxcpath / name

    def delta(self, name: str) -> Path:
        return self.directory(name) / "delta"

    def lxc_log(self, name: str) -> Path:
        return self.directory(name) / "lxc.log"

    def console_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def write_config(self, name: str, text: str, init: Sequence[str]) -> None:
        """Install the config, empty LXC's log, and note the start in the domain log."""
        directory = self.directory(name)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        tmp = directory / ".config.tmp"
        tmp.write_text(text)
        tmp.replace(directory / "config")
        self.reset_lxc_log(name)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.console_log(name).open("a") as out:
            out.write(f"{stamp} domctl: lxc-start {name} -- {json.dumps(list(init))}\n")

    def reset_lxc_log(self, name: str) -> None:
        """Empty LXC's log so that it describes one init (LXC appends to it, so this is safe)."""
        self.lxc_log(name).write_text("")

    def read_lxc_log(self, name: str) -> str:
        try:
            return self.lxc_log(name).read_text(errors="replace")
        except OSError:
            return ""

    def lxc_errors(self, name: str, lines: int = 8) -> str:
        """The last ERROR lines of LXC's log: LXC's own reason for a failed start."""
        errors = [line for line in self.read_lxc_log(name).splitlines() if " ERROR " in line]
        return "LXC log: " + (" | ".join(errors[-lines:]) or "no errors recorded")
