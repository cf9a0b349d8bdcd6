"""The two ways storage work fails, turned into the driver's errors by the caller.

`Refused`: the spec asks for something this host or the pool's contents do not allow (a base
image in use for writing, a volume that would have to shrink, an unreadable user-data file):
the qemu driver raises it as a HostValidationError naming `field`, re-checked every resync.
`StorageFailed`: a tool or the file system failed while doing what was allowed (qemu-img
exited non-zero, a disk full): a DriverError, retried under the crash-loop backoff.
"""

from __future__ import annotations


class Refused(Exception):
    """`field` (the manifest path, `spec.qemu.disks[0].size`) cannot be honoured: `message`."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class StorageFailed(Exception):
    """`message` says what failed (the tool's own words when it printed some)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)
