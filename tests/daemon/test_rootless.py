"""`domctl run` as an unprivileged user, with its XDG default directories (DESIGN §8)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconcilers.model import CpuTune, Domain
from tests.support.cleanup import scratch_dir, sweep
from tests.support.domains import domain, manifest
from tests.support.waiting import wait_until

from .conftest import NOBODY, alive, nobody_command, unique


def wait_for_file_json(path: Path, predicate: Callable[[dict[str, Any]], bool]
                       ) -> dict[str, Any]:
    """The first JSON document in `path` that satisfies `predicate`."""
    def check() -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError):
            document: dict[str, Any] = json.loads(path.read_text())
            return document if predicate(document) else None
        return None
    return wait_until(check, f"{path.name} to match", timeout=30.0, interval=0.1,
                      explain=lambda: f"{path.name}: " + (path.read_text() if path.exists()
                                                          else "(none)"))


@contextlib.contextmanager
def user_controller(declared: Domain) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`domctl run` as uid 65534 on a fresh home holding one manifest; yields the process and
    the domain's status file; stops it and sweeps its qemus and the home afterwards."""
    name = declared.name
    home = scratch_dir("user", mode=0o755)
    manifests = home / ".config" / "domctl" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / f"{name}.yaml").write_text(manifest(declared))
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
        sweep(runtime_dir=home / "run" / "domctl", remove=[home])


@pytest.mark.qemu
def test_a_user_runs_qemu_domains_without_cgroups() -> None:
    name = unique("user-vm")
    with user_controller(domain(name)) as (daemon, status_file):
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
    with user_controller(domain(name, cputune=CpuTune(shares=512))) as (_, status_file):
        status = wait_for_file_json(
            status_file, lambda s: any(c["type"] == "Stalled" and c["reason"] == "HostValidation"
                                       for c in s["conditions"]))
        stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
        assert "spec.cputune.shares: needs a cgroup" in stalled["message"], stalled
        assert status["state"] == "shutoff" and status["pid"] is None
