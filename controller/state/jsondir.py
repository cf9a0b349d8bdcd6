"""Typed JSON documents in a directory: one file per domain, written atomically.

`from_plain` (reconcilers/plain.py, re-exported) rebuilds a frozen dataclass of the model (or
an enum, tuple, Optional, ...) from its `model.to_plain` form, guided by the dataclass field
types, so a state file is read back into the same types it was written from. Used by the
registry (domain records) and the status store.

The controller is crash-only: no single state file may keep it from starting, and atomic
writes make a bad one rare enough that it means a disk fault, a hand edit or hostility. So a
file that cannot be a document (not a regular file, a symlink, larger than `max_bytes`,
unreadable, not UTF-8 JSON, NaN or an infinite number, nested past the parser, the wrong shape,
or refused by the caller's semantic `check`) is quarantined (renamed aside, logged with both
names: fsutil.quarantine) and `Damaged` is raised with what could be parsed, so that the
caller rebuilds the document from what it can observe. A missing file is None.

Public surface:
    from_plain(cls, data)
    Damaged(path, moved_to, error, data)
    JsonDir(directory, max_bytes=MAX_STATE_FILE): path(name), write(name, obj), read(name),
        read_as(tp, name, check=None), names(), remove(name)
    MAX_STATE_FILE
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from controller.state.fsutil import atomic_write_json, quarantine
from reconcilers.durable import fsync_dir
from reconcilers.plain import from_plain

__all__ = ["MAX_STATE_FILE", "Damaged", "JsonDir", "from_plain", "parse_json"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_STATE_FILE = 16 * 1024 * 1024
"""Bytes past which a state document is taken as damaged instead of read: a record holds one
normalised spec and a status one projection, a few KB; reading a planted multi-GB file would
stall start-up or exhaust memory."""


class Damaged(Exception):
    """A state file that could not be read as its document; already quarantined (moved to
    `moved_to`, None when it could not be moved). `data` is what parsed (None if nothing), for
    salvage."""

    def __init__(self, path: Path, moved_to: Path | None, error: str, data: Any = None) -> None:
        self.path = path
        self.moved_to = moved_to
        self.error = error
        self.data = data
        super().__init__(f"{path}: {error}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"not a JSON number: {text}")


def parse_json(data: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, finite floats; ValueError (or RecursionError for
    absurd nesting) otherwise. Our writer never produces anything else."""
    return json.loads(data.decode("utf-8"), parse_float=_finite, parse_constant=_no_constant)


class JsonDir:
    """A directory of `<name>.json` documents, one per domain, written atomically."""

    def __init__(self, directory: Path, max_bytes: int = MAX_STATE_FILE) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise ValueError(f"not a domain name usable as a file name: {name!r}")
        return self.directory / f"{name}.json"

    def write(self, name: str, obj: Any, durable: bool = True) -> None:
        """Replace `name`'s document atomically; `durable` (fsync'd) unless it is an output
        that the next pass rebuilds anyway (fsutil.atomic_write_bytes)."""
        path = self.path(name)
        self._ensure_dir()
        if os.path.isdir(path) and not os.path.islink(path):  # os.replace cannot replace it
            quarantine(path, "a directory where a state file should be")
        atomic_write_json(path, obj, durable=durable)

    def _ensure_dir(self) -> None:
        """Create the directory; a file (or anything else) in its place is moved aside."""
        if os.path.lexists(self.directory) and not (
                self.directory.is_dir() and not self.directory.is_symlink()):
            quarantine(self.directory, "not a directory where the state directory should be")
        self.directory.mkdir(parents=True, exist_ok=True)

    def read(self, name: str) -> Any | None:
        """The parsed document; None when missing; Damaged (quarantined) when unreadable."""
        path = self.path(name)
        try:
            raw = self._read_bytes(path)
        except FileNotFoundError:
            return None
        except (OSError, _Unfit) as exc:
            raise self._damaged(path, str(exc) or type(exc).__name__) from None
        try:
            return parse_json(raw)
        except (ValueError, RecursionError) as exc:
            error = "not JSON: " + (str(exc)[:200] or type(exc).__name__)
            raise self._damaged(path, error) from None

    def _read_bytes(self, path: Path) -> bytes:
        """The file's bytes, opened without following a symlink and without blocking (a FIFO);
        _Unfit for a file that is not a plain, reasonably sized document."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _Unfit("a symlink where a state file should be") from None
            raise
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise _Unfit("a directory where a state file should be")
            if not stat.S_ISREG(st.st_mode):
                raise _Unfit("not a regular file")
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise _Unfit(f"larger than {self.max_bytes} bytes ({st.st_size})")
        return data

    def _damaged(self, path: Path, error: str, data: Any = None) -> Damaged:
        return Damaged(path, quarantine(path, error), error, data)

    def read_as(self, tp: type[T], name: str,
                check: Callable[[T], None] | None = None) -> T | None:
        """The document rebuilt as `tp` and passed by `check` (which raises ValueError for a
        value no writer of ours produces); None when missing; Damaged (quarantined) otherwise."""
        data = self.read(name)
        if data is None:
            return None
        try:
            result: T = from_plain(tp, data)
            if check is not None:
                check(result)
        except Exception as exc:  # whatever one file's content raises, it must not stop us
            raise self._damaged(self.path(name), f"invalid: {str(exc)[:300]}", data) from None
        return result

    def quarantine(self, name: str, error: str, data: Any = None) -> Damaged:
        """Move the document aside for a reason the caller found (a semantic check)."""
        return self._damaged(self.path(name), error, data)

    def names(self) -> list[str]:
        """Names with a document, sorted; temp files (`.x.json.*.tmp`) and quarantined files
        (`x.json.corrupt-*`) are not documents."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json")
                      if not p.name.startswith("."))

    def remove(self, name: str) -> None:
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except IsADirectoryError:
            quarantine(path, "a directory where a state file should be")
            return
        fsync_dir(self.directory)


class _Unfit(Exception):
    """A state path that exists but cannot hold a document (its message says why)."""
