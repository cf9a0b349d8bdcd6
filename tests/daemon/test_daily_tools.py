"""The daily looks into running domains through a real `domctl run` (issue 17 points 3 and 4):
`domctl exec` into a container (exit code and a clean environment), `stats` of a container and
a VM, `vncdisplay` of a VM with an automatic VNC port, `show` (every default written) and
`diff -f FILE` (a candidate file's changes, nothing stored).

One controller, one busybox container and one diskless tcg VM for the module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Iterator

import pytest
import yaml

from controller.manifests.loader import load_text
from reconcilers.model import Vnc
from tests.support.domains import TCG_PC, domain, manifest

from .conftest import SLEEPER, Controller

pytestmark = [pytest.mark.lxc, pytest.mark.qemu]


@pytest.fixture(scope="module")
def running(controller: Controller) -> Iterator[tuple[str, str]]:
    """(container, vm), both running."""
    ct, vm = controller.name("ct"), controller.name("vnc")
    controller.apply(domain(ct, "lxc", lxc=SLEEPER))
    controller.apply(domain(vm, qemu=dataclasses.replace(TCG_PC, vnc=Vnc())))
    for name in (ct, vm):
        controller.wait_state(name, "running", timeout=60)
    yield ct, vm


def test_exec_passes_the_exit_code_and_keeps_the_hosts_environment_out(
        controller: Controller, running: tuple[str, str]) -> None:
    ct, vm = running
    assert controller.domctl("exec", ct, "--", "sh", "-c", "exit 7").returncode == 7
    os.environ["DOMCTL_TEST_SECRET"] = "host-only"  # the CLI's environment, not the container's
    try:
        shown = controller.domctl("exec", ct, "--", "env")
    finally:
        del os.environ["DOMCTL_TEST_SECRET"]
    assert shown.returncode == 0, shown.stderr
    assert "PATH=/usr/local/sbin:" in shown.stdout and "DOMCTL_TEST_SECRET" not in shown.stdout
    refused = controller.domctl("exec", vm, "--", "true")
    assert refused.returncode == 1 and "not supported by the qemu driver" in refused.stderr


def test_stats_show_both_and_json_has_the_figures(controller: Controller,
                                                  running: tuple[str, str]) -> None:
    ct, vm = running
    shown = controller.domctl("stats")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].split()[:3] == ["NAME", "CPU%", "CPU-TIME"]
    rows = {line.split()[0] for line in shown.stdout.splitlines()[1:]}
    assert {ct, vm} <= rows
    figures = json.loads(controller.domctl("stats", ct, "-o", "json").stdout)
    assert figures[0]["name"] == ct and figures[0]["memory"]["rssBytes"] > 0


def test_vncdisplay_is_where_the_vm_listens(controller: Controller,
                                            running: tuple[str, str]) -> None:
    ct, vm = running
    shown = controller.domctl("vncdisplay", vm)
    assert shown.returncode == 0, shown.stderr
    host, _, display = shown.stdout.strip().rpartition(":")
    with socket.create_connection((host, 5900 + int(display)), timeout=5) as conn:
        assert conn.recv(12).startswith(b"RFB ")
    status = controller.status(vm)
    assert status is not None and status["display"] == shown.stdout.strip()  # get -o wide's
    none = controller.domctl("vncdisplay", ct)
    assert none.returncode == 1 and "has no VNC display" in none.stderr


def test_show_writes_every_default_and_loads_back(controller: Controller,
                                                  running: tuple[str, str]) -> None:
    _, vm = running
    shown = controller.domctl("show", vm)
    assert shown.returncode == 0, shown.stderr
    document = yaml.safe_load(shown.stdout)
    assert document["spec"]["restartPolicy"] == "Always" and document["spec"]["vcpus"] == 1
    [loaded] = load_text(shown.stdout, "shown.yaml")
    assert loaded.name == vm


def test_diff_of_a_candidate_file_lists_its_changes_and_stores_nothing(
        controller: Controller, running: tuple[str, str], tmp_path: os.PathLike[str]) -> None:
    _, vm = running
    edited = domain(vm, memory="96Mi", shutdown_timeout="45s",
                    qemu=dataclasses.replace(TCG_PC, vnc=Vnc()))
    candidate = os.path.join(tmp_path, f"{vm}.yaml")
    with open(candidate, "w") as out:
        out.write(manifest(edited) + "---\n" + manifest(domain(f"{vm}-new")))
    shown = controller.domctl("diff", "-f", candidate)
    assert shown.returncode == 1, shown.stderr  # differences: a pull-request check fails
    assert f"{vm}-new: create" in shown.stdout
    assert "memory: 64Mi -> 96Mi (restart)" in shown.stdout
    assert "shutdownTimeout: 2s -> 45s (controller)" in shown.stdout
    assert controller.status(f"{vm}-new") is None  # nothing stored, nothing started
    same = os.path.join(tmp_path, "same.yaml")
    with open(same, "w") as out:
        out.write(manifest(domain(vm, qemu=dataclasses.replace(TCG_PC, vnc=Vnc()))))
    unchanged = controller.domctl("diff", "-f", same)
    assert unchanged.returncode == 0 and f"{vm}: unchanged" in unchanged.stdout
    broken = os.path.join(tmp_path, "broken.yaml")
    with open(broken, "w") as out:
        out.write(manifest(domain(vm)).replace("driver:", "drivr:"))
    refused = controller.domctl("diff", "-f", broken)
    assert refused.returncode == 2 and f"{broken}:" in refused.stderr  # kubectl diff's
