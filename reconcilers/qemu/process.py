"""Launching a qemu process: the fixed steps before QMP takes over.

Called by QemuDriver.start. The steps: remove what a previous run left (pidfile, sockets),
bind the QMP socket qemu is handed, build the argv (an auto VNC port picked here), append a
timestamp and the full argv to the domain log, run qemu in a session of its own with
stdout/stderr into that log, let it daemonize (the parent exits once qemu is initialised,
still stopped at `-S`), read the pidfile. Right after the spawn the caller's `spawned` hook
starts what may overlap qemu's own start-up (bringup.py). When qemu fails, the error carries
qemu's own message, not a generic "exited 1".

It never waits for the guest and never talks QMP. It kills only the pid it just launched.
"""

from __future__ import annotations

import datetime
import os
import shlex
import socket
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from reconcilers.identity import START_TOKEN_ENV, ExitWatch, find
from reconcilers.model import Accel, Domain, Vnc
from reconcilers.qemu.argv import build_argv
from reconcilers.qemu.devices import Layout
from reconcilers.qemu.layout import DomainFiles, QemuSettings


class LaunchError(Exception):
    """qemu did not come up; `message` is qemu's own error when it printed one."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


VNC_ATTEMPTS = 5  # launches tried when the auto VNC port is taken by a racing start
_PORT_TAKEN = "Failed to find an available port"


Spawned = Callable[[int], None]
"""Called on the event loop right after each spawn, with the launching process's pid (it lives
until qemu is initialised: the daemon it forks has another pid); must not block."""


async def launch_domain(domain: Domain, binary: str, accel: Accel, files: DomainFiles,
                        settings: QemuSettings, token: str, vhost: bool = False,
                        spawned: Spawned | None = None, restore: Layout | None = None) -> int:
    """Build the argv and launch; an auto VNC port taken between our check and qemu's bind
    (another start racing for it) is retried with the next free port. `vhost`, `restore`:
    see argv.py."""
    vnc = domain.spec.qemu.vnc if domain.spec.qemu else None
    secrets = {files.vnc_secret: vnc.password} if vnc and vnc.password is not None else {}
    port, attempt = vnc_port(vnc, settings), 1
    while True:
        listener = clean_slate(files, secrets)
        try:
            argv = build_argv(domain, binary, accel, files, port, vhost, listener.fileno(),
                              restore)
            return await launch(argv, files, settings.start_timeout, token, listener, spawned)
        except LaunchError as exc:
            if port is None or _PORT_TAKEN not in exc.message or attempt == VNC_ATTEMPTS:
                raise
        finally:
            listener.close()
        log_line(files, f"VNC port {port} was taken meanwhile; trying the next")
        port, attempt = vnc_port(vnc, settings, first=port + 1), attempt + 1


def clean_slate(files: DomainFiles, secrets: Mapping[Path, str]) -> socket.socket:
    """The runtime files of a launch: what a previous run left removed, `secrets` written
    (0600) for qemu to read, and the QMP socket bound and listening at `files.qmp`, for qemu
    to take as `fd=`: a client may connect at once and is greeted as soon as qemu serves it,
    instead of waiting for qemu to make the socket (libvirt passes its monitor socket too)."""
    files.prepare()
    remove_stale(files)
    for path, value in secrets.items():
        write_secret(path, value)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(files.qmp))
        listener.listen(8)
    except OSError as exc:
        listener.close()
        raise LaunchError(f"cannot bind the QMP socket {files.qmp}: {exc}") from exc
    return listener


def remove_stale(files: DomainFiles) -> None:
    for path in files.stale:
        path.unlink(missing_ok=True)


def write_secret(path: Path, value: str) -> None:
    """A 0600 file qemu reads a secret from, so it never shows in the argv."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value)


def log_line(files: DomainFiles, text: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    with files.log.open("a") as log:
        log.write(f"{stamp} domctl: {text}\n")


async def launch(argv: list[str], files: DomainFiles, timeout: float, token: str,
                 listener: socket.socket, spawned: Spawned | None = None) -> int:
    """Start qemu (daemonizing, stopped at -S) and return the daemon's pid.

    `token` (the engine's write-ahead start token) goes into qemu's environment, so a
    controller that dies before recording the pid can prove the process is this start's;
    `listener` (the QMP socket of `argv`'s `fd=`) is handed to qemu and closed here, so that
    a client waiting on it sees the end of a qemu that dies.
    """
    log_line(files, "starting: " + shlex.join(argv))
    offset = files.log.stat().st_size
    try:
        with files.log.open("ab") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(listener.fileno(),), start_new_session=True,
                env={**os.environ, START_TOKEN_ENV: token})
    finally:
        listener.close()
    if spawned is not None:
        spawned(process.pid)
    if not await exited(process, timeout):
        process.kill()
        await exited(process)
        raise LaunchError(f"qemu did not finish initialising within {timeout} s")
    code = process.returncode
    if code != 0:
        raise LaunchError(qemu_error(files.stderr) or qemu_error(files.log, offset)
                          or f"qemu exited with status {code}")
    try:
        return int(files.pidfile.read_text().strip())
    except (OSError, ValueError) as exc:
        raise LaunchError(f"qemu started but its pidfile is unusable: {exc}") from exc


async def exited(process: subprocess.Popen[bytes], timeout: float | None = None) -> bool:
    """Wait for our child `process` to exit, and reap it; False after `timeout` seconds. On its
    pidfd, not asyncio's child watcher, which starts a thread for every child."""
    watch = ExitWatch(process.pid, lambda: None)
    try:
        if not await watch.wait(timeout):
            return False
    finally:
        watch.cancel()
    process.wait()  # a zombie: reaped at once
    return True


def running_pids(files: DomainFiles) -> list[int]:
    """The live qemu processes of this domain: `-name guest=NAME` and this runtime dir's
    pidfile in their argv (its QMP socket is passed as an fd, its path not in the argv). A
    scan of /proc, not the pidfile: with the runtime dir removed (or the pidfile never
    written) a running qemu must still be found, never started twice."""
    def ours(argv: list[str]) -> bool:
        return (f"guest={files.name}," in " ".join(argv)
                and any(str(files.pidfile) == arg for arg in argv))
    return find(ours)


def qemu_error(path: Path, offset: int = 0) -> str:
    """qemu's last error line in `path` after `offset`, without its timestamp.

    qemu writes its errors to `DomainFiles.stderr` once `-D` has opened it, to the domain log
    (its stderr at launch) before that.
    """
    try:
        with path.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    # qemu's own lines name the binary; ours say "domctl:"; anything else is guest serial output
    own = [line for line in lines if ("qemu-system" in line or "qemu:" in line)
           and " domctl: " not in line]
    if not own:
        return ""
    # "-msg timestamp=on" prefixes "<iso time> "; drop it so the message reads cleanly
    head, _, rest = own[-1].partition(" ")
    return rest if head[:4].isdigit() and "T" in head else own[-1]


def vnc_port(vnc: Vnc | None, settings: QemuSettings, first: int | None = None) -> int | None:
    """The port for `vnc.port: auto` (None when there is no VNC or its port is fixed)."""
    if vnc is None or vnc.port is not None:
        return None
    return free_vnc_port(vnc.listen, first or settings.vnc_port_min, settings.vnc_port_max)


def free_vnc_port(listen: str, first: int, last: int) -> int:
    """The first port in [first, last] that binds on `listen` (checked, then released)."""
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    for port in range(first, last + 1):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((listen, port))
            except OSError:
                continue
            return port
    raise LaunchError(f"no free VNC port on {listen} in {first}-{last}")
