"""Hook scripts with libvirt's contract (DESIGN §7, docs/hooks.rst).

The reconciler calls `HookRunner.run(driver, name, op, spec)` around a domain's life:

    prepare begin -      before anything is set up for a start        failure aborts the start
    start begin -        just before the process is spawned             failure aborts the start
    started begin -      after the domain started
    stopped end -        after the domain stopped
    release end REASON   after everything is released; REASON is the shutoff reason
    reconnect begin -    after a controller restart re-attached a running domain

Scripts: `<hooks_dir>/<driver>` first, then the executable files of `<hooks_dir>/<driver>.d/`
in alphabetical order, each run as `<script> <name> <op> <subop> <extra>` with the live spec as
JSON on stdin, in its own session (so a timeout kills its whole process group). A missing hooks
dir means no hooks. Scripts are looked up on every call: unlike libvirt, adding a hook does not
need a controller restart.

Failure (non-zero exit or timeout): for `prepare`/`start` the first failing script stops the
rest and `run` raises HookError, whose message carries the tail of the script's stderr; the
reconciler records the start as failed (shutoff/failed) and puts that message in status. For
the other ops failures are logged and `run` returns the results. HookError is a
TransientError, not a TerminalError: what makes a hook fail (the script itself, a bridge or a
DRBD device it allocates) lives outside the manifest, so waiting for a manifest change would
be wrong; the start counts as a crash-loop failure and is retried with that backoff.

Public surface:
    HookOp, HookResult, HookError
    HookRunner(settings).run(driver, name, op, spec, extra="-") -> list[HookResult]

Never hold a domain's job or any other lock while a hook runs (a hook may call `domctl`, as
libvirt warns), and never let a hook's output reach a shell or a qemu/LXC option.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import structlog

from controller.settings import HookSettings
from reconcilers.errors import TransientError
from reconcilers.model import DriverName, to_plain
from reconcilers.ports import HookOp

log = structlog.get_logger(__name__)

_STDERR_TAIL = 2000  # characters of a failing hook's stderr kept in its error message


_ABORTING = frozenset({HookOp.PREPARE, HookOp.START})


@dataclass(frozen=True)
class HookResult:
    script: Path
    returncode: int | None  # None when it was killed on timeout
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        status = "timed out" if self.returncode is None else f"exit {self.returncode}"
        tail = self.stderr.strip()[-_STDERR_TAIL:]
        return f"hook {self.script} {status}" + (f": {tail}" if tail else "")


class HookError(TransientError):
    """A `prepare` or `start` hook failed, so the domain was not started."""

    def __init__(self, domain: str, op: HookOp, result: HookResult) -> None:
        self.domain = domain
        self.op = op
        self.result = result
        super().__init__(f"{domain}: {op.value} {result.describe()}")


class HookRunner:
    def __init__(self, hooks_dir: Path | None, settings: HookSettings) -> None:
        self._hooks_dir = hooks_dir  # None or missing: no hooks
        self._settings = settings

    def scripts(self, driver: DriverName) -> list[Path]:
        """The scripts a call for `driver` runs, in order."""
        if self._hooks_dir is None:
            return []
        main = self._hooks_dir / driver.value
        extra_dir = self._hooks_dir / f"{driver.value}.d"
        found = [main] if _is_executable_file(main) else []
        if extra_dir.is_dir():
            found += [p for p in sorted(extra_dir.iterdir()) if _is_executable_file(p)]
        return found

    async def run(self, driver: DriverName, name: str, op: HookOp, spec: object,
                  extra: str = "-") -> list[HookResult]:
        """Run every hook for `op`; `spec` is any model object (to_plain'd to JSON for stdin).

        `extra` is `$4` (the shutoff reason
        for `release`). Raises HookError when a `prepare` or `start` hook fails.
        """
        scripts = self.scripts(driver)
        if not scripts:
            return []
        stdin = json.dumps(to_plain(spec), sort_keys=True).encode()
        argv = [name, op.value, op.subop, extra or "-"]
        results = []
        for script in scripts:
            result = await self._run_one(script, argv, stdin)
            results.append(result)
            if result.ok:
                continue
            if op in _ABORTING:
                log.warning("hook failed; domain not started", domain=name, op=op.value,
                            error=result.describe())
                raise HookError(name, op, result)
            log.warning("hook failed; carrying on", domain=name, op=op.value,
                        error=result.describe())
        return results

    async def _run_one(self, script: Path, argv: list[str], stdin: bytes) -> HookResult:
        proc = await asyncio.create_subprocess_exec(
            script, *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            async with asyncio.timeout(self._settings.timeout):
                _, stderr = await proc.communicate(stdin)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            return HookResult(script, None, "")
        except BaseException:
            _kill_group(proc.pid)  # cancelled (controller stopping): leave no hook behind
            await asyncio.shield(proc.wait())
            raise
        return HookResult(script, proc.returncode, stderr.decode(errors="replace"))


def _is_executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone with all its children
        os.killpg(pgid, signal.SIGKILL)
