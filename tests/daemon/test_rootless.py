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
from collections.abc import Iterator
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


@contextlib.contextmanager
def user_controller(name: str, manifest: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`domctl run` as uid 65534 on a fresh home holding one manifest; yields the process and
    the domain's status file; stops it and removes the home afterwards."""
    home = Path(tempfile.mkdtemp(prefix="dt-user-"))
    os.chmod(home, 0o755)
    manifests = home / ".config" / "domctl" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / f"{name}.yaml").write_text(manifest)
    for path in (home, *home.rglob("*")):
        os.chown(path, NOBODY, NOBODY)
    argv, env = nobody_command("run", "--resync", "2", home=str(home))
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    daemon = subprocess.Popen(argv, env=env, cwd="/", user=NOBODY, group=NOBODY,
                              extra_groups=[], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        yield daemon, home / ".local" / "state" / "domctl" / "status" / f"{name}.json"
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=30)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        for pidfile in (home / "run").glob("domctl/qemu/*.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.qemu
def test_a_user_runs_qemu_domains_without_cgroups() -> None:
    name = unique("user-vm")
    with user_controller(name, qemu_manifest(name)) as (daemon, status_file):
        status = wait_for_file_json(status_file, lambda s: s["state"] == "running")
        pid = status["pid"]
        assert alive(pid) and os.stat(f"/proc/{pid}").st_uid == NOBODY
        ready = [c for c in status["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", status
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert alive(pid)  # the user's domains outlive their controller too


@pytest.mark.qemu
def test_a_user_cannot_ask_for_cpu_tuning_without_a_cgroup() -> None:
    name = unique("user-tuned")
    manifest = qemu_manifest(name, extra="  cputune: {shares: 512}\n")
    with user_controller(name, manifest) as (_, status_file):
        status = wait_for_file_json(
            status_file, lambda s: any(c["type"] == "Stalled" and c["reason"] == "HostValidation"
                                       for c in s["conditions"]))
        stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
        assert "spec.cputune.shares: needs a cgroup" in stalled["message"], stalled
        assert status["state"] == "shutoff" and status["pid"] is None
