"""Atomic writes on real files; the instance lock against a real second process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.state.fsutil import (
    InstanceLock,
    LockHeldError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
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
