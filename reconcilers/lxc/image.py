"""A rootfs tarball (tar, tar.gz, tar.xz) unpacked safely into an empty directory.

Called by storage.py, once, when a container's own rootfs is missing. Every member is made
through directory file descriptors opened with O_NOFOLLOW, one path component at a time, so no
member can reach outside the target whatever the archive holds: a leading `/` is stripped (as
tar does), a `..` component refuses the image, as does a path through a symlink (`link -> /`
then `link/etc/passwd`) or a hard link to something outside. Symlinks are made as they are
(absolute ones point into the container's root once it runs) and never followed here. Device
nodes are skipped: the container's /dev is LXC's (autodev), and a node in an unprivileged
container's tree would open a host device. Owners are kept as numbers (tar's --numeric-owner)
and modes whole, setuid bits included: a rootfs needs both, and its directory is private
(storage.py).

Why not tarfile's extraction filters: `data` drops owners and setuid bits, which a rootfs
needs, and this Python (3.11.7) predates the 2025 fixes to the filters' checks (CVE-2025-4517
and its kin: links that slipped past their realpath tests), so the walk above does not depend
on them. Extended attributes (file capabilities) are not restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

log = structlog.get_logger(__name__)


class ImageError(RuntimeError):
    """The tarball cannot be read, or holds a member that would escape its rootfs."""


@dataclass(frozen=True)
class Unpacked:
    image: str  # the tarball's path
    sha256: str  # of the tarball as it was read
    skipped_devices: int


def unpack(tarball: Path, root: Path) -> Unpacked:
    """Unpack `tarball` into the empty directory `root`, private to the caller (nothing else
    may change it meanwhile)."""
    try:
        root.chmod(0o755)  # the archive's own "./" entry, if any, sets it
        digest = _sha256(tarball)
        skipped = _extract(tarball, root)
    except OSError as exc:
        raise ImageError(f"cannot unpack {tarball}: {exc}") from exc
    log.info("image unpacked", image=str(tarball), rootfs=str(root), skipped_devices=skipped)
    return Unpacked(str(tarball), digest, skipped)


def _sha256(tarball: Path) -> str:
    with tarball.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def _extract(tarball: Path, root: Path) -> int:
    """Make every member under `root`; the number of device nodes skipped."""
    skipped = 0
    directories: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        with tarfile.open(tarball, "r:*") as archive:
            for member in archive:
                if member.ischr() or member.isblk():
                    skipped += 1
                    continue
                parts = _parts(member.name)
                if member.isdir():
                    if parts:
                        with _directory(root_fd, parts[:-1]) as parent:
                            _make_directory(parent, parts[-1])
                    directories.append((parts, member))
                elif not parts:
                    raise ImageError(f"{member.name!r}: the image's root is not a directory")
                else:
                    with _directory(root_fd, parts[:-1]) as parent:
                        _make(archive, member, root_fd, parent, parts[-1])
        # owners, modes and times of directories last (deepest first): making their entries
        # changed their times, and a read-only one could not have been filled
        for parts, member in sorted(directories, key=lambda item: -len(item[0])):
            with _directory(root_fd, parts, create=False) as fd:
                os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, stat.S_IMODE(member.mode))
                os.utime(fd, ns=(_ns(member), _ns(member)))
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise ImageError(f"{tarball} is not a readable tar archive: {exc}") from exc
    finally:
        os.close(root_fd)
    return skipped


def _parts(name: str) -> tuple[str, ...]:
    """The member's path as components below the root; ImageError for a `..`."""
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ImageError(f"{name!r}: a member path with '..' would leave the rootfs")
    return parts


@contextlib.contextmanager
def _directory(root_fd: int, parts: tuple[str, ...], create: bool = True) -> Iterator[int]:
    """An fd of the directory `parts` below the root, each component opened without following
    a symlink (made, mode 0755, when missing and `create`)."""
    fd = os.dup(root_fd)
    try:
        for index, part in enumerate(parts):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                where = "/".join(parts[:index + 1])
                raise ImageError(f"{where!r} is not a directory of the image ({exc.strerror}): "
                                 "a member path through a symlink would leave the rootfs") \
                    from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _make_directory(parent: int, name: str) -> None:
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=parent)  # a later member replaces an earlier one
            os.mkdir(name, 0o700, dir_fd=parent)


def _make(archive: tarfile.TarFile, member: tarfile.TarInfo, root_fd: int, parent: int,
          name: str) -> None:
    """Make one non-directory member `name` in the directory `parent`."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise ImageError(f"{member.name!r} would replace a directory of the image")
        os.unlink(name, dir_fd=parent)  # a later member replaces an earlier one
    if member.islnk():
        target = _parts(member.linkname)
        if not target:
            raise ImageError(f"{member.name!r}: a hard link to the image's root")
        with _directory(root_fd, target[:-1], create=False) as source:
            try:
                os.link(target[-1], name, src_dir_fd=source, dst_dir_fd=parent,
                        follow_symlinks=False)
            except OSError as exc:
                raise ImageError(f"{member.name!r}: cannot link to {member.linkname!r} "
                                 f"({exc.strerror})") from None
        return  # the inode is the target's: its owner and mode are set already
    if member.isreg():
        _write(archive, member, parent, name)
        return
    if member.issym():
        os.symlink(member.linkname, name, dir_fd=parent)
    elif member.isfifo():
        os.mkfifo(name, 0o600, dir_fd=parent)
        os.chmod(name, stat.S_IMODE(member.mode), dir_fd=parent)
    else:
        raise ImageError(f"{member.name!r}: unsupported member type {member.type!r}")
    os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
    os.utime(name, ns=(_ns(member), _ns(member)), dir_fd=parent, follow_symlinks=False)


def _write(archive: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str) -> None:
    source = archive.extractfile(member)
    if source is None:
        raise ImageError(f"{member.name!r}: no data")
    with source, open(os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent), "wb") as out:
        shutil.copyfileobj(source, out)
        out.flush()  # before the time is set
        os.fchown(out.fileno(), member.uid, member.gid)  # before the mode: chown clears setuid
        os.fchmod(out.fileno(), stat.S_IMODE(member.mode))
        os.utime(out.fileno(), ns=(_ns(member), _ns(member)))


def _ns(member: tarfile.TarInfo) -> int:
    return int(member.mtime * 1_000_000_000)
