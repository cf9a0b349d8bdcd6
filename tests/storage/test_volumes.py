"""Volumes with the real qemu-img: overlays on raw and qcow2 bases, growth, what is refused.

Each test makes its base images with qemu-img in its own directory. The in-use cases hold an
image the way a running VM does: a real qemu (stopped at -S) with the image open, killed by
its fixture.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconcilers.model import Disk
from reconcilers.storage import volumes
from reconcilers.storage.errors import Refused
from reconcilers.storage.pool import DomainPool, Pool
from reconcilers.storage.volumes import Action, info, plan, realise
from tests.support.cleanup import kill

pytestmark = pytest.mark.qemu
MiB = 1 << 20
FIELD = "spec.qemu.disks[0]"


def make_image(path: Path, fmt: str, size: int = 16 * MiB) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], check=True)
    return path


@pytest.fixture
def pool(tmp_path: Path) -> DomainPool:
    mine = Pool(tmp_path / "pool").of("vm")
    mine.ensure()
    return mine


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
async def test_an_overlay_records_its_base_and_the_base_format(fmt: str, pool: DomainPool,
                                                               tmp_path: Path) -> None:
    base = make_image(tmp_path / f"base.{fmt}", fmt)
    link = tmp_path / "current"  # a symlink the operator may re-point later
    link.symlink_to(base)
    before = sha256(base)
    made = await plan(pool, Disk("root", image=str(link)), FIELD)
    assert (made.action, made.base) == (Action.CREATE, (str(base), fmt))
    assert await realise(made)
    overlay = await info(pool.volume("root"))
    assert (overlay.format, overlay.backing, overlay.backing_format) == ("qcow2", str(base), fmt)
    assert overlay.virtual_size == 16 * MiB  # no size: the base's
    assert oct(pool.volume("root").stat().st_mode & 0o777) == "0o600"
    assert not list(pool.dir.glob(".*"))  # made under a temporary name, renamed
    kept = await plan(pool, Disk("root", image=str(link)), FIELD)
    assert kept.action is Action.KEEP and not await realise(kept)
    assert sha256(base) == before


async def test_a_volume_grows_and_never_shrinks(pool: DomainPool, tmp_path: Path) -> None:
    base = make_image(tmp_path / "base.qcow2", "qcow2")
    assert await realise(await plan(pool, Disk("root", image=str(base), size=32 * MiB), FIELD))
    assert (await info(pool.volume("root"))).virtual_size == 32 * MiB
    grown = await plan(pool, Disk("root", image=str(base), size=48 * MiB), FIELD)
    assert (grown.action, grown.size) == (Action.GROW, 48 * MiB)
    await realise(grown)
    assert (await info(pool.volume("root"))).virtual_size == 48 * MiB
    with pytest.raises(Refused) as refused:
        await plan(pool, Disk("root", image=str(base), size=32 * MiB), FIELD)
    assert refused.value.field == f"{FIELD}.size"
    assert "never shrunk" in refused.value.message and "48 MiB" in refused.value.message
    assert (await plan(pool, Disk("root", image=str(base)), FIELD)).action is Action.KEEP


async def test_an_empty_volume_of_a_size(pool: DomainPool) -> None:
    assert await realise(await plan(pool, Disk("data", size=8 * MiB), FIELD))
    made = await info(pool.volume("data"))
    assert (made.format, made.virtual_size, made.backing) == ("qcow2", 8 * MiB, None)


@pytest.mark.parametrize("disk,field,words", [
    (lambda base, other: Disk("root", image=str(other)), ".image", "was made on the image"),
    (lambda base, other: Disk("root", size=16 * MiB), ".image", "the disk now names no image"),
    (lambda base, other: Disk("root", image=str(base), size=8 * MiB + 1), ".size",
     "multiple of 512"),
])
async def test_what_a_kept_volume_refuses(disk: Callable[[Path, Path], Disk], field: str,
                                          words: str, pool: DomainPool, tmp_path: Path) -> None:
    base = make_image(tmp_path / "base.raw", "raw")
    other = make_image(tmp_path / "other.raw", "raw")
    await realise(await plan(pool, Disk("root", image=str(base)), FIELD))
    with pytest.raises(Refused) as refused:
        await plan(pool, disk(base, other), FIELD)
    assert refused.value.field == FIELD + field
    assert words in refused.value.message


async def test_what_a_new_volume_refuses(pool: DomainPool, tmp_path: Path) -> None:
    base = make_image(tmp_path / "base.qcow2", "qcow2")
    with pytest.raises(Refused, match="at least its base's size") as small:
        await plan(pool, Disk("root", image=str(base), size=8 * MiB), FIELD)
    assert small.value.field == f"{FIELD}.size"
    vmdk = make_image(tmp_path / "base.vmdk", "vmdk")
    with pytest.raises(Refused, match="is a vmdk image; a base image must be raw or qcow2"):
        await plan(pool, Disk("root", image=str(vmdk)), FIELD)
    assert not pool.volume("root").exists()


def test_another_domains_volume_is_not_an_image(tmp_path: Path) -> None:
    pool = Pool(tmp_path / "pool")
    theirs = pool.of("web").volume("root")
    with pytest.raises(Refused, match="a file domctl keeps for domain 'web'") as refused:
        volumes.check_not_a_volume(pool, str(theirs), f"{FIELD}.image")
    assert refused.value.field == f"{FIELD}.image"
    volumes.check_not_a_volume(pool, str(tmp_path / "base.qcow2"), f"{FIELD}.image")


@pytest.fixture
def holding(tmp_path: Path) -> Iterator[Callable[[Path, bool], None]]:
    """`hold(image, writable)`: a real qemu, stopped at -S, with `image` open as a disk (of
    the format its suffix names)."""
    pidfiles: list[Path] = []

    def hold(image: Path, writable: bool) -> None:
        pidfile = tmp_path / f"holder{len(pidfiles)}.pid"
        pidfiles.append(pidfile)
        flag = "off" if writable else "on"
        subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-m", "16", "-nodefaults",
                        "-display", "none", "-S", "-daemonize", "-pidfile", str(pidfile),
                        "-blockdev", f"driver=file,filename={image},node-name=s,read-only={flag}",
                        "-blockdev", f"driver={image.suffix[1:]},file=s,node-name=f,"
                                     f"read-only={flag}",
                        "-device", "virtio-blk-pci,drive=f"], check=True, timeout=30)

    yield hold
    kill(int(p.read_text()) for p in pidfiles if p.exists())


async def test_images_in_use_elsewhere_are_refused(pool: DomainPool, tmp_path: Path,
                                                   holding: Callable[[Path, bool], None]) -> None:
    written = make_image(tmp_path / "written.raw", "raw")
    holding(written, True)
    assert volumes.written_by_another(written)
    with pytest.raises(Refused, match="open for writing in another process") as refused:
        await plan(pool, Disk("root", image=str(written)), FIELD)
    assert refused.value.field == f"{FIELD}.image"

    base = make_image(tmp_path / "base.raw", "raw")
    await realise(await plan(pool, Disk("other", image=str(base)), FIELD))
    overlay = pool.volume("other")
    holding(overlay, False)  # some other qemu has this domain's volume open
    assert volumes.opened_by_another(overlay) and not volumes.written_by_another(overlay)
    assert not volumes.written_by_another(base)  # read as a backing file: still a base
    with pytest.raises(Refused, match="open in another process") as refused:
        await plan(pool, Disk("other", image=str(base)), FIELD)
    assert refused.value.field == FIELD

    # a disk's source: as qemu's own locks would refuse it, before any launch
    with pytest.raises(Refused, match="open in another process") as refused:
        volumes.check_source(str(written), True, f"{FIELD}.source")
    assert refused.value.field == f"{FIELD}.source"
    shared = make_image(tmp_path / "shared.raw", "raw")
    holding(shared, False)
    volumes.check_source(str(shared), True, f"{FIELD}.source")  # two readers: fine
    with pytest.raises(Refused, match="a writable disk is one domain's"):
        volumes.check_source(str(shared), False, f"{FIELD}.source")
