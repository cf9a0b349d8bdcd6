"""Async wrappers over LXC's own command-line tools, on the driver's private lxcpath.

Called by LxcDriver only. Every call passes `-P lxcpath` (so the host's default lxcpath and
`lxc-ls` stay untouched), runs with a timeout, and turns a failure into a DriverError carrying
LXC's own stderr. It never loads liblxc into this process: LXC forks the container monitor, and
a fork of the daemon would inherit its locks and sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconcilers.errors import DriverError
from reconcilers.identity import START_TOKEN_ENV, find

DEFAULT_TIMEOUT = 15.0


class LxcState(str, enum.Enum):
    """lxc-info's states (lxc_state_t)."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    ABORTING = "ABORTING"
    FREEZING = "FREEZING"
    FROZEN = "FROZEN"
    THAWED = "THAWED"


@dataclass(frozen=True)
class Info:
    state: LxcState
    pid: int | None  # the container's init pid, as LXC knows it; None when stopped


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class LxcTools:
    """The lxc-* commands for containers under one lxcpath."""

    def __init__(self, lxcpath: Path) -> None:
        self.lxcpath = lxcpath

    async def run(self, tool: str, name: str, args: Sequence[str] = (), *,
                  timeout: float = DEFAULT_TIMEOUT, check: bool = True,
                  env: Mapping[str, str] | None = None) -> Result:
        """Run `tool -P lxcpath -n name args...`; DriverError on failure or timeout."""
        return await execute([tool, "-P", str(self.lxcpath), "-n", name, *args], name,
                             timeout=timeout, check=check, env=env)

    async def info(self, name: str) -> Info:
        """State and init pid; STOPPED for a container that is not defined at all."""
        if not (self.lxcpath / name / "config").exists():
            return Info(LxcState.STOPPED, None)
        result = await self.run("lxc-info", name, ["-s", "-p", "-H"])
        state, pid = LxcState.STOPPED, None
        for line in result.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "State":
                try:
                    state = LxcState(value.strip())
                except ValueError:
                    raise DriverError(name, "lxc-info", f"unknown state {value.strip()!r}") \
                        from None
            elif key.strip() == "PID" and value.strip().isdigit():
                pid = int(value.strip())
        return Info(state, pid)

    async def start(self, name: str, argv: Sequence[str], token: str,
                    path_prefix: Path | None = None) -> None:
        """lxc-start -d with the exact init argv (no shell, no word splitting); the engine's
        start token goes into its environment, which the container's monitor keeps, and
        `path_prefix`, if any, before its PATH (idmap.py's stand-ins)."""
        env = {**os.environ, START_TOKEN_ENV: token}
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', os.defpath)}"
        await self.run("lxc-start", name, ["-d", "--", *argv], env=env)

    def monitor_pids(self, name: str) -> list[int]:
        """The LXC monitor processes of container `name` on this lxcpath."""
        title = f"[lxc monitor] {self.lxcpath} {name}"  # LXC rewrites its argv to this
        return find(lambda argv: " ".join(argv).strip() == title)

    async def freeze(self, name: str, timeout: float) -> None:
        await self.run("lxc-freeze", name, timeout=timeout)

    async def unfreeze(self, name: str) -> None:
        await self.run("lxc-unfreeze", name)

    async def request_halt(self, name: str, timeout: float) -> bool:
        """Send init its halt signal; True if it stopped within `timeout`. Never kills."""
        seconds = max(1, round(timeout))
        result = await self.run("lxc-stop", name, ["--nokill", "-t", str(seconds)],
                                timeout=seconds + DEFAULT_TIMEOUT, check=False)
        return result.returncode == 0

    async def kill(self, name: str) -> None:
        """lxc-stop -k: SIGKILL to init, the kernel takes the rest of the container down."""
        await self.run("lxc-stop", name, ["-k"])

    async def wait(self, name: str, states: str, timeout: float) -> bool:
        """lxc-wait for one of `states` ("STOPPED", "RUNNING|FROZEN"); True if reached."""
        seconds = max(1, round(timeout))
        result = await self.run("lxc-wait", name, ["-s", states, "-t", str(seconds)],
                                timeout=seconds + DEFAULT_TIMEOUT, check=False)
        return result.returncode == 0

    async def set_cgroup(self, name: str, key: str, value: str) -> None:
        await self.run("lxc-cgroup", name, [key, value])

    async def get_cgroup(self, name: str, key: str) -> str:
        return (await self.run("lxc-cgroup", name, [key])).stdout.strip()

    async def attach(self, name: str, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT
                     ) -> Result:
        """Run `argv` inside the container (clear environment); the result, checked."""
        return await self.run("lxc-attach", name, ["--clear-env", "--", *argv], timeout=timeout)


async def execute(argv: Sequence[str], name: str, *, timeout: float = DEFAULT_TIMEOUT,
                  check: bool = True, env: Mapping[str, str] | None = None) -> Result:
    """Run one LXC tool in its own session; DriverError (for domain `name`) on failure."""
    tool = argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, env=env)
    except OSError as exc:
        raise DriverError(name, tool, f"cannot run {tool}: {exc.strerror}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise DriverError(name, tool, f"{tool} did not finish within {timeout:g} s") from None
    result = Result(proc.returncode or 0, out.decode(errors="replace"),
                    err.decode(errors="replace").strip())
    if check and result.returncode != 0:
        raise DriverError(name, tool, result.stderr or f"{tool} exited {result.returncode}")
    return result
