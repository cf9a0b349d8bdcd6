"""Atomic writes on real files; the instance lock against a real second process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.state.fsutil import (
    QUARANTINE_INFIX,
    QUARANTINE_KEEP,
    InstanceLock,
    LockFileError,
    LockHeldError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    quarantine,
)

HOLDER = """
import fcntl, os, sys
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
f.truncate(0); f.write(f"{os.getpid()}\\n"); f.flush()
print("locked", flush=True)
sys.stdin.read()
"""


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "web-1.json"
    atomic_write_text(target, "old")
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert target.read_text().endswith("\n")
    assert os.listdir(tmp_path) == ["web-1.json"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_atomic_write_mode(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    atomic_write_bytes(target, b"x", mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"v": object()})  # fails before any temp file exists
    with pytest.raises(IsADirectoryError):
        atomic_write_bytes(tmp_path, b"x")  # rename onto a directory fails after the temp file
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.*.tmp"))


def test_temp_file_name_is_hidden_with_tmp_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_text(tmp_path / "a.json", "{}")
    assert len(seen) == 1
    assert seen[0].startswith(".a.json.") and seen[0].endswith(".tmp")


def test_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    lock_path = tmp_path / "domctl.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError) as caught:
            InstanceLock.acquire(lock_path)
        assert caught.value.pid == child.pid
        assert str(lock_path) in str(caught.value)
        assert f"pid {child.pid}" in str(caught.value)
    finally:
        child.communicate("")  # closing its stdin lets the child exit, dropping the lock
    lock = InstanceLock.acquire(lock_path)
    assert lock_path.read_text() == f"{os.getpid()}\n"
    lock.release()
    assert lock_path.exists()  # never unlinked


def test_lock_held_by_this_process_refuses_a_second_child(tmp_path: Path) -> None:
    lock_path = tmp_path / "domctl.lock"
    lock = InstanceLock.acquire(lock_path)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", HOLDER, str(lock_path)], input="", capture_output=True,
            text=True, timeout=30)
        assert probe.returncode != 0
        assert "BlockingIOError" in probe.stderr
    finally:
        lock.release()
    second = InstanceLock.acquire(lock_path)
    try:
        with pytest.raises(LockHeldError):
            InstanceLock.acquire(lock_path)  # flock is per open file: even this process conflicts
    finally:
        second.release()


def test_quarantine_renames_aside_and_never_overwrites(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    first, second = [], []
    bad.write_text("one")
    first.append(quarantine(bad, "test"))
    bad.write_text("two")
    second.append(quarantine(bad, "test"))
    assert first[0] is not None and second[0] is not None and first[0] != second[0]
    assert first[0].read_text() == "one" and second[0].read_text() == "two"
    assert QUARANTINE_INFIX in first[0].name and not bad.exists()
    assert quarantine(bad, "gone") is None


def test_only_the_newest_moved_aside_files_are_kept(tmp_path: Path) -> None:
    """A file that keeps going bad does not fill the state dir: the last QUARANTINE_KEEP."""
    bad, other = tmp_path / "x.json", tmp_path / "y.json"
    other.write_text("other")
    assert quarantine(other, "test") is not None
    for i in range(QUARANTINE_KEEP + 3):
        bad.write_text(str(i))
        assert quarantine(bad, "test") is not None
    aside = sorted(p.read_text() for p in tmp_path.glob("x.json.corrupt-*"))
    assert aside == sorted(str(i) for i in range(3, QUARANTINE_KEEP + 3))
    assert len(list(tmp_path.glob("y.json.corrupt-*"))) == 1  # another file's are its own


@pytest.mark.parametrize("plant", ["directory", "symlink", "fifo", "garbage", "dangling"])
def test_a_bad_lock_path_is_moved_aside_and_a_fresh_file_locked(tmp_path: Path,
                                                                 plant: str) -> None:
    lock_path = tmp_path / "domctl.lock"
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    if plant == "directory":
        lock_path.mkdir()
    elif plant == "symlink":
        lock_path.symlink_to(target)
    elif plant == "dangling":
        lock_path.symlink_to(tmp_path / "nowhere")
    elif plant == "fifo":
        os.mkfifo(lock_path)
    else:
        lock_path.write_bytes(bytes(range(256)) * 1000)
    lock = InstanceLock.acquire(lock_path)
    try:
        assert lock_path.is_file() and not lock_path.is_symlink()
        assert lock_path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockHeldError) as caught:
            InstanceLock.acquire(lock_path)
        assert caught.value.pid == os.getpid()
    finally:
        lock.release()
    assert target.read_text() == "keep me"  # never truncated through a symlink
    assert not (tmp_path / "nowhere").exists()
    moved = list(tmp_path.glob("domctl.lock.corrupt-*"))
    assert len(moved) == (0 if plant == "garbage" else 1)


def test_an_unwritable_lock_file_is_locked_read_only(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user, a lock file someone else owns (as root: an immutable one) is still a lock."""
    lock_path = tmp_path / "domctl.lock"
    lock_path.write_text("12345\n")
    real_open = os.open

    def no_write(path: str, flags: int, *args: int) -> int:
        if flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_write)
    lock = InstanceLock.acquire(lock_path)
    try:
        monkeypatch.setattr(os, "open", real_open)
        child = subprocess.run([sys.executable, "-c", HOLDER, str(lock_path)], input="",
                               capture_output=True, text=True, timeout=30)
        assert child.returncode != 0 and "BlockingIOError" in child.stderr
    finally:
        lock.release()
    assert lock_path.read_text() == "12345\n"


def test_an_unopenable_lock_file_is_moved_aside(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    lock_path = tmp_path / "domctl.lock"
    lock_path.write_text("x")
    unreadable = {lock_path.stat().st_ino}
    real_open = os.open

    def refuse(path: str, flags: int, *args: int) -> int:
        if os.path.exists(path) and os.stat(path).st_ino in unreadable:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    lock = InstanceLock.acquire(lock_path)
    lock.release()
    assert len(list(tmp_path.glob("domctl.lock.corrupt-*"))) == 1


def test_a_lock_that_can_neither_be_used_nor_moved_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock_path = tmp_path / "domctl.lock"
    lock_path.symlink_to(tmp_path / "nowhere")
    monkeypatch.setattr("controller.state.fsutil.quarantine", lambda *_: None)
    with pytest.raises(LockFileError, match=r"domctl\.lock"):
        InstanceLock.acquire(lock_path)
