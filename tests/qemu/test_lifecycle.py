"""Real qemu: start, start paused, suspend/resume, destroy, and the guest powering itself off."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from reconcilers.errors import DriverError
from reconcilers.identity import is_alive
from reconcilers.model import (
    Cause,
    Disk,
    DiskBus,
    DiskFormat,
    EventDetail,
    EventType,
    Lifecycle,
    LifecycleAction,
    Reason,
    SerialMode,
    State,
    Vnc,
    Watchdog,
)
from reconcilers.qemu import bringup, process
from reconcilers.qemu.driver import QemuDriver
from tests.support.domains import TCG_PC, domain
from tests.support.qemu import QemuEnv

pytestmark = pytest.mark.qemu


def assert_confined(pid: int, path: str) -> None:
    """Every thread of `pid` is in `path` of the cpu, memory and pids hierarchies."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        where = {}
        for line in (task / "cgroup").read_text().splitlines():
            _, controllers, at = line.split(":", 2)
            where.update(dict.fromkeys(controllers.split(","), at))
        assert [where.get(c) for c in ("cpu", "memory", "pids")] == [path] * 3, task


async def test_start_running_then_destroy(qemu_env: QemuEnv, loop_image: Path) -> None:
    runtime = qemu_env.context.runtime_dir / "qemu"
    runtime.mkdir(parents=True)
    (runtime / "t-run.pid").write_text("999999\n")  # left by a crashed run
    (runtime / "t-run.qmp").write_text("")  # a stale socket path
    driver = qemu_env.driver()
    live = await driver.start(domain("t-run", image=loop_image), paused=False, token="test")
    assert (live.state, live.reason) == (State.RUNNING, Reason.BOOTED)
    assert live.pid is not None and is_alive(live.pid)
    assert "accel tcg" in live.message
    cgroup = driver._tracked["t-run"].cgroup
    assert all(d.is_dir() for d in cgroup.directories.values())
    assert_confined(live.pid, f"/{qemu_env.settings.cgroup_parent}/t-run")
    assert os.getsid(live.pid) not in (os.getsid(0), 0)  # its own session
    await driver.destroy("t-run")
    assert not is_alive(live.pid)
    assert not any(d.exists() for d in cgroup.directories.values())
    live = await driver.observe("t-run")
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.DESTROYED)
    event = qemu_env.events[-1]
    assert event.events == ((EventType.STOPPED, EventDetail.DESTROYED),)
    assert event.cause is Cause.CONTROLLER


async def test_start_paused_suspend_resume(qemu_env: QemuEnv, loop_image: Path) -> None:
    driver = qemu_env.driver()
    live = await driver.start(domain("t-pause", image=loop_image), paused=True, token="test")
    assert (live.state, live.reason) == (State.PAUSED, Reason.USER)
    await driver.resume("t-pause")
    assert (await driver.observe("t-pause")).state is State.RUNNING
    await driver.suspend("t-pause")
    live = await driver.observe("t-pause")
    assert (live.state, live.reason) == (State.PAUSED, Reason.USER)
    await driver.resume("t-pause")
    live = await driver.observe("t-pause")
    assert (live.state, live.reason) == (State.RUNNING, Reason.UNPAUSED)
    assert qemu_env.events == []  # our own operations are not reported as runtime events


async def test_guest_poweroff(qemu_env: QemuEnv, poweroff_image: Path) -> None:
    driver = qemu_env.driver()
    await driver.start(domain("t-off", image=poweroff_image), paused=False, token="test")
    event = await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    assert event.reason is Reason.SHUTDOWN
    assert event.events == ((EventType.SHUTDOWN, EventDetail.GUEST),
                            (EventType.STOPPED, EventDetail.SHUTDOWN))
    assert event.cause is Cause.GUEST
    live = await driver.observe("t-off")
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.SHUTDOWN)


async def test_shutdown_ignored_then_destroy(qemu_env: QemuEnv, loop_image: Path) -> None:
    driver = qemu_env.driver()
    live = await driver.start(domain("t-deaf", image=loop_image), paused=False, token="test")
    assert await driver.shutdown("t-deaf", timeout=1.0) is False
    assert live.pid is not None and is_alive(live.pid)
    assert (await driver.observe("t-deaf")).state is State.RUNNING
    await driver.destroy("t-deaf")
    live = await driver.observe("t-deaf")
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.DESTROYED)


@pytest.mark.parametrize("sig,reason,events,said", [
    (signal.SIGKILL, Reason.CRASHED, ((EventType.STOPPED, EventDetail.FAILED),), ""),
    # libvirt: a SIGTERM from outside is the host asking: shutdown/host, shutoff/shutdown
    (signal.SIGTERM, Reason.SHUTDOWN, ((EventType.SHUTDOWN, EventDetail.HOST),
                                       (EventType.STOPPED, EventDetail.SHUTDOWN)),
     "terminating on signal 15")])
