"""A container's own storage without a container (storage.py, LxcDriver.disks and
release_storage): an image unpacked once and shifted to the id map, kept across prepares and
image changes (said in a warning), shifted again when the map changes, described, Retain and
Delete on release."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from reconcilers.driver import DriverContext
from reconcilers.errors import DriverError
from reconcilers.lxc.driver import LxcDriver
from reconcilers.lxc.files import ContainerFiles
from reconcilers.lxc.idmap import IdMap
from reconcilers.lxc.storage import Storage, StorageError
from reconcilers.model import DeletePolicy, LxcSpec
from tests.support.domains import domain

MAP = IdMap(uid=100000, gid=100000)


def image(path: Path, marker: bytes = b"one") -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in (("sbin/init", b"#!/bin/sh\n"), ("marker", marker)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def files(tmp_path: Path) -> ContainerFiles:
    return ContainerFiles(tmp_path / "state", tmp_path / "log")


def test_an_image_is_unpacked_once_and_kept(tmp_path: Path, files: ContainerFiles) -> None:
    storage, first = Storage(files), image(tmp_path / "one.tar.gz")
    spec = LxcSpec(image=str(first))
    prepared = storage.prepare("c", spec, MAP)
    rootfs = Path(prepared.rootfs)
    assert rootfs == files.rootfs("c") and not prepared.warning
    assert (rootfs / "marker").stat().st_uid == MAP.uid  # shifted: root inside
    guard = files.storage("c").stat()
    assert (guard.st_uid, stat.S_IMODE(guard.st_mode)) == (MAP.uid, 0o700)
    (rootfs / "written").write_text("by the container")
    first.unlink()  # the image is not needed any more
    assert storage.prepare("c", spec, MAP).rootfs == str(rootfs)
    second = image(tmp_path / "two.tar.gz", b"two")
    kept = storage.prepare("c", LxcSpec(image=str(second)), MAP)
    assert kept.rootfs == str(rootfs) and str(first) in kept.warning
    assert (rootfs / "marker").read_bytes() == b"one" and (rootfs / "written").exists()


def test_a_new_map_shifts_the_storage(tmp_path: Path, files: ContainerFiles) -> None:
    storage, spec = Storage(files), LxcSpec(image=str(image(tmp_path / "i.tar.gz")))
    rootfs = Path(storage.prepare("c", spec, MAP).rootfs)
    storage.prepare("c", spec, None)  # made privileged
    assert (rootfs / "marker").stat().st_uid == 0 and files.storage("c").stat().st_uid == 0
    storage.prepare("c", spec, IdMap(uid=300000, gid=300000))
    assert (rootfs / "marker").stat().st_gid == 300000


def test_a_hostile_image_leaves_nothing(tmp_path: Path, files: ContainerFiles) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as archive:
        archive.addfile(tarfile.TarInfo("../escape"), io.BytesIO(b""))
    with pytest.raises(StorageError, match="leave the rootfs"):
        Storage(files).prepare("c", LxcSpec(image=str(evil)), MAP)
    assert os.listdir(files.storage("c")) == []  # no rootfs, no staging dir


@pytest.fixture
def offline_driver(tmp_path: Path) -> LxcDriver:
    """A driver on the same state dir as `files`; no container ever runs."""
    context = DriverContext(runtime_dir=tmp_path, state_dir=tmp_path / "state",
                            log_dir=tmp_path / "log", on_event=lambda event: None)
    return LxcDriver(context)


async def test_release_retains_or_deletes(tmp_path: Path, files: ContainerFiles,
                                          offline_driver: LxcDriver) -> None:
    storage = Storage(files)
    spec = LxcSpec(image=str(image(tmp_path / "i.tar.gz")))
    rootfs = storage.prepare("c", spec, MAP).rootfs
    kept = domain("c", "lxc", lxc=spec).spec
    (disk,) = await offline_driver.disks("c", kept)
    assert (disk["source"], disk["image"], disk["format"], disk["deletePolicy"]) == (
        rootfs, spec.image, "dir", "Retain")
    assert disk["actualSize"] > 0
    (later,) = await offline_driver.disks("d", kept)
    assert later["problem"] == "not made yet (at the next start)"
    files.write_config("c", "lxc.uts.name = c\n", ["/sbin/init"])  # as a start leaves it
    assert await offline_driver.release_storage("c", kept) == [rootfs]
    assert Path(rootfs, "marker").exists()
    assert sorted(p.name for p in files.directory("c").iterdir()) == ["storage", "storage.json"]
    gone = domain("c", "lxc", lxc=LxcSpec(image=spec.image,
                                          delete_policy=DeletePolicy.DELETE)).spec
    assert await offline_driver.release_storage("c", gone) == []
    assert not files.directory("c").exists()  # nothing of the container is left
    # a user's directory is never the driver's to delete
    user = tmp_path / "mine"
    user.mkdir()
    theirs = domain("c", "lxc", lxc=LxcSpec(rootfs=str(user),
                                            delete_policy=DeletePolicy.DELETE)).spec
    assert await offline_driver.release_storage("c", theirs) == [] and user.is_dir()
    (disk,) = await offline_driver.disks("c", theirs)
    assert (disk["source"], disk["volume"]) == (str(user), False)
    with pytest.raises(DriverError, match="not a valid domain name"):
        await offline_driver.release_storage("../c", gone)
