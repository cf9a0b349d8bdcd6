"""The error of the host side of networks: a command or a check failed on one interface/object.

Role: what bridge.py, nft.py, dnsmasq.py and command.py raise instead of OSError,
CalledProcessError or TimeoutError. Callers: the future network reconciler, which retries it
with backoff (a TransientError). Never: carries an unvalidated value into a message without
repr() (a hostile name cannot forge a log line).
"""

from __future__ import annotations

from reconcilers.errors import TransientError


class NetError(TransientError):
    """`operation` on `subject` (an interface, a table, a dnsmasq) failed: `message` says why."""

    def __init__(self, subject: str, operation: str, message: str) -> None:
        self.subject = subject
        self.operation = operation
        self.message = message
        super().__init__(f"{operation} {subject!r}: {message}")