async def test_a_signal_from_outside(qemu_env: QemuEnv, loop_image: Path, sig: signal.Signals,
                                     reason: Reason, events: tuple[object, ...],
                                     said: str) -> None:
    driver = qemu_env.driver()
    live = await driver.start(domain("t-kill", image=loop_image), paused=False, token="test")
    assert live.pid is not None
    cgroup = driver._tracked["t-kill"].cgroup
    os.kill(live.pid, sig)
    event = await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    assert event.reason is reason
    assert event.events == events
    assert event.cause is Cause.EXTERNAL
    assert said in event.message  # qemu's own last words, when it had any
    live = await driver.observe("t-kill")
    assert (live.state, live.reason) == (State.SHUTOFF, reason)
    assert not any(d.exists() for d in cgroup.directories.values())


async def test_destroy_emits_stopped_destroyed_only(qemu_env: QemuEnv, loop_image: Path) -> None:
    """libvirt drops the SHUTDOWN (host-signal) qemu sends on a destroy's SIGTERM: a destroy
    is stopped/destroyed alone, no shutdown/host before it."""
    driver = qemu_env.driver()
    await driver.start(domain("t-destroy", image=loop_image), paused=False, token="test")
    await driver.destroy("t-destroy")
    assert [e.events for e in qemu_env.events] == [((EventType.STOPPED, EventDetail.DESTROYED),)]
    assert (qemu_env.events[0].state, qemu_env.events[0].reason) == (State.SHUTOFF,
                                                                      Reason.DESTROYED)


async def test_failed_start_reports_qemus_message(qemu_env: QemuEnv, tmp_path: Path) -> None:
    bad = tmp_path / "not-qcow2.img"
    bad.write_bytes(b"\0" * 512)
    qcow2 = Disk(name="boot", source=str(bad), format=DiskFormat.QCOW2, bus=DiskBus.IDE)
    vm = domain("t-bad", qemu=dataclasses.replace(TCG_PC, disks=(qcow2,)))
    driver = qemu_env.driver()
    with pytest.raises(DriverError) as caught:
        await driver.start(vm, paused=False, token="test")
    assert "Image is not in qcow2 format" in caught.value.message  # qemu's own words
    assert (await driver.observe("t-bad")).state is State.SHUTOFF


async def test_poweroff_with_restart_action_restarts_in_place(
        qemu_env: QemuEnv, poweroff_image: Path) -> None:
    driver = qemu_env.driver()
    vm = domain("t-again", image=poweroff_image,
                lifecycle=Lifecycle(on_poweroff=LifecycleAction.RESTART))
    live = await driver.start(vm, paused=False, token="test")
    restarted = (EventType.STARTED, EventDetail.BOOTED)
    await qemu_env.wait_event(lambda e: restarted in e.events)
    assert (await driver.observe("t-again")).pid == live.pid  # same process, guest reset
    await driver.destroy("t-again")
    assert qemu_env.events[-1].reason is Reason.DESTROYED
    assert all(e.state is not State.PAUSED for e in qemu_env.events)


@pytest.mark.parametrize("machine", ["pc", "q35"])
async def test_rich_domain_starts(qemu_env: QemuEnv, loop_image: Path,
                                  tmp_path: Path, machine: str) -> None:
    data, logs, iso = tmp_path / "data,disk.raw", tmp_path / "logs.raw", tmp_path / "cd.iso"
    for image in (data, logs, iso):
        image.write_bytes(bytes(1 << 20))
    qemu = dataclasses.replace(
        TCG_PC, machine=machine, serial=SerialMode.SOCKET, vnc=Vnc(password="pw"),
        guest_agent=True, panic=True, watchdog=Watchdog(), cdrom=str(iso),
        disks=(Disk(name="data,1", source=str(data), bus=DiskBus.SATA),
               Disk(name="scsi", source=str(logs), bus=DiskBus.SCSI, readonly=True)))
    driver = qemu_env.driver()
    live = await driver.start(domain("t-rich", image=loop_image, qemu=qemu),
            paused=True, token="test")
    assert live.state is State.PAUSED
    files = driver._tracked["t-rich"].files
    assert files.serial.exists() and files.agent.exists()
    assert "starting: " in files.log.read_text()
    await driver.destroy("t-rich")
    assert not files.qmp.exists() and not files.pidfile.exists()


