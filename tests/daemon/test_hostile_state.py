"""Crash-only start-up (issue 11 point 3): no single corrupt, truncated or hostile state file
keeps `domctl run` from starting.

Each kind of bad file is planted in a state dir before the controller starts: malformed JSON,
valid JSON of the wrong shape, a record with `pid: -1`, a status with a malformed `since` (the
two failures that kept the controller from starting), binary garbage, a directory where a file
should be, a huge (sparse) file, a torn last line of events.jsonl, a lock path that is no file.
The controller must start, log each bad file by name, move it aside (`<file>.corrupt-<stamp>`),
and reconcile a manifest's domain normally; events written after the torn line read back.

A damaged record of a domain that runs is the dangerous case: the record was the proof of the
process, and starting the manifest's domain blindly would run a second qemu on its disks. Its
domain is held Stalled ("record unreadable; check for a running process") and left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.domains import domain

from .conftest import Controller, alive, condition, controller_on

pytestmark = pytest.mark.qemu

UNREADABLE = "record unreadable; check for a running process"


def moved_aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def qemu_pids_named(name: str) -> list[int]:
    """Every live qemu process whose argv carries `-name guest=<name>` (any runtime dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(
                arg == f"guest={name}".encode() or arg.startswith(f"guest={name},".encode())
                for arg in argv):
            pids.append(int(entry.name))
    return pids


def plant(state: Path) -> dict[str, Path]:
    """One bad file of each kind; the paths by kind."""
    domains, status = state / "domains", state / "status"
    domains.mkdir(parents=True)
    status.mkdir(parents=True)
    bad = {
        "malformed": domains / "malformed.json",
        "wrong-shape": domains / "wrong-shape.json",
        "pid": domains / "negative-pid.json",
        "binary": domains / "binary.json",
        "directory": domains / "directory.json",
        "huge": domains / "huge.json",
        "since": status / "bad-since.json",
        "lock": state / "domctl.lock",
    }
    bad["malformed"].write_text('{"name": "malformed", "uuid": ')
    bad["wrong-shape"].write_text('["name", "wrong-shape"]')
    bad["pid"].write_text(json.dumps({
        "name": "negative-pid", "uuid": "0b9c6f5e-7a53-4f5e-9a5a-2d5b7c0e1f00", "version": 2,
        "driver": "qemu", "runtime": {
            "name": "negative-pid", "driver": "qemu", "pid": -1, "boot_id": "x",
            "starttime": 5, "uuid": "0b9c6f5e-7a53-4f5e-9a5a-2d5b7c0e1f00", "extra": {}}}))
    bad["binary"].write_bytes(bytes(range(256)) * 64)
    bad["directory"].mkdir()
    with open(bad["huge"], "wb") as f:
        f.truncate(8 * 1024 ** 3)  # sparse: never read, or start-up would take GBs
    bad["since"].write_text(json.dumps({
        "name": "bad-since", "uuid": "u", "driver": "qemu", "desired": "running",
        "state": "running", "reason": "booted", "since": "yesterday-ish"}))
    bad["lock"].mkdir()
    return bad


def test_no_bad_state_file_keeps_the_controller_from_starting(tmp_path: Path) -> None:
    ctl = Controller(tmp_path)
    try:
        bad = plant(ctl.state)
        whole = {"time": "2026-01-01T00:00:00.000Z", "domain": "before", "event": "defined",
                 "detail": "added", "message": "written before the crash"}
        events = ctl.state / "events.jsonl"
        events.write_text(json.dumps(whole) + '\n{"time": "2026-01-01T00:00:01.0')
        name = ctl.name("after-bad")
        ctl.apply(domain(name))
        ctl.start()

        running = ctl.wait_state(name, "running", "booted", timeout=60)
        assert alive(running["pid"])
        for kind, path in bad.items():
            assert len(moved_aside(path)) == 1, (kind, sorted(path.parent.iterdir()))
            logged = [line for line in ctl.log_lines() if line.get("path") == str(path)
                      and line.get("level") in ("error", "warning")]
            assert logged, f"no log line names {path}\n{ctl.stderr_tail()}"
        assert ctl.state.joinpath("domctl.lock").is_file()
        assert not bad["since"].exists()  # no domain of that name: nothing writes it again
        assert any(line.get("event") == "log file's last line is torn; it is skipped and new "
                   "records start on a new line" and line.get("path") == str(events)
                   for line in ctl.log_lines())

        lines = events.read_text().splitlines()
        assert json.loads(lines[0]) == whole
        assert lines[1] == '{"time": "2026-01-01T00:00:01.0'  # the torn line, alone on its line
        assert ctl.wait_event(name, "started", "booted")["cause"] == "manifest"
        assert [e["message"] for e in ctl.events("before")] == ["written before the crash"]

        # rebuilt stalled, then forgotten by the engine (no manifest declares them): started
        # by nobody, their evidence kept aside
        rebuilt = [line["domain"] for line in ctl.logged("domain record rebuilt")
                   if line.get("stalled")]
        assert sorted(rebuilt) == ["binary", "directory", "huge", "malformed", "negative-pid",
                                   "wrong-shape"]
        assert qemu_pids_named("negative-pid") == []
        assert ctl.stop() == 0
    finally:
        ctl.cleanup()


def test_an_immutable_lock_file_is_locked_read_only(tmp_path: Path) -> None:
    """Root cannot write an immutable file (chattr +i): the lock is still taken, on a
    read-only descriptor, and a second controller is refused."""
    lock = tmp_path / "state" / "domctl.lock"
    lock.parent.mkdir(parents=True)
    lock.write_bytes(b"\xff\xfe not a pid")
    if subprocess.run(["chattr", "+i", str(lock)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with controller_on(tmp_path) as ctl:
            assert ctl.logged("lock file not writable; locked read-only, holder's pid not "
                              "recorded", path=str(lock))
            argv = ctl.argv()
            argv[argv.index("--runtime-dir") + 1] = str(tmp_path / "other-runtime")
            second = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                    check=False)
            assert second.returncode != 0
            assert f"{lock} is locked" in second.stderr, second.stderr
    finally:
        subprocess.run(["chattr", "-i", str(lock)], check=False)


def test_a_damaged_record_of_a_running_domain_never_starts_a_second_copy(
        tmp_path: Path) -> None:
    with controller_on(tmp_path) as ctl:
        name = ctl.name("damaged")
        ctl.apply(domain(name))
        pid = ctl.wait_state(name, "running", "booted", timeout=60)["pid"]
        assert ctl.stop() == 0  # the domain keeps running
        record = ctl.state / "domains" / f"{name}.json"
        plain = json.loads(record.read_text())
        plain["runtime"]["pid"] = -1
        record.write_text(json.dumps(plain))

        ctl.start()
        held = ctl.wait_status(name, "held Stalled: record unreadable",
                               lambda s: UNREADABLE in condition(s, "Stalled").get(
                                   "message", ""))
        assert condition(held, "Stalled")["status"] == "True"
        assert len(moved_aside(record)) == 1
        assert ctl.logged("bad state file moved aside", path=str(record))
        ctl.wait_left_alone([name], after=0)
        assert alive(pid)
        assert qemu_pids_named(name) == [pid], "a second qemu was started"
        assert os.path.exists(f"/proc/{pid}")
