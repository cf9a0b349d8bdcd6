"""Managed save and restore: the image store's crash safety, and the real guest saved and restored.

The store tests stop a save at each point a crash could cut it (a stream written, renamed, a
manifest half-written) and prove nothing usable is left, a damaged manifest is discarded, and
a complete image is found by a fresh store (a new driver). The guest test (about 7 s to boot
under tcg, then about 1 s per save or restore) saves the ticking guest (`guest.ticks=1`) and
restores it from a fresh driver: its ticks go on from where they were and it never boots again
(no second GUEST-READY); saved paused, it comes back paused; and a qemu killed with SIGKILL in
the middle of the migration leaves no image, its exit a crash. A save the controller died in
is finished (image committed) or undone (not) when a fresh driver re-attaches.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import pytest

from reconcilers.errors import DriverError
from reconcilers.model import Cause, EventDetail, EventType, Reason, State
from reconcilers.qemu import migration
from reconcilers.qemu.devices import Layout
from reconcilers.qemu.events import Intent
from reconcilers.qemu.savestate import MANIFEST, Pending, SaveStore
from tests.support.domains import domain
from tests.support.guest import IDLE_CMDLINE, GuestBuild, guest_domain
from tests.support.qemu import QemuEnv
from tests.support.waiting import async_wait_until

E, D = EventType, EventDetail
LAYOUT = Layout(boot_vcpus=1, base_memory=64 << 20, slots={"balloon0": 3})
TICK = re.compile(r"GUEST-TICK (\d+) ")


def begun(store: SaveStore, name: str, data: bytes = b"state" * 100) -> Pending:
    """A save of `name` begun and its stream written (qemu's part)."""
    pending = store.begin(name, paused=False)
    os.write(pending.fd, data)
    return pending


def files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def test_a_committed_save_is_found_by_a_fresh_store(tmp_path: Path) -> None:
    spec = domain("vm").spec
    store = SaveStore(tmp_path)
    saved = store.commit("vm", begun(store, "vm"), spec, LAYOUT, paused=True)
    assert (saved.image.spec, saved.image.paused, saved.image.size) == (spec, True, 500)
    assert saved.layout == LAYOUT
    assert files(tmp_path / "vm") == sorted([MANIFEST, Path(saved.image.path).name])
    again = SaveStore(tmp_path).load("vm")
    assert again == saved
    assert os.stat(tmp_path / "vm").st_mode & 0o777 == 0o700
    assert os.stat(saved.image.path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("cut", ["streaming", "stream renamed", "manifest written"])
def test_a_save_cut_short_leaves_nothing_usable(tmp_path: Path, cut: str) -> None:
    """A crash before the manifest's rename: no image, and the leftovers are swept."""
    store = SaveStore(tmp_path)
    pending = begun(store, "vm")
    if cut != "streaming":
        os.rename(pending.partial, pending.image)
    if cut == "manifest written":
        (pending.directory / f".manifest-{pending.token}.tmp").write_text("{}")
    os.close(pending.fd)
    fresh = SaveStore(tmp_path)
    assert fresh.load("vm") is None
    fresh.sweep("vm")
    assert files(tmp_path / "vm") == []


def test_a_save_cut_short_keeps_an_older_complete_one(tmp_path: Path) -> None:
    store = SaveStore(tmp_path)
    older = store.commit("vm", begun(store, "vm"), domain("vm").spec, LAYOUT, paused=False)
    pending = begun(store, "vm", b"newer")
    assert SaveStore(tmp_path).load("vm") == older
    assert store.interrupted("vm") is False  # the marker of the save under way
    store.abandon(pending)
    assert files(tmp_path / "vm") == sorted([MANIFEST, Path(older.image.path).name])
    assert store.interrupted("vm") is None


@pytest.mark.parametrize("damage", ["not json", "wrong shape", "bad spec", "image size",
                                    "image gone", "other image name"])
def test_a_damaged_save_is_discarded_never_restored(tmp_path: Path, damage: str) -> None:
    store = SaveStore(tmp_path)
    saved = store.commit("vm", begun(store, "vm"), domain("vm").spec, LAYOUT, paused=False)
    manifest = tmp_path / "vm" / MANIFEST
    document = json.loads(manifest.read_text())
    if damage == "not json":
        manifest.write_text("{")
    elif damage == "wrong shape":
        manifest.write_text(json.dumps({**document, "paused": "no"}))
    elif damage == "bad spec":
        manifest.write_text(json.dumps({**document, "spec": {**document["spec"], "vcpus": "8"}}))
    elif damage == "image size":
        with open(saved.image.path, "ab") as image:
            image.write(b"more")
    elif damage == "image gone":
        os.unlink(saved.image.path)
    else:
        manifest.write_text(json.dumps({**document, "image": "../../etc/passwd"}))
    assert SaveStore(tmp_path).load("vm") is None
    assert files(tmp_path / "vm") == []


def test_a_changed_manifest_is_read_again(tmp_path: Path) -> None:
    store = SaveStore(tmp_path)
    store.commit("vm", begun(store, "vm"), domain("vm").spec, LAYOUT, paused=False)
    assert store.load("vm") is not None  # cached
    (tmp_path / "vm" / MANIFEST).write_text("garbage")
    assert store.load("vm") is None


# --- the real guest -----------------------------------------------------------------------------


def ticks(log: Path, offset: int = 0) -> list[int]:
    text = log.read_bytes()[offset:].decode(errors="replace")
    return [int(m.group(1)) for m in TICK.finditer(text)]


async def tick_after(log: Path, last: int, offset: int = 0) -> int:
    """The first tick above `last` written after `offset` of the log."""
    return await async_wait_until(
        lambda: next((n for n in ticks(log, offset) if n > last), None),
        f"a GUEST-TICK above {last}", timeout=90.0, interval=0.1,
        explain=lambda: log.read_bytes()[offset:][-600:].decode(errors="replace"))


def streaming(directory: Path) -> bool:
    """Whether qemu has begun writing a save's stream in `directory`."""
    try:
        return any(path.stat().st_size for path in directory.glob(".partial-*"))
    except FileNotFoundError:  # renamed meanwhile: written in full
        return False


def readies(log: Path) -> int:
    return log.read_bytes().decode(errors="replace").splitlines().count("GUEST-READY")


@pytest.mark.qemu
@pytest.mark.guest
async def test_a_saved_guest_ticks_on_after_its_restore(qemu_env: QemuEnv,
                                                         guest_build: GuestBuild) -> None:
    name = "t-save"
    vm = guest_domain(name, guest_build, cmdline=f"{IDLE_CMDLINE} guest.ticks=1")
    log = qemu_env.context.log_dir / f"{name}.log"
    driver = qemu_env.driver()
    await driver.start(vm, paused=False, token="t1")
    await tick_after(log, 1)

    image = await driver.save(name)  # running: suspended/paused, stopped/saved
    assert (image.spec, image.paused) == (vm.spec, False)
    assert os.path.getsize(image.path) == image.size > 0
    saved = qemu_env.events[-1]
    assert (saved.state, saved.reason, saved.cause) == (State.SHUTOFF, Reason.SAVED,
                                                        Cause.CONTROLLER)
    assert saved.events == ((E.SUSPENDED, D.PAUSED), (E.STOPPED, D.SAVED))
    assert (await driver.observe(name)).reason is Reason.SAVED
    last = max(ticks(log))

    fresh = qemu_env.driver()  # a controller restart: the image is on disk
    assert fresh.saved_image(name) == image
    offset = log.stat().st_size
    live = await fresh.restore(vm, token="t2")
    assert (live.state, live.reason) == (State.RUNNING, Reason.RESTORED)
    first = await tick_after(log, 0, offset)
    assert last < first <= last + 2  # the same boot ticking on (n+2: a line cut at `stop`)
    assert readies(log) == 1
    assert fresh.saved_image(name) is None and not os.path.exists(image.path)

    await fresh.suspend(name)  # saved paused: restored paused
    paused = await fresh.save(name)
    assert paused.paused
    assert qemu_env.events[-1].events == ((E.STOPPED, D.SAVED),)
    live = await fresh.restore(vm, token="t3")
    assert (live.state, live.reason) == (State.PAUSED, Reason.USER)
    assert (await fresh.observe(name)).state is State.PAUSED
    offset, last = log.stat().st_size, max(ticks(log))
    await fresh.resume(name)
    assert last < await tick_after(log, last, offset) <= last + 2
    assert readies(log) == 1

    # qemu killed in the middle of the migration: no image, the exit a crash
    saving = asyncio.ensure_future(fresh.save(name))
    directory = qemu_env.context.state_dir / "qemu" / "saved" / name
    await async_wait_until(lambda: saving.done() or streaming(directory),
                           "the save's stream being written", timeout=30.0, interval=0.001)
    assert not saving.done(), "the save ended before qemu could be killed in it"
    os.kill(fresh._tracked[name].record.pid, signal.SIGKILL)
    with pytest.raises(DriverError):
        await saving
    assert fresh.saved_image(name) is None and qemu_env.driver().saved_image(name) is None
    assert files(directory) == []
    crashed = await qemu_env.wait_event(lambda e: e.reason is Reason.CRASHED)
    assert crashed.events == ((E.STOPPED, D.FAILED),)
    assert (await fresh.observe(name)).state is State.SHUTOFF


@pytest.mark.qemu
async def test_only_a_running_or_paused_domain_is_saved(qemu_env: QemuEnv,
                                                        loop_image: Path) -> None:
    driver = qemu_env.driver()
    with pytest.raises(DriverError, match="not running"):
        await driver.save("t-none")
    vm = domain("t-nosave", image=loop_image)
    await driver.start(vm, paused=False, token="t")
    driver._tracked["t-nosave"].files.spec.unlink()  # as a run of an older domctl
    with pytest.raises(DriverError, match="not recorded"):
        await driver.save("t-nosave")
    assert (await driver.observe("t-nosave")).state is State.RUNNING
    with pytest.raises(DriverError, match="no managed-save image"):
        await driver.restore(vm, token="t")


@pytest.mark.qemu
async def test_a_domain_started_paused_and_never_run_is_saved_and_restored_paused(
        qemu_env: QemuEnv, loop_image: Path) -> None:
    """qemu's prelaunch state (-S, no cont yet) migrates out like a paused guest."""
    driver = qemu_env.driver()
    vm = domain("t-prelaunch", image=loop_image)
    await driver.start(vm, paused=True, token="t")
    saved = await driver.save("t-prelaunch")
    assert saved.paused and driver.saved_image("t-prelaunch") is not None
    assert (await driver.observe("t-prelaunch")).state is State.SHUTOFF
    restored = await driver.restore(vm, token="t")
    try:
        assert restored.state is State.PAUSED
        assert driver.saved_image("t-prelaunch") is None
    finally:
        await driver.destroy("t-prelaunch")


@pytest.mark.qemu
@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
async def test_a_save_the_controller_died_in_is_settled_at_reattach(
        qemu_env: QemuEnv, loop_image: Path, committed: bool) -> None:
    """Its image committed: the save is finished (qemu quit, shutoff/saved); not: undone (the
    guest runs on, the stream is gone)."""
    name = "t-cut"
    vm = domain(name, image=loop_image)
    driver = qemu_env.driver()
    live = await driver.start(vm, paused=False, token="t")
    tracked = driver._tracked[name]
    pending = driver._saves.begin(name, paused=False)
    if committed:
        await driver._save(tracked, pending, vm.spec, paused=False)  # no quit: the crash
    else:
        tracked.run.intent = Intent.SAVE
        await tracked.qmp.stop()
        await migration.save(tracked.qmp, pending.fd, 30.0)  # the stream, never committed
        os.close(pending.fd)
    await driver.close()
    again = qemu_env.driver()
    assert live.record is not None
    after = await again.reattach(live.record)
    if committed:
        saved = await qemu_env.wait_event(lambda e: e.reason is Reason.SAVED)
        assert saved.events == ((E.STOPPED, D.SAVED),)  # found paused (postmigrate), then quit
        assert (await again.observe(name)).state is State.SHUTOFF
        assert again.saved_image(name) is not None
    else:
        assert after is not None and after.state is State.RUNNING
        assert again.saved_image(name) is None
        assert files(qemu_env.context.state_dir / "qemu" / "saved" / name) == []
