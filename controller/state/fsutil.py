"""Durable files: atomic writes of state files, and the daemon's single-instance lock.

Status documents, the domain-id table and runtime records are written with `atomic_write_*`:
a reader (or a controller restarted after a crash or power loss) sees the old content or the
new, never a torn or empty file. The temp file sits in the target's directory (same
filesystem, so the rename is atomic) and is named `.<name>.<random>.tmp`, which the manifest
filter ignores should a state dir ever be pointed at the manifests.

`InstanceLock.acquire(path)` is taken once by the daemon at start-up (one controller per state
dir, DESIGN §7) and held until the process exits: the kernel drops a flock on any death,
SIGKILL included, so the lock file is never unlinked (unlinking would let a second instance
lock a fresh inode while the first still runs). The holder's pid is written into the file only
to make the refusal message useful.

Public surface:
    atomic_write_bytes(path, data, mode=0o644), atomic_write_text(path, text, mode=0o644),
    atomic_write_json(path, obj, mode=0o644)
    InstanceLock.acquire(path) -> InstanceLock; .path; .release()
    LockHeldError(path, pid)

Never fork without exec while holding the lock: a forked child inherits the flock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from reconcilers.errors import DomctlError


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically and durably (file fsync, rename, dir fsync)."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)  # mkstemp creates 0600 whatever the umask
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode(), mode)


def atomic_write_json(path: Path, obj: Any, mode: int = 0o644) -> None:
    """Pretty, key-sorted JSON with a trailing newline, so state files diff and cat well."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode)


def fsync_dir(directory: Path) -> None:
    """Persist a rename or unlink in `directory` (without this a crash may undo it)."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class LockHeldError(DomctlError):
    """Another process holds the single-instance lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f" by pid {pid}" if pid is not None else ""
        super().__init__(f"another domctl controller is running: {path} is locked{holder}")


class InstanceLock:
    """An exclusive flock on a file kept open for as long as this object is held."""

    def __init__(self, path: Path, file: IO[str]) -> None:
        self.path = path
        self._file = file

    @classmethod
    def acquire(cls, path: Path) -> InstanceLock:
        """Take the lock without waiting, or raise LockHeldError naming the file and holder."""
        file = open(path, "a+")  # noqa: SIM115 - kept open on purpose: the fd is the lock
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(file)
            file.close()
            raise LockHeldError(path, pid) from None
        except BaseException:
            file.close()
            raise
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        return cls(path, file)

    def release(self) -> None:
        """Drop the lock (a clean daemon exit; process death drops it too). Keeps the file."""
        self._file.close()


def _read_pid(file: IO[str]) -> int | None:
    file.seek(0)
    text = file.read(32).strip()
    return int(text) if text.isdigit() else None
