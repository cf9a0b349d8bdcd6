"""`domctl console NAME`: the terminal joined to a domain's console on this host.

The controller tells the CLI where the console is (controller/api/backend.py → the driver): a qemu
serial port on a Unix socket (`serial: socket`) is relayed here byte for byte, with the local
terminal in raw mode and Ctrl-] to leave, like `virsh console`; an LXC container's console is
`lxc-console`, which this process becomes (exec), keeping its own Ctrl-a q.

Never interprets what passes through, and always restores the terminal, also on errors.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import termios
import tty
from collections.abc import Iterator

ESCAPE = b"\x1d"  # Ctrl-]


def relay(path: str, stdin: int | None = None, stdout: int | None = None) -> None:
    """Join the terminal to the console socket at `path` until Ctrl-] or the far end closes."""
    stdin = sys.stdin.fileno() if stdin is None else stdin
    stdout = sys.stdout.fileno() if stdout is None else stdout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn, _raw(stdin):
        conn.connect(path)
        with selectors.DefaultSelector() as selector:
            selector.register(stdin, selectors.EVENT_READ)
            selector.register(conn, selectors.EVENT_READ)
            while _pump(selector, stdin, stdout, conn):
                pass


def _pump(selector: selectors.BaseSelector, stdin: int, stdout: int,
          conn: socket.socket) -> bool:
    """Move what is ready once; False when the session is over."""
    for key, _ in selector.select():
        if key.fileobj is conn:
            data = conn.recv(4096)
            if not data:
                return False
            os.write(stdout, data)
            continue
        data = os.read(stdin, 4096)
        if not data or ESCAPE in data:
            conn.sendall(data.split(ESCAPE)[0])
            return False
        conn.sendall(data)
    return True


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """Raw mode on a terminal (keys go to the guest as typed); nothing on a pipe."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(argv: list[str]) -> None:
    """Become the console program (lxc-console)."""
    os.execvp(argv[0], argv)
