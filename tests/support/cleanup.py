"""The one cleanup of the suite: `sweep()` removes what a test's domains may have left behind.

Called by the fixtures that own domains (tests/support/qemu.py, tests/support/lxc.py, the
daemon's Controller) also when the test failed, and by the leak guard. It kills by pid only:
a process it finds through a pidfile must name the runtime dir in its command line, so nothing
another test or another user runs is touched. It never raises.

`scratch_dir()` makes the short directories sockets need (sun_path has 108 bytes); their names
start with SCRATCH_PREFIX, which the leak guard uses to recognise this session's processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from reconcilers.identity import cmdline, is_alive
from reconcilers.lxc.host import remove_empty_cgroups

CGROUP_ROOT = Path("/sys/fs/cgroup")
SCRATCH_PREFIX = f"{tempfile.gettempdir()}/domctl-t{os.getpid()}-"


def scratch_dir(kind: str, mode: int = 0o700) -> Path:
    """A new directory /tmp/domctl-t<pytest pid>-<kind>-XXXX; remove it with sweep()."""
    path = Path(tempfile.mkdtemp(prefix=f"{Path(SCRATCH_PREFIX).name}{kind}-"))
    path.chmod(mode)
    return path


def kill(pids: Iterable[int]) -> None:
    """SIGKILL every pid that is alive (a zombie is only waiting to be reaped)."""
    for pid in pids:
        if is_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def qemu_pidfiles(runtime_dir: Path) -> dict[str, int]:
    """The pid of each `<runtime>/qemu/<name>.pid`, by domain name."""
    pids = {}
    for pidfile in (runtime_dir / "qemu").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids[pidfile.stem] = int(pidfile.read_text().strip())
    return pids


def stop_dnsmasqs(directory: Path) -> None:
    """Kill the dnsmasqs whose pid files are in `directory` (a controller's or a test's),
    each proven by its command line naming a config file there. Deleting a network namespace
    does not end the processes in it."""
    for pidfile in directory.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if any(arg == f"--conf-file={directory / pidfile.stem}.conf"
                   for arg in cmdline(pid) or ()):
                kill([pid])


def sweep(*, runtime_dir: Path | None = None, pids: Iterable[int] = (),
          lxcpath: Path | None = None, containers: Iterable[str] | None = None,
          cgroups: Iterable[str] = (), remove: Iterable[Path] = (),
          lxc_prefix: Sequence[str] = ()) -> None:
    """Kill the qemus of `runtime_dir` (its pidfiles and `pids`, each proven by its command
    line naming the dir), stop and delete `containers` on `lxcpath` (all of them when None;
    `lxc_prefix` runs lxc-stop in the network namespace the containers were started from: their
    monitor's socket is an abstract one, bound to it), rmdir the `cgroups` (paths below every
    hierarchy, their children first), delete `remove`."""
    if runtime_dir is not None:
        ours = set(pids) | set(qemu_pidfiles(runtime_dir).values())
        kill(pid for pid in ours if any(str(runtime_dir) in arg for arg in cmdline(pid) or ()))
    if lxcpath is not None:
        _remove_containers(lxcpath, containers, lxc_prefix)
    remove_cgroups(list(cgroups))
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)


def _remove_containers(lxcpath: Path, names: Iterable[str] | None,
                       prefix: Sequence[str]) -> None:
    if names is None:
        names = [p.parent.name for p in lxcpath.glob("*/config")]
    for name in names:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([*prefix, "lxc-stop", "-P", str(lxcpath), "-n", name, "-k"],
                           capture_output=True, timeout=30, check=False)
        shutil.rmtree(lxcpath / name, ignore_errors=True)
        remove_empty_cgroups(name)  # what LXC may leave behind a failed start


def remove_cgroups(relative: list[str], timeout: float = 5.0) -> None:
    """rmdir each tree, deepest first, in the v2 root and every v1 hierarchy; retried while
    killed processes wait for PID 1 to reap them (a cgroup with a zombie is busy)."""
    if not relative or not CGROUP_ROOT.is_dir():
        return
    bases = [CGROUP_ROOT, *(p for p in CGROUP_ROOT.iterdir() if p.is_dir())]
    trees = [base / rel for base in bases for rel in relative]
    deadline = time.monotonic() + timeout
    while trees and time.monotonic() < deadline:
        for tree in trees:
            for directory, _, _ in os.walk(tree, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
        trees = [tree for tree in trees if tree.exists()]
        if trees:
            time.sleep(0.1)
