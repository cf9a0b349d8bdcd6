"""Rootfs tarballs unpacked (image.py): owners, modes, links and special files kept as a rootfs
needs them; a hostile archive (`..`, a path or hard link through or to the outside) refused
with nothing written outside, absolute paths kept inside, device nodes skipped."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from reconcilers.lxc.image import ImageError, unpack


def member(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", link: str = "",
           mode: int = 0o644, uid: int = 0, gid: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid = kind, link, mode, uid, gid
    info.size, info.mtime = len(data), 1_700_000_000
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 8, 0
    return info, data


def tarball(path: Path, *members: tuple[tarfile.TarInfo, bytes], mode: str = "w:xz") -> Path:
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): an empty root to unpack into, beside a directory it must not reach."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, outside


def test_a_rootfs_keeps_owners_modes_links_and_special_files(tmp_path: Path,
                                                             dirs: tuple[Path, Path]) -> None:
    root, _ = dirs
    image = tarball(
        tmp_path / "rootfs.tar.xz",
        member("./", tarfile.DIRTYPE, mode=0o755),
        member("./usr/bin/passwd", data=b"#!/bin/sh\n", mode=0o4755),
        member("./home/user", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000),
        member("./home/user/notes", data=b"mine", mode=0o600, uid=1000, gid=1000),
        member("./etc/mtab", tarfile.SYMTYPE, link="/proc/self/mounts"),
        member("./usr/bin/chsh", tarfile.LNKTYPE, link="./usr/bin/passwd"),
        member("./run/initctl", tarfile.FIFOTYPE, mode=0o600),
        member("./dev/sda", tarfile.BLKTYPE, mode=0o660),
        member("./dev/null", tarfile.CHRTYPE, mode=0o666),
        member("./etc/hostname", data=b"old\n"),
        member("./etc/hostname", data=b"new\n"))  # a later member replaces an earlier one
    unpacked = unpack(image, root)
    assert unpacked.skipped_devices == 2 and len(unpacked.sha256) == 64
    passwd = (root / "usr/bin/passwd").stat()
    assert stat.S_IMODE(passwd.st_mode) == 0o4755 and passwd.st_uid == 0
    assert (root / "usr/bin/chsh").stat().st_ino == passwd.st_ino
    home = (root / "home/user").stat()
    assert (home.st_uid, home.st_gid, stat.S_IMODE(home.st_mode)) == (1000, 1000, 0o700)
    assert (root / "home/user/notes").read_bytes() == b"mine"
    assert os.readlink(root / "etc/mtab") == "/proc/self/mounts"
    assert stat.S_ISFIFO((root / "run/initctl").stat().st_mode)
    assert not (root / "dev/sda").exists() and not (root / "dev/null").exists()
    assert (root / "etc/hostname").read_text() == "new\n"
    assert (root / "home/user/notes").stat().st_mtime == 1_700_000_000


def test_absolute_paths_are_kept_inside(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    root, outside = dirs
    unpack(tarball(tmp_path / "abs.tar", member(f"{outside}/abs", data=b"x"), mode="w"), root)
    assert (root / str(outside).lstrip("/") / "abs").read_bytes() == b"x"
    assert not (outside / "abs").exists()


@pytest.mark.parametrize("members", [
    [member("../outside/evil", data=b"x")],
    [member("./a/../../outside/evil", data=b"x")],
    # a symlink to the outside, then a member through it
    [member("escape", tarfile.SYMTYPE, link="../outside"), member("escape/evil", data=b"x")],
    [member("escape", tarfile.SYMTYPE, link="/"), member("escape/tmp/evil", data=b"x")],
    # hard links out of the root
    [member("evil", tarfile.LNKTYPE, link="../outside/target")],
    [member("link", tarfile.SYMTYPE, link="../outside"),
     member("evil", tarfile.LNKTYPE, link="link/target")],
], ids=["dotdot", "dotdot-inside", "through-symlink", "through-root-symlink", "hardlink-out",
        "hardlink-through-symlink"])
def test_a_hostile_tarball_is_refused(tmp_path: Path, dirs: tuple[Path, Path],
                                      members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    root, outside = dirs
    (outside / "target").write_text("host file")
    with pytest.raises(ImageError, match=r"leave the rootfs|cannot link"):
        unpack(tarball(tmp_path / "evil.tar.gz", *members, mode="w:gz"), root)
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert (outside / "target").read_text() == "host file"
    assert (outside / "target").stat().st_nlink == 1


def test_not_a_tarball(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    junk = tmp_path / "junk.tar.xz"
    junk.write_bytes(b"\xfd7zXZ\x00 not really")
    with pytest.raises(ImageError, match="not a readable tar archive"):
        unpack(junk, dirs[0])
