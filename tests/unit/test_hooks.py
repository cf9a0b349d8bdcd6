"""Hooks: real shell scripts in tmp_path, run as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from controller.engine.hooks import HookError, HookRunner
from controller.settings import HookSettings
from reconcilers.errors import TransientError
from reconcilers.model import DomainSpec, DriverName
from reconcilers.ports import HookOp


def write_script(path: Path, body: str, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def recorder(log: Path, tag: str) -> str:
    """A hook body appending `tag args...` and its stdin to `log`."""
    return f'echo "{tag} $*" >> {log}\ncat >> {log}\necho >> {log}\n'


SPEC = DomainSpec(driver=DriverName.QEMU, vcpus=2)


async def test_missing_hooks_dir_means_no_hooks(tmp_path: Path) -> None:
    no_dir = HookRunner(None, HookSettings())
    assert await no_dir.run(DriverName.QEMU, "web", HookOp.START, SPEC) == []
    runner = HookRunner(tmp_path / "absent", HookSettings())
    assert await runner.run(DriverName.QEMU, "web", HookOp.PREPARE, SPEC) == []


async def test_main_script_then_d_scripts_alphabetically_with_args_and_stdin(
        tmp_path: Path) -> None:
    hooks, log = tmp_path / "hooks", tmp_path / "calls.log"
    write_script(hooks / "qemu", recorder(log, "main"))
    write_script(hooks / "qemu.d" / "20-second", recorder(log, "second"))
    write_script(hooks / "qemu.d" / "10-first", recorder(log, "first"))
    write_script(hooks / "qemu.d" / "30-not-executable", recorder(log, "no"), executable=False)
    write_script(hooks / "lxc", recorder(log, "lxc"))  # another driver's hook: not run
    runner = HookRunner(hooks, HookSettings())
    results = await runner.run(DriverName.QEMU, "web", HookOp.RELEASE, SPEC, extra="shutdown")
    assert [r.script.name for r in results] == ["qemu", "10-first", "20-second"]
    assert all(r.ok for r in results)
    text = log.read_text().splitlines()
    assert text[0::2] == ["main web release end shutdown", "first web release end shutdown",
                          "second web release end shutdown"]
    spec = json.loads(text[1])
    assert spec["vcpus"] == 2 and spec["driver"] == "qemu"


@pytest.mark.parametrize(("op", "subop"), [
    (HookOp.PREPARE, "begin"), (HookOp.START, "begin"), (HookOp.STARTED, "begin"),
    (HookOp.STOPPED, "end"), (HookOp.RELEASE, "end"), (HookOp.RECONNECT, "begin"),
])
async def test_subop_per_op(tmp_path: Path, op: HookOp, subop: str) -> None:
    log = tmp_path / "calls.log"
    write_script(tmp_path / "hooks" / "lxc", f'echo "$*" > {log}\n')
    await HookRunner(tmp_path / "hooks", HookSettings()).run(DriverName.LXC, "ct", op, SPEC)
    assert log.read_text() == f"ct {op.value} {subop} -\n"


@pytest.mark.parametrize("op", [HookOp.PREPARE, HookOp.START])
async def test_failing_prepare_or_start_raises_with_stderr_and_stops(
        tmp_path: Path, op: HookOp) -> None:
    hooks, log = tmp_path / "hooks", tmp_path / "calls.log"
    write_script(hooks / "qemu", 'echo "bridge br0 is missing" >&2\nexit 3\n')
    write_script(hooks / "qemu.d" / "10-after", recorder(log, "after"))
    with pytest.raises(HookError) as caught:
        await HookRunner(hooks, HookSettings()).run(DriverName.QEMU, "web", op, SPEC)
    err = caught.value
    assert isinstance(err, TransientError)
    assert err.result.returncode == 3 and err.op is op
    assert str(err) == f"web: {op.value} hook {hooks / 'qemu'} exit 3: bridge br0 is missing"
    assert not log.exists()  # later scripts do not run once the start is aborted


async def test_failures_of_other_ops_are_reported_not_raised(tmp_path: Path) -> None:
    hooks, log = tmp_path / "hooks", tmp_path / "calls.log"
    write_script(hooks / "qemu", "echo oops >&2\nexit 1\n")
    write_script(hooks / "qemu.d" / "10-after", recorder(log, "after"))
    runner = HookRunner(hooks, HookSettings())
    results = await runner.run(DriverName.QEMU, "web", HookOp.STOPPED, SPEC)
    assert [(r.returncode, r.stderr) for r in results] == [(1, "oops\n"), (0, "")]
    assert log.read_text().startswith("after web stopped end -")


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    hooks, pidfile = tmp_path / "hooks", tmp_path / "child.pid"
    # The hook leaves a background child behind: it must die with the hook.
    write_script(hooks / "qemu", f"sleep 600 &\necho $! > {pidfile}\nwait\n")
    runner = HookRunner(hooks, HookSettings(timeout=1.5))  # room for sh to write the pidfile
    async with asyncio.timeout(10):
        with pytest.raises(HookError, match="timed out") as caught:
            await runner.run(DriverName.QEMU, "web", HookOp.START, SPEC)
    assert caught.value.result.returncode is None
    child = int(pidfile.read_text())
    async with asyncio.timeout(10):
        while _alive(child):
            await asyncio.sleep(0.01)


async def test_timeout_of_a_non_aborting_op_is_logged_only(tmp_path: Path) -> None:
    write_script(tmp_path / "hooks" / "qemu", "exec sleep 600\n")
    runner = HookRunner(tmp_path / "hooks", HookSettings(timeout=0.2))
    async with asyncio.timeout(10):
        results = await runner.run(DriverName.QEMU, "web", HookOp.RECONNECT, SPEC)
    assert [r.returncode for r in results] == [None]
    assert not results[0].ok and "timed out" in results[0].describe()


async def test_cancelled_run_leaves_no_hook_process(tmp_path: Path) -> None:
    hooks, pidfile = tmp_path / "hooks", tmp_path / "hook.pid"
    write_script(hooks / "qemu", f"echo $$ > {pidfile}\nexec sleep 600\n")
    runner = HookRunner(hooks, HookSettings())
    async with asyncio.timeout(10):
        task = asyncio.create_task(runner.run(DriverName.QEMU, "web", HookOp.STARTED, SPEC))
        while not pidfile.exists() or not pidfile.read_text().strip():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not _alive(int(pidfile.read_text()))


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan may wait for init's reaping)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
