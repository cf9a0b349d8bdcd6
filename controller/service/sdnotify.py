"""systemd's notification protocol (sd_notify), in the standard library.

Under `Type=notify` (packaging/systemd/domctl.service) the daemon tells systemd when it is ready,
what it is doing, when it is stopping, and that its event loop is alive. The protocol is one
datagram of `KEY=VALUE` lines to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a leading `@` is
the abstract namespace); this is the usual hand-written dozen lines (systemd/systemd#32425), not
a dependency: `sdnotify` on PyPI is unmaintained and `systemd-python` needs libsystemd headers.

Not under systemd (`$NOTIFY_SOCKET` unset) every call returns False and does nothing, so the
daemon calls these unconditionally. A failed send is logged and returns False: a lost
notification must never stop the controller (systemd's own timeouts report the consequence).

The daemon sends `ready()` once the instance lock is held, the API sockets are bound and the
first full reconcile pass is done; `ping()` every half of `watchdog_interval()` from the event
loop; `stopping()` when it begins to exit.

Public surface (each takes `env`, default os.environ, and returns whether a datagram was sent):
    notify(message) -> bool
    ready(status=None), status(text), stopping(), ping(), extend_timeout(seconds) -> bool
    watchdog_interval(env=os.environ) -> float | None   # seconds; None when not watched
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def notify(message: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send `message` (newline-separated KEY=VALUE assignments) to systemd."""
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):  # e.g. "vsock:…", which only a VM guest would be given
        log.warning("NOTIFY_SOCKET is not a Unix socket path; not notifying systemd",
                    notify_socket=address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as err:
        log.warning("could not notify systemd; continuing", message=message, error=str(err))
        return False
    return True


def _one_line(text: str) -> str:
    # A newline would start a new assignment: an error message must not be able to send READY=1.
    return " ".join(text.splitlines())


def ready(status: str | None = None, env: Mapping[str, str] = os.environ) -> bool:
    message = "READY=1" if status is None else f"READY=1\nSTATUS={_one_line(status)}"
    return notify(message, env)


def status(text: str, env: Mapping[str, str] = os.environ) -> bool:
    """The one-line status `systemctl status domctl` shows."""
    return notify(f"STATUS={_one_line(text)}", env)


def stopping(env: Mapping[str, str] = os.environ) -> bool:
    return notify("STOPPING=1", env)


def ping(env: Mapping[str, str] = os.environ) -> bool:
    """The watchdog keep-alive; send it every half of `watchdog_interval()`."""
    return notify("WATCHDOG=1", env)


def extend_timeout(seconds: float, env: Mapping[str, str] = os.environ) -> bool:
    """Ask for `seconds` more before systemd gives up on the start (or stop) in progress."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}", env)


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float | None:
    """The watchdog timeout in seconds (`WatchdogSec=`), or None when this process is not
    watched: WATCHDOG_USEC unset, not a positive integer, or WATCHDOG_PID another process's."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None  # inherited from a parent that systemd watches, not meant for us
    try:
        value = int(usec)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("WATCHDOG_USEC is not a positive number of microseconds; no watchdog pings",
                    watchdog_usec=usec)
        return None
    return value / 1_000_000
