"""End to end: what domctl adds to raw qemu and LXC, measured interleaved in one run (issue 12).

    .venv/bin/python bench/bench_e2e.py [--quick] [--reps N] [--mass N] [--idle S]

The subject is a real `domctl run` (the installed console script) on private temp directories,
started with the fastest honest settings its CLI offers (`--removal-grace 0`, `--prune-window 0`,
`--restart-backoff 0`, everything else at its default, `--resync` included). Manifests are
written like a config tool writes them (temp file in the directory, then rename): diskless tcg
`pc` VMs of 64 MiB and busybox containers. The baseline is the same work without domctl, on the
same machine, with the same memory and accelerator:

- qemu: the argv domctl itself would build for the same manifest (`reconcilers.qemu.argv.
  build_argv`, with `-daemonize -S` and its QMP socket, paths in the baseline's own dirs),
  launched, then QMP `cont` over a fresh connection (the project's reconcilers/qemu/monitor.py);
  paused / running again are QMP `stop` / `cont` on that connection; destroy is SIGTERM (what
  domctl and libvirt send first) until the process is gone; kill -9 → running again is kill,
  gone, launch and `cont` again (the target compares with the raw start).
- LXC: `lxc-start -d` of a container whose config is a copy of the one domctl rendered (its
  paths moved to the baseline's own lxcpath), then `lxc-info` until RUNNING with a pid.
- 50 at once: the 50 raw launches run with the controller's parallelism (`--workers`, 4);
  one run of each (raw first, its VMs killed before the manifests are written), as is the
  re-attach: these are single samples, not medians.

"Running" is read from the controller's status file `<state>/status/<name>.json`, polled every
0.5 ms (20 ms for 50 domains; unchanged files are not re-read): that measures the controller,
not a client's wait. "Gone" is a pid that no longer exists (or is a zombie).
`domctl destroy` is the real CLI; its own start-up is part of the figure, and the CLI's return
is printed beside it. Re-attach is `domctl run` spawned again after SIGTERM, until it logs
"first full pass done; ready" (what sends READY=1); every pid must be unchanged, no `started`
event may follow. Idle is psutil's CPU time and RSS of the controller process with 50 domains
running, over `--idle` seconds after they settled.

The CLI's own start-up: `domctl get NAME` against the running controller, against `python3 -c
pass` of a bare venv of the same interpreter (created in the run's temp dir: nothing in its
site-packages), CLI_RUNS times each, interleaved with the venv's own `python -c pass` (its site
loads the editable install's path entry), the venv's python importing what any argparse CLI
talking to a socket imports (re, argparse, json, socket: the floor of such a command) and the
venv's python importing the console script's module (the CLI's own modules, no request), which
are printed beside it to show where the time goes. domctl is measured as installed: when
PYTHONDONTWRITEBYTECODE is set (this box sets it), nothing writes the .pyc files a pip install
compiles, so its packages are compiled first (compileall), or every `domctl get` would compile
its modules again.

Raw and domctl repetitions alternate (which goes first alternates too) after one untimed
warm-up of each; each figure is the median. Output: one row per figure with raw, domctl, the
ratio, the target of issue 12 and whether it is met, and by how much; then where domctl's time
goes, split at the controller's `acting` log line: before it is intake (inotify, debounce,
rescan, work queue; for kill -9 the exit being noticed), after it the pass itself (hooks,
launch, QMP, state writes) up to the status file. The idle window (10 s) is shorter than the
default resync (30 s), so a resync's cost may fall outside it. It never fails on a missed target.
Everything it started is killed by pid, its cgroups removed and its directories deleted at the
end, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from controller.manifests.loader import load_text
from reconcilers.identity import cmdline, is_alive
from reconcilers.lxc.host import remove_empty_cgroups
from reconcilers.model import Accel, Domain
from reconcilers.qemu.argv import build_argv
from reconcilers.qemu.layout import DomainFiles, domain_files
from reconcilers.qemu.monitor import Monitor

T = TypeVar("T")
DOMCTL = Path(sys.executable).parent / "domctl"  # [project.scripts] domctl
QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
RUN_OPTIONS = ("--removal-grace", "0", "--prune-window", "0", "--restart-backoff", "0")
WORKERS = 4  # `domctl run --workers` default: the raw mass start gets the same parallelism
READY = "first full pass done; ready"
# polling intervals: one domain (a stat per poll, the file read only when replaced; 0.5 ms
# keeps the quantisation below the figures' noise), many domains
FINE, COARSE = 0.0005, 0.02
TIMEOUT = 120.0
QEMU_CGROUP_PARENT = "domctl.qemu"
INIT = ("/bin/sh", "-c", "exec sleep infinity")
CLI_RUNS = 30  # interleaved runs of each command of the CLI start-up figure

VM = """apiVersion: domctl/v1
kind: Domain
metadata: {{name: {name}, uuid: {uuid}}}
spec:
  driver: qemu
  state: {state}
  memory: 64Mi
  shutdownTimeout: {rev}s
  qemu: {{machine: pc, accel: tcg}}
