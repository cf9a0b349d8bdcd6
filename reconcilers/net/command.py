"""Running ip, nft and dnsmasq: async, with a timeout, optionally inside a network namespace.

Role: the only place that spawns the host-side network tools. `Place` says where commands run:
the controller's own network namespace, or a named one (`ip -n NS` for ip, `ip netns exec NS`
for the others) — the tests run everything inside a namespace they create, and so can a
controller. Callers: bridge.py, nft.py, dnsmasq.py. Never: runs a shell (argv lists only, so no
value is ever re-parsed), leaves a timed-out process behind (it is killed and reaped), or
raises anything but NetError for a failed command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reconcilers.net.errors import NetError
from reconcilers.net.names import check_netns

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Place:
    """Where the commands run: `netns` None is the controller's own network namespace."""

    netns: str | None = None

    def __post_init__(self) -> None:
        if self.netns is not None:
            check_netns(self.netns)

    def ip(self, *args: str) -> list[str]:
        return ["ip", "-n", self.netns, *args] if self.netns else ["ip", *args]

    def inside(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def show_interface(place: Place, name: str, what: str,
                         operation: str) -> dict[str, Any] | None:
    """`ip -json -details WHAT show dev NAME` (WHAT: link or address): the one interface's
    entry, or None when there is no such interface; NetError for anything else."""
    done = await run(place.ip("-json", "-details", what, "show", "dev", name), subject=name,
                     operation=operation, check=False)
    if done.returncode != 0:
        if "does not exist" in done.stderr:
            return None
        raise NetError(name, operation, done.stderr.strip())
    entries = json.loads(done.stdout)
    if len(entries) != 1:
        raise NetError(name, operation, f"ip returned {len(entries)} interfaces")
    entry: dict[str, Any] = entries[0]
    return entry


async def run(argv: Sequence[str], *, subject: str, operation: str, stdin: str | None = None,
              timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> Completed:
    """Run `argv`; with `check`, a non-zero exit is a NetError carrying the tool's stderr."""
    try:
        feed = asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=feed,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as error:
        raise NetError(subject, operation, f"cannot run {argv[0]}: {error}") from None
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise NetError(subject, operation, f"{argv[0]} timed out after {timeout:g} s") from None
    done = Completed(process.returncode or 0, out.decode(errors="replace"),
                     err.decode(errors="replace"))
    if check and done.returncode != 0:
        message = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        raise NetError(subject, operation, message)
    return done
