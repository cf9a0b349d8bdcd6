"""A domain's state into a file and back over QMP: the qemu side of a managed save and restore.

Called by QemuDriver.save and .restore with a file the driver opened (savestate.py). qemu 7.2
has no `file:` migration URI, and `exec:` would run a shell; so the file's descriptor is passed
to qemu (QMP getfd over the monitor socket) and the migration URI names it (`fd:NAME`), in both
directions, as libvirt does.

- `save`: the guest is already stopped (the driver sent `stop`), so the stream is one pass over
  its RAM and devices, sent at full speed (qemu's default cap is 128 MiB/s; libvirt lifts it for
  a save too), and polled with query-migrate until `completed`. `failed` or `cancelled` is a
  MigrationError with qemu's reason; past `timeout` the migration is cancelled first.
- `load`: into a qemu launched with `-incoming defer` and the saved run's hardware (argv.py):
  migrate-incoming, then query-migrate until `completed`. qemu exits when the stream does not
  load, which shows as a lost monitor (MonitorError) to the caller.

`timeout_for(memory)` bounds either by the guest's size. It never starts or stops qemu.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from reconcilers.qemu.commands import QmpCommands
from reconcilers.qemu.monitor import MonitorError

POLL = 0.05  # seconds between query-migrate polls
BASE_TIMEOUT = 30.0  # seconds, plus the guest's memory at RATE
RATE = 32 * 1024 * 1024  # bytes/s a slow disk still writes
UNLIMITED = 1 << 62  # bytes/s: max-bandwidth without a cap (qemu takes up to SIZE_MAX)
FD_NAME = "domctl-state"
_RUNNING = frozenset({"none", "setup", "active", "device", "pre-switchover"})


class MigrationError(Exception):
    """The state did not go through; `message` says why (qemu's reason when it gave one)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def timeout_for(memory: int) -> float:
    """Seconds a save or a restore of a guest with `memory` bytes may take."""
    return BASE_TIMEOUT + memory / RATE


async def save(qmp: QmpCommands, fd: int, timeout: float) -> None:
    """Write the stopped guest's state to the open file `fd`."""
    await qmp.getfd(FD_NAME, fd)
    await qmp.migrate_set_parameters({"max-bandwidth": UNLIMITED})
    await qmp.migrate(f"fd:{FD_NAME}")
    await _wait(qmp, timeout, cancel=True)


async def load(qmp: QmpCommands, fd: int, timeout: float) -> None:
    """Read the guest's state from the open file `fd` into a qemu waiting for it."""
    await qmp.getfd(FD_NAME, fd)
    await qmp.migrate_incoming(f"fd:{FD_NAME}")
    await _wait(qmp, timeout, cancel=False)


async def _wait(qmp: QmpCommands, timeout: float, cancel: bool) -> None:
    deadline = time.monotonic() + timeout
    while True:
        migration = await qmp.query_migrate()
        if migration.status == "completed":
            return
        if migration.status not in _RUNNING:
            raise MigrationError(f"migration {migration.status}"
                                 + (f": {migration.error}" if migration.error else ""))
        if time.monotonic() > deadline:
            if cancel:
                with contextlib.suppress(MonitorError):
                    await qmp.migrate_cancel()
            raise MigrationError(f"not completed within {timeout:.0f} s")
        await asyncio.sleep(POLL)
