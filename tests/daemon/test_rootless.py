"""`domctl run` as an unprivileged user, with its XDG default directories (DESIGN §8)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import NOBODY, alive, nobody_command, qemu_manifest, unique


def wait_for_file_json(path: Path, predicate: object, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            last = json.loads(path.read_text())
            if predicate(last):  # type: ignore[operator]
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out; last {path.name}: {last}")


@pytest.mark.qemu
def test_a_user_runs_qemu_domains_without_cgroups() -> None:
    home = Path(tempfile.mkdtemp(prefix="dt-user-"))
    os.chmod(home, 0o755)
    manifests = home / ".config" / "domctl" / "manifests"
    manifests.mkdir(parents=True)
    name = unique("user-vm")
    (manifests / f"{name}.yaml").write_text(qemu_manifest(name))
    for path in (home, *home.rglob("*")):
        os.chown(path, NOBODY, NOBODY)
    argv, env = nobody_command("run", "--resync", "2", home=str(home))
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    daemon = subprocess.Popen(argv, env=env, cwd="/", user=NOBODY, group=NOBODY,
                              extra_groups=[], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    status_file = home / ".local" / "state" / "domctl" / "status" / f"{name}.json"
    pid = None
    try:
        status = wait_for_file_json(status_file, lambda s: s["state"] == "running")
        pid = status["pid"]
        assert alive(pid) and os.stat(f"/proc/{pid}").st_uid == NOBODY
        ready = [c for c in status["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", status
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert alive(pid)  # the user's domains outlive their controller too
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.qemu
def test_a_user_cannot_ask_for_cpu_tuning_without_a_cgroup() -> None:
    home = Path(tempfile.mkdtemp(prefix="dt-user-"))
    os.chmod(home, 0o755)
    manifests = home / ".config" / "domctl" / "manifests"
    manifests.mkdir(parents=True)
    name = unique("user-tuned")
    (manifests / f"{name}.yaml").write_text(
        qemu_manifest(name, extra="  cputune: {shares: 512}\n"))
    for path in (home, *home.rglob("*")):
        os.chown(path, NOBODY, NOBODY)
    argv, env = nobody_command("run", "--resync", "2", home=str(home))
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    daemon = subprocess.Popen(argv, env=env, cwd="/", user=NOBODY, group=NOBODY,
                              extra_groups=[], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    status_file = home / ".local" / "state" / "domctl" / "status" / f"{name}.json"
    try:
        status = wait_for_file_json(
            status_file, lambda s: any(c["type"] == "Stalled" and c["reason"] == "HostValidation"
                                       for c in s["conditions"]))
        stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
        assert "spec.cputune.shares: needs a cgroup" in stalled["message"], stalled
        assert status["state"] == "shutoff" and status["pid"] is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(timeout=30)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(home, ignore_errors=True)
