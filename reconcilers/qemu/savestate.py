"""Managed-save images on disk, written so that a crash at any moment leaves a whole one or none.

Owned by QemuDriver (save, saved_image, discard_saved, restore); one directory per domain under
the driver's state directory, `<state>/qemu/saved/<name>/` (0700: the image is the guest's RAM):

    .saving                 "running" or "paused": what the guest was when a save began
    .partial-<token>        the stream qemu is writing (the driver opened it; qemu got a dup)
    image-<token>           the stream once complete and fsynced
    .manifest-<token>.tmp   the metadata being written
    manifest.json           the metadata: version, the image's file name and size, when it was
                            saved, whether paused, the live spec, the device Layout (devices.py)

A save writes the stream, fsyncs it and renames it to `image-<token>`, then writes the
metadata to its temporary file, fsyncs it and renames it over `manifest.json`, and fsyncs the
directory: that last rename is the commit. Before it the directory holds no manifest naming the
new image (or only an older one), so a crash leaves nothing usable beyond what was there;
after it the pair is complete. An image is usable only through a manifest that names it with
its exact size. Whatever no valid manifest names (a stream cut short, an image whose manifest
was never written, a temporary) is stale and swept by the next save and by a discard. `.saving`
outlives a save only when the controller died during it: `interrupted` tells the driver, when it
re-attaches to the qemu that was being saved, whether to resume the guest.

`load` validates the manifest (a regular file of bounded size, JSON of the right shape, the
spec and layout typed by reconcilers/plain.py, the image present with its recorded size); a
manifest that fails is discarded with its image, logged with the reason, never restored. It
is cached by the manifest's inode, mtime and size: the engine asks on every pass of a shutoff
domain (Driver.saved_image must be cheap).

Paths come from the driver's state directory and a domain name checked against the loader's
rule again here (storage/pool.py's); nothing else of a manifest names a path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconcilers.driver import SavedImage
from reconcilers.durable import fsync_dir
from reconcilers.model import DomainSpec, to_plain
from reconcilers.plain import from_plain
from reconcilers.qemu.devices import Layout
from reconcilers.storage.pool import DOMAIN_NAME

VERSION = 1
MANIFEST, SAVING = "manifest.json", ".saving"
IMAGE = re.compile(r"image-[0-9a-f]{32}")
MAX_MANIFEST = 1 << 20  # bytes: one spec and one layout are a few KB

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Saved:
    """A complete managed save: the image the Driver protocol shows, and the Layout of the run
    it was taken of, which the restore's command line needs."""

    image: SavedImage
    layout: Layout


@dataclass
class Pending:
    """A save being written: the stream file, open for writing (`fd`) until commit or abandon."""

    directory: Path
    token: str
    fd: int

    @property
    def partial(self) -> Path:
        return self.directory / f".partial-{self.token}"

    @property
    def image(self) -> Path:
        return self.directory / f"image-{self.token}"


class Damaged(Exception):
    """A manifest that cannot be a complete save; says why."""


