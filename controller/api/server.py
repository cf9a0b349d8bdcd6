"""The controller's API: newline-delimited JSON over two Unix sockets, served to `domctl` commands.

The daemon builds one `ApiServer` over its `Backend` and starts it once the controller runs;
`close()` at shutdown ends every stream with `{"end": true}` and removes both socket files.

One request per connection: the client sends `{"op": "<op>", "args": {...}}` and a newline
(read and checked by parsing.py before anything reaches the backend).

    {"ok": true, "result": <json>}                          then close
    {"ok": false, "error": {"type": "<Type>", "message": "<text>"}}   then close
    {"ok": true, "stream": true}, {"item": <json>}..., {"end": true}  (streams: events, logs, watch)

A stream ends when the client disconnects (EOF on its side: a client must not shut down its
writing half while it reads a stream), when a finite stream is done, or at `close()`. A stream
whose source fails ends with `{"end": true, "error": {...}}`.

`<runtime>/domctl.sock` (0600) serves every op; `<runtime>/domctl-ro.sock` (0666) serves the
read ops and refuses the write ops with `PermissionDenied`. Each socket is bound under a
temporary name, given its mode, then renamed over the final path (replacing a stale file), so it
is never reachable with looser permissions. The peer's pid, uid and gid (SO_PEERCRED) reach the
backend as a `Caller`. Error types: BadRequest, PermissionDenied, NotFound, Busy, NotSupported,
Invalid (`wait` on an invalid manifest), Failed, Internal. A bad client or a failing backend
call never stops the server.

Public surface:
    ApiServer(backend, rw_path, ro_path, settings: ApiSettings): async start(), async close()
    Backend (protocol the daemon implements), EventSubscription (protocol), Caller
    (READ_OPS, WRITE_OPS, ACTIONS: controller/protocol.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from controller.api import logtail
from controller.api.parsing import Refused, parse, read_request
from controller.protocol import (
    HOST_SHUTDOWN_MODE,
    HOST_SHUTDOWN_PARALLEL,
    HOST_SHUTDOWN_TIMEOUT,
    STREAM_OPS,
    WRITE_OPS,
)
from controller.settings import ApiSettings
from controller.state.networks import NoSuchNetwork
from controller.state.status import NoSuchDomain
from reconcilers.errors import BusyError, DomctlError, NotSupportedError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the peer's credentials, and which socket it came through."""

    pid: int
    uid: int
    gid: int
    read_only: bool


class EventSubscription(Protocol):
    """Live event records (controller.events.Subscription is one): `async for`, then close()."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What the API serves, implemented by the daemon. Called on the server's event loop.

    Unknown names raise `controller.status.NoSuchDomain`; `DomctlError`s reach the client
    with their message (BusyError as Busy, NotSupportedError as NotSupported, others Failed).
    """

    async def get(self, name: str | None, disks: bool = False,
                  invalid: bool = False) -> list[dict[str, Any]]:
        """Status documents (DESIGN §6), all domains sorted by name, or only `name`; with
        `disks`, each with its storage read now (`disks`: Driver.disks). Then the invalid
        manifests that stand for no domain (`kind: InvalidManifest`); `invalid`: only those."""
        ...

    def networks(self, name: str | None) -> list[dict[str, Any]]:
        """Network status documents, all sorted by name, or only `name` (NoSuchNetwork)."""
        ...

    async def describe(self, name: str) -> dict[str, Any]:
        """{"status": {...}, "disks": [...], "events": [...], "job": {...} | None,
        "message": str}; for a name only invalid manifests go by, {"invalid": [...],
        "message": str}."""
        ...

    def diff(self, name: str | None) -> list[dict[str, Any]]:
        """[{"name": ..., "changes": [{"field", "old", "new", "apply": "live"|"restart"}]}]."""
        ...

    def export(self, name: str) -> dict[str, Any]:
        """{"name", "running": bool, "source": "FILE:LINE" | None, "manifest": {...} (the live
        spec's manifest document, else the manifest's), "differences": [{"field", "path",
        "manifest", "live"}] (the manifest on disk against the live spec, rendered values;
        None where a value is left out, at its default)}."""
        ...

    def recent_events(self, name: str | None, n: int) -> list[dict[str, Any]]:
        """The last `n` event records (of `name`, or of every domain), oldest first."""
        ...

    def subscribe(self, name: str | None) -> EventSubscription:
        """Event records emitted from now on; the server closes it when the stream ends."""
        ...

    def log_path(self, name: str) -> Path:
        """The domain's log file (it may not exist yet)."""
        ...

    def watch_status(self, name: str) -> AsyncIterator[dict[str, Any]]:
        """`name`'s status document now (if it has one), then at every change of it."""
        ...

    async def act(self, name: str, action: str, caller: Caller,
                  force_boot: bool = False) -> dict[str, Any]:
        """Run one of ACTIONS for `caller`; the result has at least {"message": str}.
        `force_boot` (start only): discard a managed-save image and boot afresh."""
        ...

    async def host_shutdown(self, mode: str, parallel: int, timeout: int,
                            caller: Caller) -> dict[str, Any]:
        """Save (mode "save") or shut down ("shutdown") every running domain, `parallel` at
        a time, graceful shutdowns bounded by `timeout` seconds; {"domains": [{"name",
        "mode", "result", "ok"}], "ok": bool, "message": str}. Refused("BadRequest") for a
        bad mode or a parallel below 1."""
        ...

    def console(self, name: str) -> dict[str, Any]:
        """{"socket": path, "argv": []} for a socket to relay, or {"argv": [...]} to run."""
        ...

    async def wait(self, name: str) -> dict[str, Any]:
        """Re-read the manifests directory now; {"name": name, "generation": G | None}: the
        generation a status must show as observedGeneration before `domctl wait` may look at
        its conditions (None: no manifest declares the name yet). An invalid manifest raises
        Refused("Invalid", its problems)."""
        ...

    def prune(self, caller: Caller) -> dict[str, Any]:
        """Confirm the held pruning of removed manifests; at least {"message": str}."""
        ...


