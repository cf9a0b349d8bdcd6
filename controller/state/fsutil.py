"""Durable files: atomic writes of state files, quarantine of bad ones, and the daemon's lock.

Status documents, the domain-id table and runtime records are written with `atomic_write_*`:
a reader (or a controller restarted after a crash or power loss) sees the old content or the
new, never a torn or empty file. The temp file sits in the target's directory (same
filesystem, so the rename is atomic) and is named `.<name>.<random>.tmp`, which the manifest
filter ignores should a state dir ever be pointed at the manifests.

`quarantine(path, error)` renames a state file that cannot be what it should be (not JSON, the
wrong shape, a directory or a FIFO where a file should be, a symlink, too big, unreadable) to
`<file>.corrupt-<UTC stamp>` beside it and logs both names: the controller is crash-only, so
no single bad file may keep it from starting, yet the evidence is kept for the operator and
the name is free for a rebuilt file. Never deletes anything.

`InstanceLock.acquire(path)` is taken once by the daemon at start-up (one controller per state
dir, DESIGN §7) and held until the process exits: the kernel drops a flock on any death,
SIGKILL included, so the lock file is never unlinked (unlinking would let a second instance
lock a fresh inode while the first still runs). The holder's pid is written into the file only
to make the refusal message useful. The lock file's content never matters; a lock path that
is not a regular file (a directory, a symlink, a FIFO) or cannot be opened is quarantined and
a fresh file locked, a file that cannot be written (immutable) is locked read-only, and after
locking the path is checked to still name the locked inode, so two controllers racing through
a quarantine never both win.

Public surface:
    atomic_write_bytes(path, data, mode=0o644), atomic_write_text(path, text, mode=0o644),
    atomic_write_json(path, obj, mode=0o644)
    quarantine(path, error) -> Path | None
    InstanceLock.acquire(path) -> InstanceLock; .path; .release()
    LockHeldError(path, pid), LockFileError(path, error)

Never fork without exec while holding the lock: a forked child inherits the flock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from reconcilers.durable import fsync_dir
from reconcilers.errors import DomctlError

log = structlog.get_logger(__name__)

QUARANTINE_KEEP = 5  # moved-aside files kept per state file (the newest)
QUARANTINE_INFIX = ".corrupt-"
_LOCK_ATTEMPTS = 8  # quarantines and inode races survived before giving up


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `data` atomically and, when `durable`, durably (file fsync, rename,
    dir fsync). Not durable: a reader never sees a torn file, but a crash of the host may
    lose the write (an output the next pass rebuilds, such as a status document)."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)  # mkstemp creates 0600 whatever the umask
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)


def atomic_write_text(path: Path, text: str, mode: int = 0o644, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), mode, durable)


def atomic_write_json(path: Path, obj: Any, mode: int = 0o644, durable: bool = True) -> None:
    """Pretty, key-sorted JSON with a trailing newline, so state files diff and cat well."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode, durable)



def quarantine(path: Path, error: str) -> Path | None:
    """Rename the bad file (or directory, symlink, FIFO) `path` aside and log it; the new name,
    or None when it is already gone or cannot be moved (logged: the caller carries on without
    it)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}{QUARANTINE_INFIX}{stamp}")
    n = 0
    while os.path.lexists(target):  # never overwrite earlier evidence
        n += 1
        target = path.with_name(f"{path.name}{QUARANTINE_INFIX}{stamp}.{n}")
    try:
        os.rename(path, target)
        fsync_dir(path.parent)
    except FileNotFoundError:
        return None
    except OSError as err:
        log.error("bad state file could not be moved aside; ignored", path=str(path),
                  error=error, move_error=str(err))
        return None
    log.error("bad state file moved aside", path=str(path), moved_to=str(target), error=error)
    _prune_quarantined(path)
    return target


def _prune_quarantined(path: Path) -> None:
    """Keep the newest QUARANTINE_KEEP files moved aside from `path`: evidence of the last
    damage, without a state dir that grows for ever when one file keeps going bad."""
    aside = sorted(path.parent.glob(f"{glob.escape(path.name)}{QUARANTINE_INFIX}*"),
                   key=lambda p: (p.lstat().st_mtime_ns, p.name))
    for old in aside[:-QUARANTINE_KEEP]:
        with contextlib.suppress(OSError):
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
            log.info("old moved-aside state file removed", path=str(old))


class LockHeldError(DomctlError):
    """Another process holds the single-instance lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f" by pid {pid}" if pid is not None else ""
        super().__init__(f"another domctl controller is running: {path} is locked{holder}")


class LockFileError(DomctlError):
    """The lock file can neither be locked nor moved aside (the state dir itself is broken)."""

    def __init__(self, path: Path, error: str) -> None:
        self.path = path
        super().__init__(f"cannot take the controller lock {path}: {error}")


class InstanceLock:
    """An exclusive flock on a file kept open for as long as this object is held."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> InstanceLock:
        """Take the lock without waiting, or raise LockHeldError naming the file and holder.

        A bad lock path is quarantined and a fresh file locked (see the module docstring);
        LockFileError when even that fails."""
        problem = "no attempt"
        for _ in range(_LOCK_ATTEMPTS):
            opened = _open_lock(path)
            if isinstance(opened, str):  # neither writable nor readable: not a lock we can use
                problem = opened
                if quarantine(path, f"lock file unusable: {opened}") is None \
                        and os.path.lexists(path):
                    raise LockFileError(path, opened)
                continue
            fd, writable = opened
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise LockHeldError(path, pid) from None
            except OSError as err:
                os.close(fd)
                raise LockFileError(path, str(err)) from err
            kept = _check_locked(path, fd, writable)
            if kept is None:
                return cls(path, fd)
            problem = kept
        raise LockFileError(path, f"still unusable after {_LOCK_ATTEMPTS} attempts: {problem}")

    def release(self) -> None:
        """Drop the lock (a clean daemon exit; process death drops it too). Keeps the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _open_lock(path: Path) -> tuple[int, bool] | str:
    """(fd, writable), or why the path cannot be opened at all. Never follows a symlink (a
    planted one must not make us truncate its target) and never blocks (a FIFO)."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644), True
    except OSError as err:
        write_error = err
    try:  # an immutable or foreign read-only file still takes a flock
        return os.open(path, os.O_RDONLY | flags), False
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symlink"
        return f"{os.strerror(write_error.errno or 0)}; {os.strerror(err.errno or 0)}"


def _check_locked(path: Path, fd: int, writable: bool) -> str | None:
    """With `fd` locked: None when it is the lock file (the holder's pid written when it can
    be), else why not (fd closed; a bad file was moved aside) so that the caller tries again."""
    st = os.fstat(fd)
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)  # moved aside or replaced between our open and our flock
        return "replaced while being locked"
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        quarantine(path, f"lock file is {what}")  # moved while we hold its flock: no race
        os.close(fd)
        return what
    if writable:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    else:
        log.warning("lock file not writable; locked read-only, holder's pid not recorded",
                    path=str(path))
    return None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