"""

CT = """apiVersion: domctl/v1
kind: Domain
metadata: {{name: {name}}}
spec:
  driver: lxc
  state: running
  memory: 64Mi
  shutdownTimeout: {rev}s
  lxc:
    rootfs: busybox
    privileged: true  # the baseline runs a copy of its config: no id map to reproduce
    init: {init}
"""


class BenchError(Exception):
    """A step did not happen within its timeout: the run cannot go on."""


def now() -> float:
    return time.perf_counter()


async def until(check: Callable[[], T | None], what: str, interval: float = FINE,
                timeout: float = TIMEOUT) -> tuple[float, T]:
    """Poll `check` until it returns something; (the time it did, what it returned)."""
    deadline = now() + timeout
    while True:
        got = check()
        seen = now()
        if got is not None:
            return seen, got
        if seen > deadline:
            raise BenchError(f"no {what} within {timeout} s")
        await asyncio.sleep(interval)


def gone(pid: int) -> bool | None:
    return True if not is_alive(pid) else None


# --- the directories and everything started in them ---------------------------------------------

@dataclass
class Dirs:
    """Every directory of the run, under one short temp dir (sockets have 108 bytes)."""

    base: Path

    def __post_init__(self) -> None:
        for path in (self.manifests, self.hooks, self.raw_lxc, self.raw_logs):
            path.mkdir(parents=True)

    @property
    def manifests(self) -> Path:
        return self.base / "manifests"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def runtime(self) -> Path:
        return self.base / "run"

    @property
    def logs(self) -> Path:
        return self.base / "log"

    @property
    def hooks(self) -> Path:
        return self.base / "hooks"

    @property
    def raw_runtime(self) -> Path:
        return self.base / "raw-run"

    @property
    def raw_logs(self) -> Path:
        return self.base / "raw-log"

    @property
    def raw_lxc(self) -> Path:
        return self.base / "raw-lxc"

@dataclass
class Reaper:
    """What the run started, for `reap()`: by pid, and proven by its command line."""

    dirs: Dirs
    controller: subprocess.Popen[bytes] | None = None
    qemu_pids: set[int] = field(default_factory=set)
    cgroup_names: set[str] = field(default_factory=set)
    containers: set[tuple[Path, str]] = field(default_factory=set)

    def pidfile_pids(self) -> set[int]:
        pids = set()
        for runtime in (self.dirs.runtime, self.dirs.raw_runtime):
            for pidfile in (runtime / "qemu").glob("*.pid"):
                with contextlib.suppress(OSError, ValueError):
                    pids.add(int(pidfile.read_text().strip()))
        return pids

    def reap(self) -> None:
        """Stop the controller, kill our qemus and containers, rmdir their cgroups, rm -r."""
        if self.controller is not None and self.controller.poll() is None:
            self.controller.kill()
            self.controller.wait(10)
        base = str(self.dirs.base)
        for pid in self.qemu_pids | self.pidfile_pids():
            if any(base in arg for arg in cmdline(pid) or ()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for lxcpath, name in self.containers:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", name, "-k"],
                               capture_output=True, timeout=30, check=False)
            remove_empty_cgroups(name)
        # the tests' cleanup (its directory is put on sys.path by main())
        from tests.support.cleanup import remove_cgroups
        remove_cgroups([f"{QEMU_CGROUP_PARENT}/{name}" for name in sorted(self.cgroup_names)])
        shutil.rmtree(self.dirs.base, ignore_errors=True)


# --- the controller ------------------------------------------------------------------------------

class Daemon:
    """One `domctl run` on the run's directories, its status files, events and log."""

    def __init__(self, dirs: Dirs, reaper: Reaper) -> None:
        self.dirs, self.reaper = dirs, reaper
        self.stderr = dirs.base / "controller.stderr"
        self._offset = 0
        self._stats: dict[str, tuple[tuple[int, int], dict[str, Any] | None]] = {}

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.reaper.controller is not None
        return self.reaper.controller

    def argv(self) -> list[str]:
        d = self.dirs
        return [str(DOMCTL), "run", "--manifests", str(d.manifests), "--state-dir", str(d.state),
                "--runtime-dir", str(d.runtime), "--log-dir", str(d.logs),
                "--hooks-dir", str(d.hooks), *RUN_OPTIONS]

    async def start(self) -> tuple[float, float]:
        """Spawn `domctl run`; seconds from the spawn to "controller running" and to READY."""
        with contextlib.suppress(FileNotFoundError):
            self._offset = self.stderr.stat().st_size
        with open(self.stderr, "ab") as err:
            t0 = now()
            self.reaper.controller = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        running, _ = await until(lambda: self.logged("controller running"), "controller running",
                                 interval=0.005)
        ready, _ = await until(lambda: self.logged(READY), "READY", interval=0.005)
        return running - t0, ready - t0

    def logged(self, event: str) -> bool | None:
        if self.proc.poll() is not None:
            raise BenchError(f"domctl run exited with {self.proc.returncode}: {self.tail()}")
        with open(self.stderr, "rb") as err:
            err.seek(self._offset)
            data = err.read()
        for raw in data.splitlines():
            with contextlib.suppress(ValueError):
                if json.loads(raw).get("event") == event:
                    return True
        return None

    def acting_after(self, name: str, wall: float) -> float | None:
        """The wall time of the first "acting" log line of `name` at or after `wall`: when a
        pass began to act (what came before it is intake: inotify, debounce, rescan, queue)."""
        for raw in self.stderr.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if line.get("event") == "acting" and line.get("domain") == name:
                    stamp = datetime.datetime.fromisoformat(line["timestamp"]).timestamp()
                    if stamp >= wall:
                        return stamp
        return None

    def tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        """SIGTERM: the controller goes, its domains keep running."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def write(self, filename: str, text: str) -> None:
        """Like an editor or a config tool: temp file in the directory, then rename."""
        tmp = self.dirs.manifests / f".{filename}.tmp"
        tmp.write_text(text)
        os.rename(tmp, self.dirs.manifests / filename)

    def status(self, name: str) -> dict[str, Any] | None:
        """`<state>/status/<name>.json`, re-read only when the file was replaced."""
        path = self.dirs.state / "status" / f"{name}.json"
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns)
        cached = self._stats.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            document: dict[str, Any] | None = json.loads(path.read_text())
        except (OSError, ValueError):
            document = None  # replaced meanwhile: read again next time
            key = (-1, -1)
        self._stats[name] = (key, document)
        return document

    def state_is(self, name: str, state: str, not_pid: int | None = None
                 ) -> dict[str, Any] | None:
        """The status of `name` once it is `state` with a pid other than `not_pid`."""
        got = self.status(name)
        if got and got["state"] == state and got.get("pid") not in (None, not_pid):
            return got
        return None

    def events(self) -> list[dict[str, Any]]:
        path = self.dirs.state / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    async def cli(self, *args: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            str(DOMCTL), "--socket", str(self.dirs.runtime / "domctl.sock"), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise BenchError(f"domctl {' '.join(args)}: {err.decode(errors='replace')}")
        return proc.returncode


def vm_manifest(name: str, uid: str, state: str = "running", rev: int = 1) -> str:
    """A diskless tcg VM; `rev` (the shutdownTimeout) makes each repetition a new generation,
    which ends the previous repetition's `destroy` override."""
    return VM.format(name=name, uuid=uid, state=state, rev=rev + 1)


