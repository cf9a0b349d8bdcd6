"""The storage pool's layout: one directory per domain, fixed names inside.

    <pool>/<domain>/<disk>.qcow2    the volume of a disk with `image` or `size` (volumes.py)
    <pool>/<domain>/cidata.iso      the cloud-init NoCloud seed (seed.py)
    <pool>/<domain>/VARS.fd         the UEFI variables (firmware.py; libvirt's <nvram>)

The pool's root comes from the driver's settings (`--pool`, default `<state dir>/pool`); the
domain and disk names were checked by the manifest loader and are checked again here, so no
manifest value can name a path outside the pool. A domain's directory is 0700: the seed may hold
passwords and keys. `owner()` tells which domain's directory a path is in, so a manifest that
names another domain's volume as its image or source is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reconcilers.durable import fsync_dir

DOMAIN_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")  # the loader's rule for metadata.name
DISK_NAME = re.compile(r"[a-z][a-z0-9_-]{0,30}")  # the schema's rule for a disk's name
SEED, NVRAM, VOLUME_SUFFIX = "cidata.iso", "VARS.fd", ".qcow2"


@dataclass(frozen=True)
class DomainPool:
    """The pool directory of one domain and the names of the files in it."""

    dir: Path

    def volume(self, disk: str) -> Path:
        if not DISK_NAME.fullmatch(disk):
            raise ValueError(f"{disk!r} is not a disk name")
        return self.dir / f"{disk}{VOLUME_SUFFIX}"

    @property
    def seed(self) -> Path:
        return self.dir / SEED

    @property
    def nvram(self) -> Path:
        return self.dir / NVRAM

    def ensure(self) -> None:
        """The directory, made 0700 (its parents as needed)."""
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700, exist_ok=True)

    def contents(self) -> list[Path]:
        """The files left in the directory (none when it does not exist), sorted."""
        try:
            return sorted(self.dir.iterdir())
        except FileNotFoundError:
            return []

    def remove_if_empty(self) -> None:
        with contextlib.suppress(OSError):  # gone already, or something was kept in it
            self.dir.rmdir()


@dataclass(frozen=True)
class Pool:
    """The pool's root directory."""

    root: Path

    def of(self, domain: str) -> DomainPool:
        if not DOMAIN_NAME.fullmatch(domain):
            raise ValueError(f"{domain!r} is not a domain name")
        return DomainPool(self.root / domain)

    def owner(self, path: str) -> str | None:
        """The domain whose pool directory holds `path` (symlinks followed), or None."""
        root, target = os.path.realpath(self.root), os.path.realpath(path)
        if os.path.commonpath([root, target]) != root or target == root:
            return None
        return Path(os.path.relpath(target, root)).parts[0]


def replace_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` whole through `write`, atomically and durably, mode 0600: into
    `.NAME.partial` beside it, fsynced, renamed over it (a partial a crash left is swept with
    the domain's other leftovers)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        partial.rename(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # the rename itself, else a crash may bring the old file back
