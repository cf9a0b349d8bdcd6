"""The error tree shared by the reconciler, the drivers and the controller.

    DomctlError                      anything domctl reports; renders its own message
    ├── TransientError               worth retrying later (with backoff): a busy lock, a qemu
    │   ├── DriverError              that died while starting, a monitor that timed out
    │   └── BusyError                the domain's job lock is held too long
    └── TerminalError                retrying cannot help until something changes: the Stalled
        ├── NotSupportedError        condition, no retry until the manifest changes
        ├── HostValidationError      the host cannot run this spec (names the field)
        └── ManifestError            (controller/manifests/errors.py) a manifest is invalid

Errors carry their data (domain, operation, field) so logs and status can show it; lower
layers' exceptions (OSError, qemu.qmp errors, CalledProcessError) are translated into these at
the driver boundary, never passed up raw.
"""

from __future__ import annotations


class DomctlError(Exception):
    """Base of every error domctl reports to a user."""


class TransientError(DomctlError):
    """Retry after a backoff delay."""


class TerminalError(DomctlError):
    """Do not retry until the desired spec changes."""


class DriverError(TransientError):
    """A driver operation failed; `message` is the most useful text (qemu's own, lxc's own)."""

    def __init__(self, domain: str, operation: str, message: str) -> None:
        self.domain = domain
        self.operation = operation
        self.message = message
        super().__init__(f"{operation} {domain}: {message}")


class BusyError(TransientError):
    """Another job holds the domain's lock (libvirt: "cannot acquire state change lock")."""

    def __init__(self, domain: str, job: str, since: str) -> None:
        self.domain = domain
        self.job = job
        self.since = since
        super().__init__(f"{domain}: busy running {job} since {since}")


class NotSupportedError(TerminalError):
    def __init__(self, driver: str, operation: str) -> None:
        self.driver = driver
        self.operation = operation
        super().__init__(f"{operation} is not supported by the {driver} driver")


class HostValidationError(TerminalError):
    """The spec is valid but this host cannot run it; `field` is the manifest path (spec.vcpus)."""

    def __init__(self, domain: str, field: str, message: str) -> None:
        self.domain = domain
        self.field = field
        self.message = message
        super().__init__(f"{domain}: {field}: {message}")