# --- raw qemu and LXC ----------------------------------------------------------------------------

@dataclass
class RawVm:
    pid: int
    monitor: Monitor


class RawQemu:
    """qemu launched with the argv domctl would build for the same manifest, then QMP cont."""

    def __init__(self, dirs: Dirs, reaper: Reaper) -> None:
        self.dirs, self.reaper = dirs, reaper

    def domain(self, name: str) -> Domain:
        (loaded,) = load_text(vm_manifest(name, str(uuid.uuid4())), f"{name}.yaml")
        return loaded

    async def start(self, domain: Domain) -> RawVm:
        files = domain_files(self.dirs.raw_runtime, self.dirs.raw_logs, domain.name)
        pid = await self.launch(domain, files)
        monitor = Monitor(domain.name)
        await monitor.connect(files.qmp)
        await monitor.execute("cont")
        return RawVm(pid, monitor)

    async def launch(self, domain: Domain, files: DomainFiles) -> int:
        files.prepare()
        for path in files.stale:
            path.unlink(missing_ok=True)
        argv = build_argv(domain, QEMU, Accel.TCG, files)
        with files.log.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        if await proc.wait() != 0:
            raise BenchError(f"raw qemu exited {proc.returncode}: {files.log.read_text()[-500:]}")
        pid = int(files.pidfile.read_text().strip())
        self.reaper.qemu_pids.add(pid)
        return pid

    async def kill(self, vm: RawVm, sig: int = signal.SIGKILL) -> float:
        """Send `sig`; the time the process was gone."""
        os.kill(vm.pid, sig)
        at, _ = await until(lambda: gone(vm.pid), f"raw qemu {vm.pid} gone")
        await vm.monitor.close()
        return at


