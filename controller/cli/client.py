"""The synchronous client of the controller's API (controller/api/server.py), used by `domctl`
commands.

One connection per request, plain blocking sockets: a CLI command makes one call (or polls
a few), so there is nothing to gain from asyncio here. Error replies become `ApiError(type,
message)`; a socket that is missing, refuses or may not be opened becomes `DaemonNotRunning`,
whose message names the path and what to do.

Public surface:
    Client(path, timeout=60.0): call(op, **args) -> Any; stream(op, **args) -> Iterator[dict]
    ApiError(type, message), DaemonNotRunning(path, reason)
    socket_path(explicit, env, runtime_dir, fallback_dirs=()) -> Path
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from controller.protocol import RO_SOCKET, RW_SOCKET


class ApiError(Exception):
    """An error reply of the daemon (`type` is its error type: NotFound, Busy, ...), or a
    broken exchange (Disconnected, Timeout, Protocol)."""

    def __init__(self, type_: str, message: str) -> None:
        self.type = type_
        self.message = message
        super().__init__(message)


class DaemonNotRunning(ApiError):
    """No daemon answers on the socket: missing, refused, or not ours to open."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.path = path
        if isinstance(error, FileNotFoundError):
            message = (f"no controller socket at {path}: start the controller with `domctl run`, "
                       "or point --socket / DOMCTL_SOCKET at its socket")
        elif isinstance(error, ConnectionRefusedError):
            message = (f"nothing listens on {path} (a stale socket): start the controller "
                       "with `domctl run`")
        elif isinstance(error, PermissionError):
            message = (f"permission denied opening {path}: run as root, or use the read-only "
                       f"socket {path.with_name(RO_SOCKET)}; check --socket / DOMCTL_SOCKET")
        else:
            message = f"cannot connect to {path}: {error.strerror or error}"
        super().__init__("DaemonNotRunning", message)


class Client:
    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        """Run one request and return its result; raises ApiError for an error reply."""
        sock = self._request(op, args)
        with sock, sock.makefile("rb") as reader:
            reply = self._read(reader)
        if "result" not in reply:
            raise ApiError("Protocol", f"'{op}' is a stream: use stream()")
        return reply["result"]

    def stream(self, op: str, idle: float | None = None,
               **args: Any) -> Iterator[dict[str, Any]]:
        """The items of a streaming request, until the daemon ends the stream. Only the
        header is bound by the timeout: a followed stream may stay quiet for long, or for at
        most `idle` seconds between two items (then ApiError "Timeout", and the stream is gone)."""
        sock = self._request(op, args)
        with sock, sock.makefile("rb") as reader:
            header = self._read(reader)
            if not header.get("stream"):
                raise ApiError("Protocol", f"'{op}' is not a stream: use call()")
            sock.settimeout(idle)
            while True:
                message = self._read(reader)
                if "item" in message:
                    yield message["item"]
                elif message.get("end"):
                    _raise_error(message)
                    return
                else:
                    raise ApiError("Protocol", f"unexpected line in a stream: {message}")

    def _request(self, op: str, args: dict[str, Any]) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as err:
            sock.close()
            raise DaemonNotRunning(self.path, err) from None
        request = {"op": op, "args": {k: v for k, v in args.items() if v is not None}}
        # the daemon may refuse early ("request too large"); its reply is still readable
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps(request).encode() + b"\n")
        return sock

    def _read(self, reader: BinaryIO) -> dict[str, Any]:
        try:
            line = reader.readline()
        except TimeoutError:
            raise ApiError("Timeout", f"no reply from the controller at {self.path} within "
                           f"{self.timeout:g} s") from None
        except OSError as err:
            raise ApiError("Disconnected", f"lost the connection to {self.path}: {err}") from None
        if not line:
            raise ApiError("Disconnected", f"the controller at {self.path} closed the "
                           "connection without a complete reply")
        try:
            message = json.loads(line)
        except ValueError:
            raise ApiError("Protocol", f"not a JSON reply: {line[:200]!r}") from None
        if not isinstance(message, dict):
            raise ApiError("Protocol", f"not a JSON object: {line[:200]!r}")
        if message.get("ok") is False:
            _raise_error(message)
        return message


def _raise_error(message: dict[str, Any]) -> None:
    error = message.get("error")
    if isinstance(error, dict):
        raise ApiError(str(error.get("type", "Unknown")), str(error.get("message", error)))


def socket_path(explicit: str | None, env: Mapping[str, str], runtime_dir: Path,
                fallback_dirs: Sequence[Path] = ()) -> Path:
    """`--socket`, else DOMCTL_SOCKET, else the read-write socket of `runtime_dir` when the
    caller may open it, else its read-only one; `fallback_dirs` (a user's CLI looking for the
    root controller) are tried the same way when `runtime_dir` has no socket at all. With no
    socket anywhere: the read-write path, which DaemonNotRunning will name."""
    if explicit:
        return Path(explicit)
    if env.get("DOMCTL_SOCKET"):
        return Path(env["DOMCTL_SOCKET"])
    for directory in (runtime_dir, *fallback_dirs):
        rw, ro = directory / RW_SOCKET, directory / RO_SOCKET
        if rw.exists() and os.access(rw, os.R_OK | os.W_OK):
            return rw
        if ro.exists():
            return ro
        if rw.exists():
            return rw  # not ours to open: DaemonNotRunning says so
    return runtime_dir / RW_SOCKET