class SaveStore:
    """The managed saves of one driver's domains, under `root` (`<state>/qemu/saved`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[tuple[int, int, int], Saved]] = {}

    def directory(self, name: str) -> Path:
        if not DOMAIN_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a domain name")
        return self.root / name

    # --- writing -------------------------------------------------------------------------------

    def begin(self, name: str, paused: bool) -> Pending:
        """A new stream file for `name`'s save of a guest that is `paused` or running (stale
        files of an earlier one swept first)."""
        directory = self.directory(name)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.mkdir(exist_ok=True, mode=0o700)
        self._sweep(name)
        (directory / SAVING).write_text("paused" if paused else "running")
        token = secrets.token_hex(16)
        pending = Pending(directory, token, -1)
        pending.fd = os.open(pending.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o600)
        return pending

    def abandon(self, pending: Pending) -> None:
        """The save failed: its stream goes (an older complete save, if any, stays)."""
        _close(pending)
        for path in (pending.partial, pending.image, pending.directory / SAVING):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: an older save
            pending.directory.rmdir()

    def commit(self, name: str, pending: Pending, spec: DomainSpec, layout: Layout,
               paused: bool) -> Saved:
        """Make the finished stream a complete save (module docstring); blocking (fsync)."""
        os.fsync(pending.fd)
        size = os.fstat(pending.fd).st_size
        _close(pending)
        os.rename(pending.partial, pending.image)
        image = SavedImage(str(pending.image), spec, paused, size, time.time())
        document = {"version": VERSION, "image": pending.image.name, "size": size,
                    "saved_at": image.saved_at, "paused": paused, "spec": to_plain(spec),
                    "layout": to_plain(layout)}
        temporary = pending.directory / f".manifest-{pending.token}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(document, out, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, pending.directory / MANIFEST)  # the commit
        fsync_dir(pending.directory)
        (pending.directory / SAVING).unlink()
        self._sweep(name)  # an older image, now named by no manifest
        return Saved(image, layout)

    # --- reading -------------------------------------------------------------------------------

    def load(self, name: str) -> Saved | None:
        """The complete save of `name`, or None; a damaged one is discarded (logged)."""
        directory = self.directory(name)
        manifest = directory / MANIFEST
        try:
            found = os.lstat(manifest)
        except FileNotFoundError:
            self._cache.pop(name, None)
            return None
        key = (found.st_ino, found.st_mtime_ns, found.st_size)
        cached = self._cache.get(name)
        try:
            if cached is not None and cached[0] == key:
                saved = cached[1]
            else:
                saved = self._read(directory, found)
            _check_image(Path(saved.image.path), saved.image.size)
        except Damaged as exc:
            log.warning("managed-save image unusable; discarded", domain=name,
                        manifest=str(manifest), why=str(exc))
            self.discard(name)
            return None
        self._cache[name] = (key, saved)
        return saved

    def _read(self, directory: Path, found: os.stat_result) -> Saved:
        if not stat.S_ISREG(found.st_mode):
            raise Damaged("the manifest is not a regular file")
        if found.st_size > MAX_MANIFEST:
            raise Damaged(f"the manifest is larger than {MAX_MANIFEST} bytes")
        try:
            document = json.loads((directory / MANIFEST).read_bytes())
            return _parse(directory, document)
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            raise Damaged(f"{type(exc).__name__}: {exc}") from exc

    def interrupted(self, name: str) -> bool | None:
        """Whether the guest of a save the controller did not see through was paused (True)
        or running (False) when it began; None when no save was cut short."""
        try:
            said = (self.directory(name) / SAVING).read_text()
        except OSError:
            return None
        return said == "paused"

    # --- removal -------------------------------------------------------------------------------

    def discard(self, name: str) -> None:
        """Delete `name`'s save: the manifest first (the image is then unusable), then the rest."""
        directory = self.directory(name)
        self._cache.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            (directory / MANIFEST).unlink()
            fsync_dir(directory)
        self._sweep(name)
        with contextlib.suppress(OSError):
            directory.rmdir()

    def sweep(self, name: str) -> None:
        """Remove what no valid manifest names (a save cut short by a crash), if anything."""
        if self.directory(name).is_dir():
            self._sweep(name)

    def _sweep(self, name: str) -> None:
        directory = self.directory(name)
        kept = None
        with contextlib.suppress(Damaged, OSError):
            kept = self._read(directory, os.lstat(directory / MANIFEST)).image.path
        for path in directory.iterdir():
            if path.name != MANIFEST and str(path) != kept:
                path.unlink(missing_ok=True)
                log.info("stale managed-save file removed", domain=name, path=str(path))


def _parse(directory: Path, document: Any) -> Saved:
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} manifest")
    image = document["image"]
    if not isinstance(image, str) or not IMAGE.fullmatch(image):
        raise ValueError(f"image {image!r} is not an image file name")
    size, saved_at, paused = document["size"], document["saved_at"], document["paused"]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"size {size!r}")
    if not isinstance(saved_at, int | float) or isinstance(saved_at, bool):
        raise ValueError(f"saved_at {saved_at!r}")
    if not isinstance(paused, bool):
        raise ValueError(f"paused {paused!r}")
    spec = from_plain(DomainSpec, document["spec"])
    if spec.qemu is None:
        raise ValueError("the spec has no qemu section")
    return Saved(SavedImage(str(directory / image), spec, paused, size, float(saved_at)),
                 from_plain(Layout, document["layout"]))


def _check_image(path: Path, size: int) -> None:
    try:
        found = os.lstat(path)
    except OSError as exc:
        raise Damaged(f"image {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(found.st_mode) or found.st_size != size:
        raise Damaged(f"image {path} is not the {size}-byte file the manifest names")


def _close(pending: Pending) -> None:
    if pending.fd >= 0:
        os.close(pending.fd)
        pending.fd = -1