@dataclass
class _Stream:
    items: AsyncIterator[Any]
    cleanup: Callable[[], None] = lambda: None


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def write(self, line: bytes) -> None:
        self.writer.write(line)
        await self.writer.drain()

    async def send(self, message: dict[str, Any]) -> None:
        await self.write(_encode(message))


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class ApiServer:
    def __init__(self, backend: Backend, rw_path: Path, ro_path: Path,
                 settings: ApiSettings = ApiSettings()) -> None:
        self._backend = backend
        self._paths = {False: rw_path, True: ro_path}
        self._settings = settings
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        try:
            for read_only, mode in ((False, 0o600), (True, 0o666)):
                sock = _bind(self._paths[read_only], mode)
                handler = functools.partial(self._handle, read_only=read_only)
                self._servers.append(await asyncio.start_unix_server(
                    handler, sock=sock, limit=self._settings.max_request))
        except BaseException:
            await self.close()  # no half-started server: both sockets or none
            raise
        log.info("api listening", rw=str(self._paths[False]), ro=str(self._paths[True]))

    async def close(self) -> None:
        """Stop accepting, end every stream with {"end": true}, remove both socket files."""
        self._stopping.set()
        for server in self._servers:
            server.close()
        for path in self._paths.values():
            path.unlink(missing_ok=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._settings.close_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      read_only: bool) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(_Conn(reader, writer), _peer(writer, read_only))
        except (ConnectionError, OSError) as err:
            log.debug("api client went away", error=str(err))
        except Exception:
            log.exception("api connection failed unexpectedly; serving the others")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, conn: _Conn, caller: Caller) -> None:
        stream: _Stream | None = None
        request_log = log.bind(uid=caller.uid, pid=caller.pid,
                               socket="ro" if caller.read_only else "rw")
        try:
            op, args = parse(await read_request(conn.reader, self._settings))
            request_log = request_log.bind(op=op, **({"domain": args["name"]}
                                                     if args.get("name") else {}))
            request_log.info("api request")
            self._check_allowed(op, caller)
            if op in STREAM_OPS:
                stream = self._open_stream(op, args)
            else:
                reply = _encode({"ok": True, "result": await self._call(op, args, caller)})
        except Exception as err:
            error = _error(err)
            request_log.info("api request refused", error=error["type"], message=error["message"])
            reply = _encode({"ok": False, "error": error})
        if stream is None:
            await conn.write(reply)
        else:
            await self._pump(conn, stream)

    def _check_allowed(self, op: str, caller: Caller) -> None:
        if caller.read_only and op in WRITE_OPS:
            who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
            raise Refused("PermissionDenied", f"the read-only socket cannot run '{op}'; use "
                          f"{self._paths[False]} (as {who})")

    async def _call(self, op: str, args: dict[str, Any], caller: Caller) -> Any:
        backend = self._backend
        if op == "ping":
            return {"version": _version(), "readOnly": caller.read_only}
        if op == "get":
            return await backend.get(args.get("name"), bool(args.get("disks", False)),
                                     bool(args.get("invalid", False)))
        if op == "networks":
            return backend.networks(args.get("name"))
        if op == "describe":
            return await backend.describe(args["name"])
        if op == "diff":
            return backend.diff(args.get("name"))
        if op == "export":
            return backend.export(args["name"])
        if op == "console":
            return backend.console(args["name"])
        if op == "wait":
            return await backend.wait(args["name"])
        if op == "prune":
            if args["confirm"] is not True:
                raise Refused("BadRequest", "prune needs \"confirm\": true")
            return backend.prune(caller)
        if op == "host-shutdown":
            return await backend.host_shutdown(
                args.get("mode", HOST_SHUTDOWN_MODE), args.get("parallel", HOST_SHUTDOWN_PARALLEL),
                args.get("timeout", HOST_SHUTDOWN_TIMEOUT), caller)
        if args.get("forceBoot"):
            return await backend.act(args["name"], op, caller, force_boot=True)
        return await backend.act(args["name"], op, caller)

    def _open_stream(self, op: str, args: dict[str, Any]) -> _Stream:
        """Set up a stream before its header is sent, so errors are plain error replies and a
        subscription exists by the time the client sees the header."""
        follow = bool(args.get("follow", False))
        if op == "watch":
            return _Stream(self._backend.watch_status(args["name"]))
        if op == "logs":
            path = self._backend.log_path(args["name"])
            lines = args.get("lines", 100)
            if follow:
                return _Stream(
                    _as_items(logtail.follow_lines(path, lines, self._settings.log_poll)))
            return _Stream(_as_items(_aiter(logtail.last_lines(path, lines))))
        name = args.get("name")
        subscription = self._backend.subscribe(name) if follow else None
        # No await between subscribe and recent_events: nothing is missed or sent twice.
        recent = self._backend.recent_events(name, args.get("n", 0 if follow else 20))
        if subscription is None:
            return _Stream(_aiter(recent))
        return _Stream(_chain(recent, subscription), subscription.close)

    async def _pump(self, conn: _Conn, stream: _Stream) -> None:
        await conn.send({"ok": True, "stream": True})
        forward = asyncio.ensure_future(_forward(conn, stream.items))
        gone = asyncio.ensure_future(_client_gone(conn.reader))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({forward, gone, stopping},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (forward, gone, stopping):
                task.cancel()
            await asyncio.gather(forward, gone, stopping, return_exceptions=True)
            stream.cleanup()
            aclose = getattr(stream.items, "aclose", None)
            if aclose is not None:
                await aclose()
        if forward in done and forward.exception() is not None:
            await conn.send({"end": True, "error": _error(forward.exception())})
        elif forward not in done and stopping in done:
            await conn.send({"end": True})


def _bind(path: Path, mode: int) -> socket.socket:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temporary))
        os.chmod(temporary, mode)
        os.replace(temporary, path)  # replaces a stale socket: the daemon's flock says it is ours
    except BaseException:
        sock.close()
        temporary.unlink(missing_ok=True)
        raise
    return sock