class RawLxc:
    """A copy of domctl's container config on the baseline's own lxcpath, run with lxc-start."""

    name = "raw-ct"

    def __init__(self, dirs: Dirs, reaper: Reaper) -> None:
        self.dirs, self.reaper = dirs, reaper

    def copy_config(self, theirs: str) -> None:
        d, mine = self.dirs, self.dirs.raw_lxc / self.name
        text = (d.state / "lxc" / theirs / "config").read_text()
        text = text.replace(str(d.state / "lxc" / theirs), str(mine))
        text = text.replace(str(d.logs / f"{theirs}.log"), str(d.raw_logs / f"{self.name}.log"))
        text = text.replace(f"lxc.uts.name = {theirs}", f"lxc.uts.name = {self.name}")
        (mine / "storage" / "delta").mkdir(parents=True, exist_ok=True)
        (mine / "config").write_text(text)
        self.reaper.containers.add((d.raw_lxc, self.name))

    async def tool(self, tool: str, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            tool, "-P", str(self.dirs.raw_lxc), "-n", self.name, *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise BenchError(f"{tool}: {err.decode(errors='replace')}")
        return out.decode()

    async def start(self) -> float:
        """lxc-start -d, then lxc-info until RUNNING with a pid; seconds taken."""
        t0 = now()
        await self.tool("lxc-start", "-d", "--", *INIT)
        while "RUNNING" not in (info := await self.tool("lxc-info", "-s", "-p", "-H")) \
                or "PID" not in info:
            await asyncio.sleep(FINE)
        return now() - t0

    async def stop(self) -> None:
        await self.tool("lxc-stop", "-k")


# --- the measurements ----------------------------------------------------------------------------

Samples = dict[str, list[float]]


@dataclass
class Bench:
    dirs: Dirs
    reaper: Reaper
    daemon: Daemon
    raw: RawQemu
    lxc: RawLxc
    raw_s: Samples = field(default_factory=dict)
    ours_s: Samples = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, samples: Samples | None, key: str, seconds: float) -> None:
        if samples is not None:
            samples.setdefault(key, []).append(seconds)

    def step(self, samples: Samples | None, key: str, name: str, t0: float, wall: float,
             at: float) -> None:
        """Record `key` (t0 → at) and its split at the controller's "acting" log line."""
        self.add(samples, key, at - t0)
        acting = self.daemon.acting_after(name, wall)
        if acting is not None:
            self.add(samples, f"{key}-intake", acting - wall)
            self.add(samples, f"{key}-act", (at - t0) - (acting - wall))

    async def raw_vm_cycle(self, record: bool) -> None:
        """start; stop; cont; kill -9 → started again; SIGTERM → gone."""
        samples = self.raw_s if record else None
        domain = self.raw.domain("raw-vm")
        t0 = now()
        vm = await self.raw.start(domain)
        self.add(samples, "start", now() - t0)
        for key, command in (("pause", "stop"), ("resume", "cont")):
            t0 = now()
            await vm.monitor.execute(command)
            self.add(samples, key, now() - t0)
        t0 = now()
        await self.raw.kill(vm)
        vm = await self.raw.start(domain)
        self.add(samples, "kill9", now() - t0)
        t0 = now()
        self.add(samples, "destroy", await self.raw.kill(vm, signal.SIGTERM) - t0)

    async def domctl_vm_cycle(self, rev: int, uid: str, record: bool) -> None:
        """manifest running → paused → running; kill -9 → running again; CLI destroy → gone."""
        samples, d, name = (self.ours_s if record else None), self.daemon, "vm"
        self.reaper.cgroup_names.add(name)
        before = d.status(name)
        t0, wall = now(), time.time()
        d.write(f"{name}.yaml", vm_manifest(name, uid, "running", rev))
        at, st = await until(lambda: d.state_is(name, "running", (before or {}).get("pid")),
                             "vm running")
        self.step(samples, "start", name, t0, wall, at)
        for key, state in (("pause", "paused"), ("resume", "running")):
            t0, wall = now(), time.time()
            d.write(f"{name}.yaml", vm_manifest(name, uid, state, rev))
            at, st = await until(functools.partial(d.state_is, name, state), f"vm {state}")
            self.step(samples, key, name, t0, wall, at)
        pid = st["pid"]
        t0, wall = now(), time.time()
        os.kill(pid, signal.SIGKILL)
        at, st = await until(lambda: d.state_is(name, "running", pid), "vm running again")
        self.step(samples, "kill9", name, t0, wall, at)
        await self.destroy(name, st["pid"], samples)

    async def destroy(self, name: str, pid: int, samples: Samples | None) -> None:
        t0 = now()
        cli = asyncio.ensure_future(self.daemon.cli("destroy", name))
        at, _ = await until(lambda: gone(pid), f"{name} pid {pid} gone")
        await cli
        self.add(samples, "destroy", at - t0)
        self.add(samples, "destroy-cli", now() - t0)

    async def domctl_ct_cycle(self, rev: int, record: bool) -> None:
        samples, d, name = (self.ours_s if record else None), self.daemon, "ct"
        self.reaper.containers.add((self.dirs.state / "lxc", name))
        before = d.status(name)
        t0, wall = now(), time.time()
        d.write(f"{name}.yaml", CT.format(name=name, rev=rev + 1, init=json.dumps(list(INIT))))
        at, _ = await until(lambda: d.state_is(name, "running", (before or {}).get("pid")),
                            "container running")
        self.step(samples, "lxc", name, t0, wall, at)
        await self.daemon.cli("destroy", name)

    async def raw_ct_cycle(self, record: bool) -> None:
        self.add(self.raw_s if record else None, "lxc", await self.lxc.start())
        await self.lxc.stop()

    async def singles(self, reps: int) -> None:
        """One untimed warm-up of each, then `reps` interleaved repetitions."""
        uid = str(uuid.uuid4())
        await self.domctl_ct_cycle(0, record=False)
        self.lxc.copy_config("ct")
        await self.raw_ct_cycle(record=False)
        await self.domctl_vm_cycle(0, uid, record=False)
        await self.raw_vm_cycle(record=False)
        for rep in range(1, reps + 1):
            pairs = [(self.raw_vm_cycle(True), self.raw_ct_cycle(True)),
                     (self.domctl_vm_cycle(rep, uid, True), self.domctl_ct_cycle(rep, True))]
            if rep % 2:
                pairs.reverse()
            for vm_cycle, ct_cycle in pairs:
                await vm_cycle
                await ct_cycle
            print(f"  repetition {rep}/{reps} done", file=sys.stderr)

    async def raw_mass(self, count: int) -> None:
        domains = [self.raw.domain(f"raw-m{i:02}") for i in range(count)]
        gate = asyncio.Semaphore(WORKERS)

        async def one(domain: Domain) -> RawVm:
            async with gate:
                return await self.raw.start(domain)

        t0 = now()
        vms = await asyncio.gather(*(one(domain) for domain in domains))
        self.add(self.raw_s, "mass", now() - t0)
        for vm in vms:
            await self.raw.kill(vm)

    async def domctl_mass(self, count: int) -> list[str]:
        names = [f"m{i:02}" for i in range(count)]
        self.reaper.cgroup_names.update(names)
        t0 = now()
        for name in names:
            self.daemon.write(f"{name}.yaml", vm_manifest(name, str(uuid.uuid4())))
        at, _ = await until(lambda: self.all_running(names), f"{count} domains running",
                            interval=COARSE, timeout=TIMEOUT * 3)
        self.add(self.ours_s, "mass", at - t0)
        return names

    def all_running(self, names: list[str]) -> dict[str, dict[str, Any]] | None:
        got = {n: self.daemon.status(n) for n in names}
        if all(s is not None and s["state"] == "running" and s.get("pid") for s in got.values()):
            return {n: s for n, s in got.items() if s is not None}
        return None

    async def idle(self, seconds: float) -> None:
        """CPU time and RSS of the controller process over `seconds`, its domains settled."""
        await asyncio.sleep(2.0)
        proc = psutil.Process(self.daemon.proc.pid)
        cpu0, t0 = proc.cpu_times(), now()
        await asyncio.sleep(seconds)
        cpu1, wall = proc.cpu_times(), now() - t0
        used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        self.add(self.ours_s, "idle-cpu", used / wall * 100)
        self.add(self.ours_s, "idle-rss", proc.memory_info().rss / 2**20)

    async def reattach(self, names: list[str]) -> None:
        """SIGTERM, spawn again, time to READY; count restarts (pids changed, started events)."""
        before = self.all_running(names)
        assert before is not None
        events = len(self.daemon.events())
        self.daemon.stop()
        running, ready = await self.daemon.start()
        self.add(self.ours_s, "reattach", ready)
        self.add(self.ours_s, "reattach-running", running)
        await asyncio.sleep(2.0)  # a failed adoption would show as a start by now
        after = {n: self.daemon.status(n) for n in names}
        changed = [n for n in names if (after[n] or {}).get("pid") != before[n]["pid"]
                   or not is_alive(before[n]["pid"])]
        started = [e for e in self.daemon.events()[events:] if e.get("event") == "started"]
        self.add(self.ours_s, "restarts", float(len(set(changed) | {
            str(e.get("domain")) for e in started})))

    async def cli_overhead(self, name: str) -> None:
        """`domctl get NAME` vs `python3 -c pass` (a bare venv) and, for the note, the venv's
        own `python -c pass`, its import of an argparse CLI's floor and of the CLI; one untimed
        round, then CLI_RUNS interleaved."""
        compiled = compile_installed()
        bare = self.dirs.base / "bare-venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True,
                       capture_output=True, timeout=TIMEOUT)
        commands = {
            "bare": [str(bare / "bin" / "python3"), "-c", "pass"],
            "venv": [sys.executable, "-c", "pass"],
            "floor": [sys.executable, "-c", "import re, argparse, json, socket"],
            "imports": [sys.executable, "-c", "import controller.service.entry"],
            "get": [str(DOMCTL), "--socket", str(self.dirs.runtime / "domctl.sock"), "get", name],
        }
        samples: Samples = {}
        for rep in range(CLI_RUNS + 1):
            for key, argv in commands.items():
                self.add(samples if rep else None, key, timed_run(argv))
        self.raw_s["cli"], self.ours_s["cli"] = samples["bare"], samples["get"]
        medians = {key: median(values) or 0.0 for key, values in samples.items()}
        labels = {"bare": "python3 -c pass", "venv": "the venv's python -c pass",
                  "floor": "its import of re, argparse, json and socket",
                  "imports": "its import of the CLI's modules", "get": f"`domctl get {name}`"}
        parts = [f"{label} {scaled(medians[key], 'ms')} ({medians[key] / medians['bare']:.1f}×)"
                 for key, label in labels.items()]
        if compiled:
            parts.append("PYTHONDONTWRITEBYTECODE is set: domctl's packages were compiled "
                         "first (compileall), as pip install compiles them")
        self.notes.append(f"  CLI start-up, medians of {CLI_RUNS}: " + "; ".join(parts))


