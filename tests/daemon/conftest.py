"""Fixtures for integration tests of the real daemon: `domctl run` as a subprocess.

`Controller` owns one set of directories (manifests, state, log, hooks under the test's tmp dir;
a short runtime dir under /tmp for the 108-byte unix socket limit) and the `domctl run` process
on them. Tests write manifests like a user would (atomic rename), then wait for what the daemon
reports: its status files, events.jsonl and audit.jsonl. They never assert on timing; every wait
has a generous timeout and fails with the last status of the domain and the tail of the
controller's stderr.

The finalizer runs also when a test fails: it stops the controller (SIGTERM, then SIGKILL),
kills every qemu whose pidfile is in `<runtime>/qemu/` and whose command line names the runtime
dir, stops and destroys every LXC container under `<state>/lxc`, and removes the qemu driver's
cgroups of this controller's domain names only (the cgroup parent `domctl.qemu` is shared with
anything else running on the host; `domctl run` has no option for another one).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

DOMCTL = Path(sys.executable).parent / "domctl"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "domctl.qemu"  # QemuSettings.cgroup_parent's default; `run` cannot change it
MiB = 1024 * 1024
T = TypeVar("T")

RUN_OPTIONS = ("--resync", "2", "--removal-grace", "1", "--restart-backoff", "0.5",
               "--restart-backoff-max", "3", "--stable-after", "5")


def unique(prefix: str) -> str:
    """A domain name no other test (or leftover of an earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def alive(pid: int | None) -> bool:
    """A live process (a zombie waiting for the slow PID 1 to reap it is not)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] not in ("Z", "X")


def proc_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The condition `type_` of a status document (None if absent)."""
    for cond in (status or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return cond
    return None


def is_condition(status: dict[str, Any] | None, type_: str, value: str,
                 reason: str | None = None) -> bool:
    cond = condition(status, type_)
    return (cond is not None and cond.get("status") == value
            and (reason is None or cond.get("reason") == reason))


# --- running as an unprivileged user ---------------------------------------------------------

NOBODY = 65534


def world_reachable(path: Path) -> bool:
    """Whether any uid may execute `path` (o+x on it, o+x on every directory above it)."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def nobody_command(*args: str, home: str = "/nonexistent") -> tuple[list[str], dict[str, str]]:
    """argv and environment to run the domctl console script as uid 65534.

    The script's shebang interpreter is used when any uid may execute it; a venv made from an
    interpreter under /root (mode 0700, as with pyenv) is not, and then the same script runs
    under the system's python of the same version, with the venv's packages and the project
    on PYTHONPATH: the same code, only another copy of the interpreter binary."""
    argv: list[str] = [str(DOMCTL)]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "PYTHONNOUSERSITE": "1"}
    if not world_reachable(Path(sys.executable)):
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        system = Path("/usr/bin") / version
        if not system.exists() or not world_reachable(system):
            pytest.skip(f"no {version} that uid {NOBODY} may execute: {sys.executable} is "
                        f"under a directory closed to others and {system} is missing")
        project = Path(__file__).resolve().parents[2]
        argv = [str(system), str(DOMCTL)]
        env["PYTHONPATH"] = os.pathsep.join([str(project), sysconfig.get_paths()["purelib"]])
    return [*argv, *args], env


# --- manifests, as YAML text a user would write -----------------------------------------------

def _manifest(name: str, driver: str, state: str, memory: str, shutdown_timeout: str,
              body: str) -> str:
    return f"""\
apiVersion: domctl/v1
kind: Domain
metadata:
  name: {name}
spec:
  driver: {driver}
  state: {state}
  memory: {memory}
  shutdownTimeout: {shutdown_timeout}
{body}"""


def qemu_manifest(name: str, *, state: str = "running", memory: str = "64Mi",
                  shutdown_timeout: str = "2s", extra: str = "") -> str:
    """A diskless tcg `pc` VM: its firmware runs forever and ignores ACPI. `extra` lines go
    into spec; the qemu section comes last, so lines appended to the text extend it."""
    return _manifest(name, "qemu", state, memory, shutdown_timeout,
                     f"{extra}  qemu:\n    machine: pc\n    accel: tcg\n")


def lxc_manifest(name: str, *, state: str = "running", memory: str = "64Mi",
                 shutdown_timeout: str = "2s",
                 init: str = '["/bin/sh", "-c", "exec sleep infinity"]') -> str:
    """A container on the built-in busybox rootfs whose init sleeps (and ignores SIGPWR)."""
    return _manifest(name, "lxc", state, memory, shutdown_timeout,
                     f"  lxc:\n    rootfs: busybox\n    init: {init}\n")


# --- the controller process -------------------------------------------------------------------

class Controller:
    """One `domctl run` on private directories; restartable; cleaned up by `cleanup()`."""

    def __init__(self, base: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.base = base
        self.manifests = base / "manifests"
        self.state = base / "state"
        self.logs = base / "log"
        self.hooks = base / "hooks"
        for directory in (self.manifests, self.hooks):
            directory.mkdir(parents=True, exist_ok=True)
        self.runtime = Path(tempfile.mkdtemp(prefix="dt-"))
        self.stderr_path = base / "controller.stderr"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.names: set[str] = set()  # every domain name handed out (for cgroup cleanup)
        self._stderr_offset = 0

    # names and manifests

    def name(self, prefix: str) -> str:
        name = unique(prefix)
        self.names.add(name)
        return name

    def write_manifest(self, filename: str, text: str) -> Path:
        """Write like an editor or config tool: temp file in the same dir, then rename."""
        tmp = self.manifests / f".{filename}.x.tmp"
        tmp.write_text(text)
        path = self.manifests / filename
        os.rename(tmp, path)
        return path

    def remove_manifest(self, filename: str) -> None:
        (self.manifests / filename).unlink()

    # the process

    @property
    def socket(self) -> Path:
        return self.runtime / "domctl.sock"

    def argv(self) -> list[str]:
        return [str(DOMCTL), "run", "--manifests", str(self.manifests),
                "--state-dir", str(self.state), "--runtime-dir", str(self.runtime),
                "--log-dir", str(self.logs), "--hooks-dir", str(self.hooks),
                *RUN_OPTIONS, *self.extra_args]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Start `domctl run` and wait until it logs "controller running"."""
        assert not self.running(), "controller already running"
        self._stderr_offset = (self.stderr_path.stat().st_size
                               if self.stderr_path.exists() else 0)
        with open(self.stderr_path, "ab") as stderr:
            # own session: a ^C of pytest must not reach it (the finalizer stops it)
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=stderr,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line.get("event") == "controller running" for line in self.log_lines()):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"controller exited with {self.proc.returncode} before it was "
                            f"running\n{self.stderr_tail()}")
            time.sleep(0.1)
        pytest.fail(f"controller not running after {timeout} s\n{self.stderr_tail()}")

    def kill(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send `sig` and wait for the exit; the exit code (negative: killed by a signal)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"controller still running {timeout} s after {signal.Signals(sig).name}"
                        f"\n{self.stderr_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit; the exit code, or None if not started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def restart(self) -> None:
        if self.running():
            code = self.stop()
            assert code == 0, f"controller exited with {code} on SIGTERM\n{self.stderr_tail()}"
        self.start()

    # what it reports

    def log_lines(self, since_start: bool = True) -> list[dict[str, Any]]:
        """The controller's stderr JSON lines (of the current run by default)."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self._stderr_offset if since_start else 0)
                data = f.read()
        except FileNotFoundError:
            return []
        lines = []
        for raw in data.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if isinstance(record, dict):
                    lines.append(record)
        return lines

    def stderr_tail(self, n: int = 40) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no controller stderr)"
        return "controller stderr (tail):\n" + "\n".join(lines[-n:])

    def status(self, name: str) -> dict[str, Any] | None:
        """`<state>/status/<name>.json`, or None when there is none."""
        path = self.state / "status" / f"{name}.json"
        for _ in range(5):  # written by rename, so never torn; retry anyway on a bad read
            try:
                return json.loads(path.read_text())
            except FileNotFoundError:
                return None
            except ValueError:
                time.sleep(0.05)
        return None

    def _jsonl(self, filename: str, name: str | None) -> list[dict[str, Any]]:
        try:
            lines = (self.state / filename).read_bytes().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for raw in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if name is None or record.get("domain") == name:
                    records.append(record)
        return records

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """events.jsonl records, oldest first (of `name` only if given)."""
        return self._jsonl("events.jsonl", name)

    def audit(self, name: str | None = None) -> list[dict[str, Any]]:
        return self._jsonl("audit.jsonl", name)

    def domctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """The CLI against this controller's read-write socket."""
        return subprocess.run([str(DOMCTL), "--socket", str(self.socket), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    # waiting

    def wait_for(self, predicate: Callable[[], T], what: str, name: str | None = None,
                 timeout: float = 30.0, need_running: bool = True) -> T:
        """Poll `predicate` every 0.1 s until it returns something truthy, and return that.

        Fails with `what`, the last status of `name` and the controller's stderr tail when
        `timeout` passes, or at once when the controller exited (unless `need_running` is
        False).
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if need_running and not self.running():
                self._fail(f"controller exited ({self.proc and self.proc.returncode}) while "
                           f"waiting for {what}", name)
            if time.monotonic() > deadline:
                self._fail(f"timed out after {timeout} s waiting for {what}", name)
            time.sleep(0.1)

    def wait_status(self, name: str, what: str, predicate: Callable[[dict[str, Any]], bool],
                    timeout: float = 30.0) -> dict[str, Any]:
        """The first status document of `name` that satisfies `predicate`."""
        def check() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status is not None and predicate(status) else None
        return self.wait_for(check, what, name, timeout)

    def wait_state(self, name: str, state: str, reason: str | None = None,
                   timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_status(
            name, f"{name} {state}/{reason or '*'}",
            lambda s: s["state"] == state and (reason is None or s["reason"] == reason),
            timeout)

    def wait_event(self, name: str, event: str, detail: str, after: int = 0,
                   timeout: float = 30.0) -> dict[str, Any]:
        """The first `event/detail` record of `name` at index `after` or later."""
        def check() -> dict[str, Any] | None:
            return next((e for e in self.events(name)[after:]
                         if (e["event"], e["detail"]) == (event, detail)), None)
        return self.wait_for(check, f"event {event}/{detail} of {name}", name, timeout)

    def wait_restarted(self, name: str, old_pid: int, events_before: int,
                       timeout: float = 60.0) -> dict[str, Any]:
        """After its process was killed: running again under a new pid with `restarts: 1`,
        having emitted stopped/failed (cause external) then started/booted (cause controller).
        Returns the status."""
        again = self.wait_status(
            name, "running again with a new pid",
            lambda s: s["state"] == "running" and s["pid"] not in (None, old_pid), timeout)
        assert again["restarts"] == 1, again
        assert alive(again["pid"])
        stopped = self.wait_event(name, "stopped", "failed", after=events_before)
        assert stopped["cause"] == "external", stopped
        started = self.wait_event(name, "started", "booted", after=events_before)
        assert started["cause"] == "controller", started
        events = self.events(name)[events_before:]
        assert events.index(stopped) < events.index(started), events
        return again

    def _fail(self, message: str, name: str | None) -> None:
        parts = [message]
        if name is not None:
            parts.append(f"last status of {name}: "
                         f"{json.dumps(self.status(name), indent=1, sort_keys=True)}")
            parts.append("events: " + "\n  ".join(
                f"{e.get('event')}/{e.get('detail')} {e.get('state')}/{e.get('reason')} "
                f"cause={e.get('cause')} {e.get('message', '')}" for e in self.events(name)))
        parts.append(self.stderr_tail())
        pytest.fail("\n".join(parts))

    # clean-up

    def cleanup(self) -> None:
        """Stop the controller and remove everything it started; never raises."""
        with contextlib.suppress(Exception):
            self.stop()
        qemu_names = self._kill_qemus()
        self._destroy_containers()
        self._remove_cgroups(self.names | qemu_names)
        shutil.rmtree(self.runtime, ignore_errors=True)

    def _kill_qemus(self) -> set[str]:
        names = set()
        for pidfile in (self.runtime / "qemu").glob("*.pid"):
            names.add(pidfile.stem)
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if alive(pid) and any(str(self.runtime) in arg for arg in proc_cmdline(pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return names

    def _destroy_containers(self) -> None:
        lxcpath = self.state / "lxc"
        if not lxcpath.is_dir() or shutil.which("lxc-stop") is None:
            return
        for container in sorted(lxcpath.iterdir()):
            if not (container / "config").is_file():
                continue
            for tool in ("lxc-stop", "lxc-destroy"):
                extra = ["-k"] if tool == "lxc-stop" else []
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run([tool, "-P", str(lxcpath), "-n", container.name, *extra],
                                   capture_output=True, timeout=30, check=False)

    @staticmethod
    def _remove_cgroups(names: set[str]) -> None:
        """rmdir `<hierarchy>/domctl.qemu/<name>` of our names; retried while the killed qemus
        wait for PID 1 to reap them."""
        dirs = [base / CGROUP_PARENT / name for name in names
                for base in (CGROUP_ROOT, *CGROUP_ROOT.iterdir())] if CGROUP_ROOT.is_dir() else []
        for _ in range(50):
            left = []
            for directory in dirs:
                if directory.is_dir():
                    try:
                        directory.rmdir()
                    except OSError:
                        left.append(directory)
            if not left:
                return
            dirs = left
            time.sleep(0.1)


@contextlib.contextmanager
def controller_on(base: Path, extra_args: tuple[str, ...] = ()) -> Iterator[Controller]:
    ctl = Controller(base, extra_args)
    try:
        ctl.start()
        yield ctl
    finally:
        ctl.cleanup()


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """One running controller for the whole test module."""
    with controller_on(tmp_path_factory.mktemp("daemon")) as ctl:
        yield ctl


@pytest.fixture(autouse=True)
def _controller_up(request: pytest.FixtureRequest) -> None:
    """A test that failed while the module's controller was down leaves it down: start it
    again, so that one failure does not fail every later test of the module."""
    if "controller" in request.fixturenames:
        ctl = request.getfixturevalue("controller")
        if not ctl.running():
            ctl.start()
