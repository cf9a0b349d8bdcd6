"""The daemon going away and coming back: hooks over a start/stop cycle and a re-attach, a
controller killed with SIGKILL, a controller stopped with SIGTERM (issue D point 9, scenarios
12, 8 and 10).

One controller for the module, restarted by the tests. A recording hook (`<hooks>/qemu` and
`<hooks>/lxc`) appends `$1 $2 $3 $4` and the `memory` of the JSON on its stdin to
`<base>/hooks/<name>.calls`, for every domain; its `release` takes 2 s for a domain with a
`<base>/hooks/<name>.slow-release` file.

libvirt runs a domain's hooks in order: `stopped` and `release` of one run are done before
`prepare` of the next, so a script may free in `release` what it allocates in `prepare`.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.domains import domain

from .conftest import SLEEPER, Controller, alive, is_condition

pytestmark = [pytest.mark.qemu, pytest.mark.lxc]

RECORDER = """#!/bin/sh
memory=$(grep -o '"memory": *[0-9]*' | head -n 1 | sed 's/.*: *//')
here=$(dirname "$0")
# a release that takes a while (tearing down a bridge, a DRBD device...), for marked domains
[ "$2" = release ] && [ -e "$here/$1.slow-release" ] && sleep 2
echo "$1 $2 $3 $4 memory=${memory:-none}" >> "$here/$1.calls"
"""


@pytest.fixture(scope="module", autouse=True)
def recorder(controller: Controller) -> None:
    for driver in ("qemu", "lxc"):
        hook = controller.hooks / driver
        hook.write_text(RECORDER)
        hook.chmod(0o755)


def calls(controller: Controller, name: str) -> list[str]:
    try:
        return (controller.hooks / f"{name}.calls").read_text().splitlines()
    except FileNotFoundError:
        return []


def wait_call(controller: Controller, name: str, call: str, after: int = 0) -> list[str]:
    """The hook calls of `name` once one at index `after` or later starts with `call`."""
    def made() -> list[str] | None:
        lines = calls(controller, name)
        return lines if any(line.startswith(call + " ") for line in lines[after:]) else None
    return controller.wait_for(made, f"hook call {call!r} of {name}", name)


def test_hooks_over_a_start_stop_cycle_and_a_reattach(controller: Controller) -> None:
    name = controller.name("hook")
    memory = f"memory={64 * 1024 * 1024}"
    controller.apply(domain(name))
    controller.wait_state(name, "running", "booted")
    controller.apply(domain(name, state="shutoff"))
    controller.wait_state(name, "shutoff", "destroyed")
    lines = wait_call(controller, name, f"{name} release end")
    assert [line.rsplit(" ", 1)[0] for line in lines] == [
        f"{name} prepare begin -", f"{name} start begin -", f"{name} started begin -",
        f"{name} stopped end -", f"{name} release end destroyed"], lines
    assert all(line.endswith(" " + memory) for line in lines), lines

    controller.apply(domain(name))
    pid = controller.wait_state(name, "running", "booted")["pid"]
    before = len(wait_call(controller, name, f"{name} started begin", after=len(lines)))
    controller.restart()
    after = wait_call(controller, name, f"{name} reconnect begin", after=before)
    assert after[before:] == [f"{name} reconnect begin - {memory}"], after
    status = controller.wait_status(name, "running after the restart",
                                    lambda s: s["state"] == "running")
    assert status["pid"] == pid and alive(pid), status


def _first_pass_done(controller: Controller) -> bool:
    """Every domain was reconciled once by this run (an unchanged status is not rewritten,
    so the status files cannot tell)."""
    return any(line.get("event") == "first full pass done; ready"
               for line in controller.log_lines())


def test_controller_killed_and_restarted_adopts_every_domain(controller: Controller) -> None:
    vm, ct = controller.name("adopt-vm"), controller.name("adopt-ct")
    off = controller.name("adopt-off")
    # manifests without a uuid: the one generated at the start must be kept and proven again
    controller.apply(domain(vm, uuid=None))
    controller.apply(domain(ct, "lxc", lxc=SLEEPER, uuid=None))
    controller.apply(domain(off, state="shutoff", uuid=None))
    before = {name: controller.wait_state(name, "running", "booted", timeout=60)
              for name in (vm, ct)}
    before[off] = controller.wait_status(off, "shutoff and Ready",
                                         lambda s: is_condition(s, "Ready", "True"))
    assert before[off]["state"] == "shutoff" and before[off]["pid"] is None, before[off]
    events_before = len(controller.events())

    assert controller.kill(signal.SIGKILL) == -signal.SIGKILL
    for name in (vm, ct):
        assert alive(before[name]["pid"]), (name, before[name])
    controller.start()
    controller.wait_for(lambda: _first_pass_done(controller), "the first pass after the restart")
    for name, status in before.items():
        after = controller.wait_status(name, "Synced after the restart",
                                       lambda s: is_condition(s, "Synced", "True"))
        assert (after["state"], after["reason"]) == (status["state"], status["reason"]), after
        assert after["pid"] == status["pid"], (status, after)
        assert after["restarts"] == 0, after
        assert after["id"] == status["id"], (status, after)
        assert is_condition(after, "Ready", "True"), after
        if status["pid"] is not None:
            assert alive(after["pid"]), after
            wait_call(controller, name, f"{name} reconnect begin")
    new = controller.events()[events_before:]
    assert not [e for e in new if e["event"] in ("started", "stopped", "resumed", "suspended")
                and e["domain"] in before], new


def test_paused_domains_keep_their_reason_across_a_controller_restart(
        controller: Controller) -> None:
    """DESIGN §4/§7: started paused is paused/user, and a re-attach changes nothing: neither the
    state nor its reason. Also a domain suspended after it ran."""
    born, later = controller.name("paused-born"), controller.name("paused-later")
    controller.apply(domain(born, state="paused"))
    controller.apply(domain(later))
    controller.wait_state(later, "running", "booted")
    controller.apply(domain(later, state="paused"))
    before = {name: controller.wait_state(name, "paused", "user") for name in (born, later)}
    events_before = len(controller.events())

    assert controller.kill(signal.SIGKILL) == -signal.SIGKILL
    controller.start()
    controller.wait_for(lambda: _first_pass_done(controller), "the first pass after the restart")
    seen = {}
    for name, status in before.items():
        seen[name] = controller.wait_status(name, "Synced after the restart",
                                            lambda s: is_condition(s, "Synced", "True"))
        assert seen[name]["pid"] == status["pid"] and alive(status["pid"]), seen[name]
    assert {n: (s["state"], s["reason"]) for n, s in seen.items()} == {
        born: ("paused", "user"), later: ("paused", "user")}
    new = [e for e in controller.events()[events_before:] if e["domain"] in before]
    assert not new, new


def test_domain_killed_while_the_controller_was_away_is_restarted(
        controller: Controller) -> None:
    name = controller.name("away")
    (controller.hooks / f"{name}.slow-release").touch()
    controller.apply(domain(name))
    pid = controller.wait_state(name, "running", "booted")["pid"]
    hooks_before = len(wait_call(controller, name, f"{name} started begin"))
    events_before = len(controller.events(name))
    assert controller.kill(signal.SIGTERM) == 0
    os.kill(pid, signal.SIGKILL)
    controller.start()
    controller.wait_restarted(name, pid, events_before)
    # libvirt's reconnect: a qemu that died while the daemon was down is shutoff/crashed
    stopped = controller.wait_event(name, "stopped", "failed", after=events_before)
    assert (stopped["state"], stopped["reason"]) == ("shutoff", "crashed"), stopped
    wait_call(controller, name, f"{name} started begin", after=hooks_before)
    lines = wait_call(controller, name, f"{name} release end", after=hooks_before)
    assert [line.split(" ")[1:4] for line in lines[hooks_before:]] == [
        ["stopped", "end", "-"], ["release", "end", "crashed"], ["prepare", "begin", "-"],
        ["start", "begin", "-"], ["started", "begin", "-"]], lines


def test_release_hook_ends_before_the_restart_prepares(controller: Controller) -> None:
    """A crashed domain restarted by the controller: its slow `release` must not run after, or
    concurrently with, the `prepare` of the next start (it would free what that allocated)."""
    name = controller.name("slowrel")
    (controller.hooks / f"{name}.slow-release").touch()
    controller.apply(domain(name))
    pid = controller.wait_state(name, "running", "booted")["pid"]
    before = len(wait_call(controller, name, f"{name} started begin"))
    os.kill(pid, signal.SIGKILL)
    controller.wait_status(name, "running again with a new pid",
                           lambda s: s["state"] == "running" and s["pid"] not in (None, pid))
    lines = wait_call(controller, name, f"{name} started begin", after=before)
    lines = wait_call(controller, name, f"{name} release end", after=before)
    assert [line.split(" ")[1:4] for line in lines[before:]] == [
        ["stopped", "end", "-"], ["release", "end", "crashed"], ["prepare", "begin", "-"],
        ["start", "begin", "-"], ["started", "begin", "-"]], lines


def test_sigterm_leaves_every_domain_running(controller: Controller) -> None:
    vm, ct = controller.name("term-vm"), controller.name("term-ct")
    controller.apply(domain(vm))
    controller.apply(domain(ct, "lxc", lxc=SLEEPER))
    for name in (vm, ct):
        controller.wait_state(name, "running", "booted", timeout=60)
    statuses = {n: controller.status(n) for n in controller.names}
    pids = {n: s["pid"] for n, s in statuses.items() if s and s["state"] == "running"}
    assert {vm, ct} <= set(pids), statuses

    assert controller.kill(signal.SIGTERM) == 0, controller.stderr_tail()
    assert any(line.get("event") == "controller stopped; domains left running"
               for line in controller.log_lines())
    for name, pid in pids.items():
        assert alive(pid), f"{name} ({pid}) died with the controller"
    assert not controller.socket.exists()
    assert not (controller.runtime / "domctl-ro.sock").exists()
    got = controller.domctl("get")
    assert got.returncode == 1 and got.stderr.startswith("error: "), got
    assert not (controller.state / "domctl.lock").exists() or _unlocked(
        controller.state / "domctl.lock")


def _unlocked(path: Path) -> bool:
    """Nobody holds the state dir's flock any more."""
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
    return True



def test_a_second_controller_on_the_same_state_dir_is_refused(controller: Controller) -> None:
    """One controller per state dir (flock): the second exits 1 naming the lock and holder,
    and the first goes on serving."""
    assert controller.proc is not None
    second = subprocess.run(controller.argv(), capture_output=True, text=True, timeout=60,
                            check=False)
    assert second.returncode == 1, second
    assert "another domctl controller is running" in second.stderr
    assert f"locked by pid {controller.proc.pid}" in second.stderr
    assert controller.running()
    assert controller.domctl("get").returncode == 0


def test_a_second_controller_on_the_same_runtime_dir_is_refused(
        controller: Controller, tmp_path: Path) -> None:
    """Another state dir but the same runtime dir would bind over the first controller's API
    sockets and remove them on exit: refused, naming the runtime dir's lock and its holder."""
    assert controller.proc is not None
    argv = controller.argv()
    argv[argv.index("--state-dir") + 1] = str(tmp_path / "other-state")
    second = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 1, second
    assert f"{controller.runtime / 'domctl.lock'} is locked by pid {controller.proc.pid}" \
        in second.stderr
    assert controller.running()
    assert (controller.runtime / "domctl.sock").exists()
    assert controller.domctl("get").returncode == 0
