"""Fixtures for integration tests of the real daemon: `domctl run` as a subprocess.

`Controller` owns one set of directories (manifests, state, log, hooks under the test's tmp dir;
a short runtime dir under /tmp for the 108-byte unix socket limit) and the `domctl run` process
on them. Tests write manifests like a user would (atomic rename), then wait for what the daemon
reports: its status files, events.jsonl and audit.jsonl. They never assert on timing; every wait
has a generous timeout and fails with the last status of the domain and the tail of the
controller's stderr.

Manifests are tests/support/domains.py's domains (`apply(domain(...))`), with the daemon tier's
SLEEPER init for containers that should ignore a graceful shutdown.

While a Controller lives, the leak guard leaves what runs under its directories alone (it may
outlive the test that started it, as a module's daemon does). `cleanup()` runs also when a test
fails: it stops the controller (SIGTERM, then SIGKILL) and sweeps (tests/support/cleanup.py)
every qemu of its runtime dir, every LXC container under `<state>/lxc`, and the qemu driver's
cgroups of this controller's domain names only (the cgroup parent `domctl.qemu` is shared with
anything else running on the host; `domctl run` has no option for another one).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reconcilers.identity import cmdline, is_alive
from reconcilers.model import Domain, LxcSpec
from tests.support import leaks
from tests.support.cleanup import qemu_pidfiles, scratch_dir, stop_dnsmasqs, sweep
from tests.support.domains import manifest
from tests.support.netns import command_inside, lxc_prefix
from tests.support.waiting import wait_until

DOMCTL = Path(sys.executable).parent / "domctl"
CGROUP_PARENT = "domctl.qemu"  # QemuSettings.cgroup_parent's default; `run` cannot change it
SLEEPER = LxcSpec(init=("/bin/sh", "-c", "exec sleep infinity"))  # init ignores SIGPWR
LEFT_ALONE = ("nothing", "report")  # the plans of a pass that does not touch the domain
T = TypeVar("T")

# --prune-window 0: these tests add and remove domains all the time; the window is unit-tested
RUN_OPTIONS = ("--resync", "2", "--removal-grace", "1", "--prune-window", "0",
               "--restart-backoff", "0.5",
               "--restart-backoff-max", "3", "--stable-after", "5")


def unique(prefix: str) -> str:
    """A domain name no other test (or leftover of an earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def alive(pid: int | None) -> bool:
    """A live process (a zombie waiting for the slow PID 1 to reap it is not)."""
    return pid is not None and is_alive(pid)


def proc_cmdline(pid: int) -> list[str]:
    return cmdline(pid) or []


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """The condition `type_` of a status document ({} if absent)."""
    conditions: list[dict[str, Any]] = (status or {}).get("conditions") or []
    return next((cond for cond in conditions if cond.get("type") == type_), {})


def is_condition(status: dict[str, Any] | None, type_: str, value: str,
                 reason: str | None = None) -> bool:
    cond = condition(status, type_)
    return cond.get("status") == value and (reason is None or cond.get("reason") == reason)


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


# --- the controller process -------------------------------------------------------------------

class Controller:
    """One `domctl run` on private directories; restartable; cleaned up by `cleanup()`."""

    def __init__(self, base: Path, extra_args: tuple[str, ...] = (),
                 netns: str | None = None) -> None:
        self.base = base
        self.netns = netns  # run inside this network namespace (netns.command_inside)
        self.manifests = base / "manifests"
        if not (base / "state").exists():
            # containers run unprivileged: their root must search every directory above the
            # daemon's lxcpath, which pytest's own (0700) forbid
            (base / "state").symlink_to(scratch_dir("s", 0o711))
        self.state = (base / "state").resolve()
        self.logs = base / "log"
        self.hooks = base / "hooks"
        for directory in (self.manifests, self.hooks, self.base / "cgroup"):
            directory.mkdir(parents=True, exist_ok=True)
        self.runtime = scratch_dir("d")
        self.stderr_path = base / "controller.stderr"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.names: set[str] = set()  # every domain name handed out (for cgroup cleanup)
        self._lines: list[dict[str, Any]] = []  # stderr's JSON lines, of every run
        self._read, self._run_start = 0, 0  # bytes of stderr parsed; first line of this run
        leaks.hold(self.base, self.runtime, self.state)

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

    def apply(self, domain: Domain) -> Path:
        """Write `<name>.yaml` declaring `domain`."""
        return self.write_manifest(f"{domain.name}.yaml", manifest(domain))

    def remove_manifest(self, filename: str) -> None:
        (self.manifests / filename).unlink()

    # the process

    @property
    def socket(self) -> Path:
        return self.runtime / "domctl.sock"

    def argv(self) -> list[str]:
        """At debug level: a pass logs its `plan` and a rescan `manifests scanned`, the proof
        that something was considered and nothing done."""
        inside = [] if self.netns is None else command_inside(self.netns, self.base / "cgroup")
        return [*inside, str(DOMCTL), "--log-level", "debug", "run",
                "--manifests", str(self.manifests),
                "--state-dir", str(self.state), "--runtime-dir", str(self.runtime),
                "--log-dir", str(self.logs), "--hooks-dir", str(self.hooks),
                *RUN_OPTIONS, *self.extra_args]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Start `domctl run` and wait until it logs "controller running"."""
        assert not self.running(), "controller already running"
        self._lines += self._new_lines()  # the last run has exited: all its lines are there
        self._run_start = len(self._lines)
        with open(self.stderr_path, "ab") as stderr:
            # own session: a ^C of pytest must not reach it (the finalizer stops it)
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=stderr,
                                         start_new_session=True)
        wait_until(lambda: any(line.get("event") == "controller running"
                               for line in self.log_lines()),
                   "the controller to log `controller running`", timeout=timeout, interval=0.1,
                   explain=self.stderr_tail, abort=self._exited)

    def _exited(self) -> str:
        code = self.proc.poll() if self.proc is not None else None
        return "" if code is None else f"the controller exited with {code}"

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

    def log_lines(self) -> list[dict[str, Any]]:
        """The controller's stderr JSON lines of the current run."""
        self._lines += self._new_lines()
        return self._lines[self._run_start:]

    def _new_lines(self) -> list[dict[str, Any]]:
        """The complete lines written since the last read (parsed once: debug logs are long)."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self._read)
                data = f.read()
        except FileNotFoundError:
            return []
        data = data[:data.rfind(b"\n") + 1]
        self._read += len(data)
        lines = []
        for raw in data.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if isinstance(record, dict):
                    lines.append(record)
        return lines

    def logged(self, event: str, after: int = 0, **fields: Any) -> list[dict[str, Any]]:
        """This run's log lines `event` with `fields`, from line `after` on."""
        return [line for line in self.log_lines()[after:] if line.get("event") == event
                and all(line.get(key) == value for key, value in fields.items())]

    def last_acted(self, name: str) -> int:
        """The index just past this run's last `plan` line of `name` that acted (0: none)."""
        lines = self.log_lines()
        return next((i + 1 for i in range(len(lines) - 1, -1, -1)
                     if lines[i].get("event") == "plan" and lines[i].get("domain") == name
                     and lines[i].get("action") not in LEFT_ALONE), 0)

    def wait_left_alone(self, names: Collection[str], after: int, rescans: int = 2) -> None:
        """Wait for the proof that the controller considered each of `names` after log line
        `after` and left it alone: a pass of each that decided nothing (its `plan` line), then
        `rescans` rescans of the manifests directory. Fails at once if one of them acted."""
        def proven() -> bool:
            plans = [(i, line) for i, line in enumerate(self.log_lines()) if i >= after
                     and line.get("event") == "plan" and line.get("domain") in names]
            acted = [line for _, line in plans if line.get("action") not in LEFT_ALONE]
            assert not acted, f"the controller acted after line {after}: {acted}"
            first: dict[str, int] = {}
            for i, line in plans:
                first.setdefault(line["domain"], i)
            return (len(first) == len(names)
                    and len(self.logged("manifests scanned", max(first.values()))) >= rescans)
        self.wait_for(proven, f"a pass that leaves {sorted(names)} alone, then {rescans} "
                              "rescans", next(iter(names)))

    def stderr_tail(self, n: int = 40) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no controller stderr)"
        return "controller stderr (tail):\n" + "\n".join(lines[-n:])

    def status(self, name: str) -> dict[str, Any] | None:
        """`<state>/status/<name>.json`, or None when there is none."""
        return self._document(self.state / "status" / f"{name}.json")

    def network_status(self, name: str) -> dict[str, Any] | None:
        """The status document of network `name`, or None when there is none."""
        return self._document(self.state / "networks" / "status" / f"{name}.json")

    def network_events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.events() if record.get("network") == name]

    @staticmethod
    def _document(path: Path) -> dict[str, Any] | None:
        for _ in range(5):  # written by rename, so never torn; retry anyway on a bad read
            try:
                document: dict[str, Any] = json.loads(path.read_text())
                return document
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

    def wait_for(self, predicate: Callable[[], T | None], what: str, name: str | None = None,
                 timeout: float = 30.0, need_running: bool = True) -> T:
        """Poll `predicate` every 0.1 s until it returns something truthy, and return that.

        Fails with `what`, the last status of `name` and the controller's stderr tail when
        `timeout` passes, or at once when the controller exited (unless `need_running` is
        False).
        """
        return wait_until(predicate, what, timeout=timeout, interval=0.1,
                          explain=lambda: self._context(name),
                          abort=self._exited if need_running else lambda: "")

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

    def _context(self, name: str | None) -> str:
        """The last status and the events of `name`, and the controller's stderr tail."""
        parts = []
        if name is not None:
            parts.append(f"last status of {name}: "
                         f"{json.dumps(self.status(name), indent=1, sort_keys=True)}")
            parts.append("events: " + "\n  ".join(
                f"{e.get('event')}/{e.get('detail')} {e.get('state')}/{e.get('reason')} "
                f"cause={e.get('cause')} {e.get('message', '')}" for e in self.events(name)))
        parts.append(self.stderr_tail())
        return "\n".join(parts)

    # clean-up

    def cleanup(self) -> None:
        """Stop the controller and remove everything it started; never raises."""
        with contextlib.suppress(Exception):
            self.stop()
        names = self.names | set(qemu_pidfiles(self.runtime))
        sweep(runtime_dir=self.runtime, lxcpath=self.state / "lxc",
              cgroups=[f"{CGROUP_PARENT}/{name}" for name in sorted(names)],
              remove=[self.runtime],
              lxc_prefix=lxc_prefix(self.netns) if self.netns is not None else ())
        stop_dnsmasqs(self.state / "networks" / "dnsmasq")
        leaks.release(self.base, self.runtime, self.state)
        if (self.base / "state").is_symlink():
            sweep(remove=[self.state])


@contextlib.contextmanager
def controller_on(base: Path, extra_args: tuple[str, ...] = (),
                  netns: str | None = None) -> Iterator[Controller]:
    ctl = Controller(base, extra_args, netns)
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