async def test_serial_output_goes_to_the_domain_log(qemu_env: QemuEnv,
                                                   hello_image: Path) -> None:
    driver = qemu_env.driver()
    await driver.start(domain("t-serial", image=hello_image), paused=False, token="test")
    await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    log = (Path(qemu_env.context.log_dir) / "t-serial.log").read_text()
    assert "domctl: starting: " in log and "-name guest=t-serial" in log
    assert "DQ!" in log
    assert "domctl: stopped: shutdown" in log


def test_vnc_auto_port_skips_a_busy_one() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert process.free_vnc_port("127.0.0.1", port, port + 50) > port
    with pytest.raises(process.LaunchError), socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process.free_vnc_port("127.0.0.1", port, port)


async def test_start_aborted_after_launch_kills_qemu_and_reports_failed(
        qemu_env: QemuEnv, loop_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launch = process.launch_domain

    async def socket_lost(*args: Any, spawned: Any = None, restore: Any = None) -> int:
        pid = await launch(*args)  # nothing overlaps the start-up: no early QMP connect
        (qemu_env.context.runtime_dir / "qemu" / "t-abort.qmp").unlink()  # qemu runs, QMP gone
        return pid

    monkeypatch.setattr(process, "launch_domain", socket_lost)
    driver = qemu_env.driver()
    with pytest.raises(DriverError, match=r"t-abort\.qmp"):
        await driver.start(domain("t-abort", image=loop_image), paused=False, token="test")
    event = await qemu_env.wait_event(lambda e: e.state is State.SHUTOFF)
    assert (event.reason, event.events) == (Reason.FAILED,
                                            ((EventType.STOPPED, EventDetail.FAILED),))
    live = await driver.observe("t-abort")
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.FAILED)
    assert not list((qemu_env.context.runtime_dir / "qemu").glob("*.pid"))  # qemu is gone


async def test_qemu_not_moved_while_it_initialised_is_moved_before_cont(
        qemu_env: QemuEnv, loop_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bringup, "_move", lambda _cgroup, _launcher: None)
    driver = qemu_env.driver()
    live = await driver.start(domain("t-late", image=loop_image), paused=True, token="test")
    assert live.pid is not None
    assert_confined(live.pid, f"/{qemu_env.settings.cgroup_parent}/t-late")
    await driver.destroy("t-late")


async def test_a_qemu_not_initialised_in_time_is_killed(qemu_env: QemuEnv, loop_image: Path
                                                       ) -> None:
    settings = dataclasses.replace(qemu_env.settings, start_timeout=0.001)  # before it forks
    driver = QemuDriver(qemu_env.context, settings)
    qemu_env.drivers.append(driver)
    with pytest.raises(DriverError, match="did not finish initialising"):
        await driver.start(domain("t-slow", image=loop_image), paused=True, token="test")
    assert not process.running_pids(driver._files("t-slow"))
    live = await driver.observe("t-slow")
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.FAILED)


async def test_start_without_a_cgroup_launches_nothing(qemu_env: QemuEnv, loop_image: Path
                                                       ) -> None:
    # "cpu.shares" is a file at the root of the cpu hierarchy: the cgroup cannot be created,
    # which the start finds out before it launches anything
    settings = dataclasses.replace(qemu_env.settings, cgroup_parent="cpu.shares")
    driver = QemuDriver(qemu_env.context, settings)
    qemu_env.drivers.append(driver)
    with pytest.raises(DriverError, match="cgroup"):
        await driver.start(domain("t-nocg", image=loop_image), paused=False, token="test")
    live = await driver.observe("t-nocg")
    assert (live.state, live.reason) == (State.SHUTOFF, Reason.FAILED)
    assert not (qemu_env.context.log_dir / "t-nocg.log").exists()  # never launched
    assert not qemu_env.events


async def test_vnc_port_taken_by_a_racing_start_is_retried(
        qemu_env: QemuEnv, loop_image: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = process.free_vnc_port
    with socket.socket() as busy:
        taken = real("127.0.0.1", 5900, 5998)
        busy.bind(("127.0.0.1", taken))
        busy.listen()
        answers = iter([taken])  # the check saw it free; then someone else bound it

        def racing(listen: str, first: int, last: int) -> int:
            return next(answers, None) or real(listen, first, last)

        monkeypatch.setattr(process, "free_vnc_port", racing)
        vm = domain("t-vnc", image=loop_image, qemu=dataclasses.replace(TCG_PC, vnc=Vnc()))
        driver = qemu_env.driver()
        await driver.start(vm, paused=True, token="test")
        log = (Path(qemu_env.context.log_dir) / "t-vnc.log").read_text()
        assert f"VNC port {taken} was taken meanwhile" in log
        await driver.destroy("t-vnc")