def _peer(writer: asyncio.StreamWriter, read_only: bool) -> Caller:
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Caller(pid=pid, uid=uid, gid=gid, read_only=read_only)


def _error(err: BaseException | None) -> dict[str, str]:
    if isinstance(err, Refused):
        return {"type": err.type, "message": err.message}
    for class_, type_ in ((NoSuchDomain, "NotFound"), (NoSuchNetwork, "NotFound"),
                          (BusyError, "Busy"), (NotSupportedError, "NotSupported"),
                          (DomctlError, "Failed")):
        if isinstance(err, class_):
            return {"type": type_, "message": str(err)}
    log.error("api request failed unexpectedly; the server keeps serving", exc_info=err)
    return {"type": "Internal", "message": f"internal error: {type(err).__name__}: {err}; "
            "see the controller's log"}


async def _forward(conn: _Conn, items: AsyncIterator[Any]) -> None:
    async for item in items:
        await conn.send({"item": item})
    await conn.send({"end": True})


async def _client_gone(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(4096):
            pass  # nothing more is expected after the request; EOF means the client left


async def _aiter(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def _chain(first: list[Any], then: EventSubscription) -> AsyncIterator[Any]:
    for item in first:
        yield item
    async for item in then:
        yield item


async def _as_items(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    async for line in lines:
        yield {"line": line}


@functools.cache
def _version() -> str:
    try:
        return importlib.metadata.version("domctl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