def compile_installed() -> bool:
    """Compile domctl's packages to .pyc files (True) when PYTHONDONTWRITEBYTECODE keeps Python
    from writing them, as pip compiles an installed package's modules (the editable install's
    checkout gets none); False when the interpreter writes them itself."""
    if not (sys.flags.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE")):
        return False
    import compileall

    import controller
    import reconcilers

    for package in (controller, reconcilers):  # where the console script imports them from
        compileall.compile_dir(Path(str(package.__file__)).parent, quiet=1)
    return True


def timed_run(argv: list[str]) -> float:
    """Seconds from spawning `argv` to its exit; it must succeed."""
    t0 = now()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {done.stderr.decode(errors='replace')}")
    return now() - t0


# --- the report ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str  # "ms", "s", "%", "MB", "n"
    target: str
    limit: Callable[[float | None], float] | None  # from the raw median to the domctl limit


def plus_ms(ms: float) -> Callable[[float | None], float]:
    return lambda raw: (raw or 0.0) + ms / 1000


def times(factor: float) -> Callable[[float | None], float]:
    return lambda raw: (raw or 0.0) * factor


def fixed(value: float) -> Callable[[float | None], float]:
    return lambda _raw: value


FIGURES = (
    Figure("start", "manifest → running", "ms", "≤ 1.3× raw", times(1.3)),
    Figure("pause", "manifest → paused", "ms", "≤ raw + 20 ms", plus_ms(20)),
    Figure("resume", "manifest → running again", "ms", "≤ raw + 20 ms", plus_ms(20)),
    Figure("destroy", "`domctl destroy` → process gone", "ms", "≤ raw + 150 ms", plus_ms(150)),
    Figure("destroy-cli", "  (`domctl destroy` returned)", "ms", "", None),
    Figure("cli", "`domctl get NAME` vs `python3 -c pass`", "ms", "≤ 3× raw", times(3.0)),
    Figure("kill9", "kill -9 → running again", "ms", "≤ raw start + 100 ms", None),
    Figure("lxc", "LXC manifest → running", "ms", "(none)", None),
    Figure("mass", "manifests at once → all running", "s", "≤ 1.5× raw", times(1.5)),
    Figure("reattach", "controller restart → READY", "s", "≤ 2 s", fixed(2.0)),
    Figure("reattach-running", "  (→ `controller running`)", "s", "", None),
    Figure("restarts", "  domains restarted by re-attach", "n", "0", fixed(0.0)),
    Figure("idle-cpu", "idle controller CPU", "%", "≤ 1% of a core", fixed(1.0)),
    Figure("idle-rss", "idle controller RSS", "MB", "≤ 100 MB", fixed(100.0)),
)


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def scaled(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return {"ms": f"{value * 1000:.0f} ms", "s": f"{value:.2f} s", "%": f"{value:.2f}%",
            "MB": f"{value:.0f} MB", "n": f"{value:.0f}"}[unit]


def verdict(figure: Figure, ours: float | None, limit: float | None) -> str:
    if ours is None or limit is None:
        return ""
    if ours <= limit:
        return "met"
    over = ours - limit
    return f"MISSED by {scaled(over, figure.unit)}" + (
        f" ({ours / limit:.1f}× the limit)" if limit > 0 else "")


def report(bench: Bench, count: int) -> None:
    raw_start = median(bench.raw_s.get("start", []))
    print(f"\n{'figure':<38} {'raw':>9} {'domctl':>9} {'ratio':>7}  {'target':<22} verdict")
    for figure in FIGURES:
        raw, ours = median(bench.raw_s.get(figure.key, [])), median(bench.ours_s.get(figure.key,
                                                                                   []))
        limit = figure.limit(raw) if figure.limit is not None else None
        if figure.key == "kill9" and raw_start is not None:
            limit = raw_start + 0.1
        ratio = f"{ours / raw:.2f}×" if raw and ours is not None else ""
        label = figure.label.replace("manifests at once", f"{count} manifests at once")
        print(f"{label:<38} {scaled(raw, figure.unit):>9} {scaled(ours, figure.unit):>9} "
              f"{ratio:>7}  {figure.target:<22} {verdict(figure, ours, limit)}")
    print("\nwhere domctl's time goes (medians): trigger → a pass logs `acting` "
          "(inotify, debounce, rescan, queue; for kill -9 the exit seen), then `acting` → status")
    for key in ("start", "pause", "resume", "kill9", "lxc"):
        intake, act = (median(bench.ours_s.get(f"{key}-{part}", [])) for part in ("intake", "act"))
        samples = ", ".join(f"{v * 1000:.0f}" for v in bench.ours_s.get(key, []))
        print(f"  {key:<7} trigger → acting {scaled(intake, 'ms'):>7}, acting → status "
              f"{scaled(act, 'ms'):>7}   (samples, ms: {samples})")
    for note in bench.notes:
        print(note)


# --- the run -------------------------------------------------------------------------------------

async def run(bench: Bench, reps: int, count: int, idle: float) -> None:
    running, ready = await bench.daemon.start()
    bench.notes.append(f"  controller start with 0 domains: `controller running` after "
                       f"{running:.2f} s, READY after {ready:.2f} s")
    print(f"singles: {reps} repetitions (qemu and LXC, raw and domctl)", file=sys.stderr)
    await bench.singles(reps)
    print(f"CLI start-up: {CLI_RUNS} runs of `domctl get` and of python3", file=sys.stderr)
    await bench.cli_overhead("vm")
    print(f"mass: {count} raw qemu, then {count} manifests", file=sys.stderr)
    await bench.raw_mass(count)
    names = await bench.domctl_mass(count)
    print(f"idle: {idle:.0f} s of the controller with {count} domains", file=sys.stderr)
    await bench.idle(idle)
    print("re-attach: controller restart", file=sys.stderr)
    await bench.reattach(names)
    report(bench, count)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests.support
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions, 5 s idle")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of each (default 5)")
    parser.add_argument("--mass", type=int, default=None, help="domains at once (default 50)")
    parser.add_argument("--idle", type=float, default=None, help="idle seconds (default 10)")
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 5)
    count = args.mass or 50
    idle = args.idle or (5.0 if args.quick else 10.0)
    if not DOMCTL.exists():
        sys.exit(f"{DOMCTL} missing: pip install -e . into this interpreter's venv")
    if os.geteuid() != 0:
        sys.exit("run as root: the LXC baseline and domctl's containers need it")
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or kill: the clean-up below still runs
        signal.signal(sig, signal.default_int_handler)
    dirs = Dirs(Path(tempfile.mkdtemp(prefix="bench-e2e-")))
    # searchable by others: an unprivileged container's root must reach its LXC directory
    dirs.base.chmod(0o711)
    reaper = Reaper(dirs)
    bench = Bench(dirs, reaper, Daemon(dirs, reaper), RawQemu(dirs, reaper), RawLxc(dirs, reaper))
    try:
        asyncio.run(run(bench, reps, count, idle))
    except BenchError as exc:
        print(f"bench_e2e: {exc}\n{bench.daemon.tail() if reaper.controller else ''}",
              file=sys.stderr)
        report(bench, count)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench_e2e: interrupted; killing what it started", file=sys.stderr)
        sys.exit(130)
    finally:
        reaper.reap()


if __name__ == "__main__":
    main()
